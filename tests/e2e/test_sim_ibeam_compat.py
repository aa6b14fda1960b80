"""An independent client passes against the simulator: IBeam 0.5.12 from PyPI.

IBeam was written against IBKR's real gateway, not against ours. It runs with
its defaults except for what is needed to point it at this simulator and to
run on a machine shared with other test runs (each deviation is commented and
listed in docs/simulator.md, "IBeam against the simulator").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from gateway_sim.harness import SimGateway, free_port
from tests.support import procs
from tests.support.needs import require, require_binaries

pytestmark = pytest.mark.e2e

IBEAM_VERSION = "0.5.12"
REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".cache" / f"ibeam-{IBEAM_VERSION}"
# IBeam's Chromium always uses DevTools port 9222: two IBeam runs at once (the
# benchmarks run it too) would talk to each other's browser. Take turns.
RUN_LOCK = REPO / ".cache" / f"ibeam-{IBEAM_VERSION}.lock"
DEVTOOLS_PORT = 9222
SECRET = "JBSWY3DPEHPK3PXP"
READY_TIMEOUT = 150


@pytest.fixture(scope="module")
def ibeam_python() -> Path:
    """A virtual environment with ibeam==0.5.12, built once and cached in .cache/."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    python = VENV / "bin" / "python"
    done = VENV / ".installed"
    VENV.parent.mkdir(exist_ok=True)
    with open(VENV.parent / f"ibeam-{IBEAM_VERSION}.install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120
            )
            pip = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    f"ibeam=={IBEAM_VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            require(
                pip.returncode == 0, f"pip install ibeam failed: {pip.stderr[-500:]}"
            )
            done.write_text(IBEAM_VERSION)
    return python


def ibeam_env(
    gw: SimGateway, scratch: Path, health_port: int, **extra: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IBEAM_", "GATEWAY_SIM_"))
    }
    (scratch / "inputs").mkdir()
    (scratch / "outputs").mkdir()
    env.update(
        IBEAM_GATEWAY_DIR=str(gw.root),
        IBEAM_CHROME_DRIVER_PATH="/usr/bin/chromedriver",
        IBEAM_ACCOUNT="demo",
        IBEAM_PASSWORD="demo",
        # Our ports instead of 5000/5001, which other runs on this machine may hold.
        IBEAM_GATEWAY_BASE_URL=gw.base_url,
        IBEAM_HEALTH_SERVER_PORT=str(health_port),
        # IBeam's defaults (/srv/inputs, a directory inside its package) do not
        # suit a test: empty directories of our own.
        IBEAM_INPUTS_DIR=str(scratch / "inputs"),
        IBEAM_OUTPUTS_DIR=str(scratch / "outputs"),
        # Other simulators run on this machine: match ours only.
        IBEAM_GATEWAY_PROCESS_MATCH=gw.process_match,
        # IBeam keeps its Chromium profile in $TMPDIR/ibeam-chrome-default.
        TMPDIR=str(scratch),
        # Read by the simulator IBeam starts (bin/run.sh inherits IBeam's env).
        GATEWAY_SIM_CONTROL_PORT=str(gw.control_port),
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running_ibeam(
    python: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen]:
    """Run IBeam in a process group of its own; kill the group and its browser after."""
    with open(RUN_LOCK, "w") as lock, procs.tracking() as snap:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wait_devtools_port_free()
        env = {**env, procs.TOKEN_VAR: os.environ[procs.TOKEN_VAR]}
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [str(python), "-m", "ibeam.ibeam_starter"],
                cwd=log.parent,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield process
        finally:
            stop_group(process)
    procs.assert_none_left(snap, (*procs.BROWSER_NAMES, "python", "bash"))


def wait_devtools_port_free(timeout: float = 180) -> None:
    """Wait until no browser holds port 9222 (an IBeam run that skipped the lock)."""
    deadline = time.monotonic() + timeout
    while _listening_on(DEVTOOLS_PORT):
        if time.monotonic() > deadline:
            require(
                False,
                f"port {DEVTOOLS_PORT} stays taken: IBeam would drive that browser",
            )
        time.sleep(1)


def _listening_on(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            if probe.connect_ex((host, port)) == 0:
                return True
    return False


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM IBeam's group (IBeam, its gateway, its browser); SIGKILL what stays."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def wait_ready(process: subprocess.Popen, health_port: int, log: Path) -> None:
    """Poll IBeam's /readyz every 2 s (as a probe would) until it answers 200."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"IBeam exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        with contextlib.suppress(requests.RequestException):
            url = f"http://127.0.0.1:{health_port}/readyz"
            if requests.get(url, timeout=10).status_code == 200:
                return
        time.sleep(2)
    pytest.fail(f"IBeam not ready after {READY_TIMEOUT}s:\n{log.read_text()[-3000:]}")


def gateway_started_by_ibeam(gw: SimGateway) -> psutil.Process:
    found = procs.matching(gw.process_match)
    assert len(found) == 1, procs.describe(found)
    return found[0]


def test_ibeam_logs_in_and_turns_ready(ibeam_python, tmp_path):
    gw = SimGateway(tmp_path / "gw").install()
    health = free_port()
    log = tmp_path / "ibeam.log"
    env = ibeam_env(gw, tmp_path, health)
    with running_ibeam(ibeam_python, env, log) as process:
        wait_ready(process, health, log)
        assert "ibgroup.web.core.clientportal.gw.GatewayStart" in " ".join(
            gateway_started_by_ibeam(gw).cmdline()
        )
        state = gw.state()
        assert (state["authenticated"], state["competing"]) == (True, False)
        assert (state["login_successes"], state["login_failures"]) == (1, 0)
        # IBeam posts ssodh/init once it has seen the session authenticated.
        assert (
            gw.wait_for(lambda s: s["ssodh_inits"] >= 1, timeout=30)["ssodh_inits"] == 1
        )
    assert 'Webpage displayed "Client login succeeds"' in log.read_text()
    assert procs.matching(gw.process_match) == []


def test_ibeam_totp_handler_passes_second_factor(ibeam_python, tmp_path):
    totp_demo = {"user": "demo", "password": "demo", "second_factor": "totp"}
    gw = SimGateway(tmp_path / "gw", accounts=[{**totp_demo, "totp_secret": SECRET}])
    gw.install()
    health = free_port()
    log = tmp_path / "ibeam.log"
    env = ibeam_env(
        gw,
        tmp_path,
        health,
        IBEAM_TWO_FA_HANDLER="PYOTP",
        IBEAM_PYOTP_SECRET=SECRET,
        # IBeam detects the code page by #twofactbase, an id of the page IBKR
        # replaced in 2023; today's code input is #xyz-field-silver-response
        # (reference §4.2), where IBeam's default is the bronze one.
        IBEAM_TWO_FA_EL_ID="ID@@xyz-field-silver-response",
        IBEAM_TWO_FA_INPUT_EL_ID="ID@@xyz-field-silver-response",
    )
    with running_ibeam(ibeam_python, env, log) as process:
        wait_ready(process, health, log)
        state = gw.state()
        assert state["authenticated"] is True
        assert (state["codes_received"], state["second_factor_failures"]) == (1, 0)
    assert procs.matching(gw.process_match) == []
