"""The appliance on the host, as `make demo` runs it: real supervisord, Xvfb, the
simulator as the gateway, the agent and a real Chromium login."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ibeam_agents import certs
from tests.support.needs import require_binaries
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"

pytestmark = pytest.mark.e2e


@dataclass
class Appliance:
    """One appliance started on the host: its process, settings and log."""

    process: subprocess.Popen
    env: dict[str, str]
    log_path: Path
    marker: str

    @property
    def gateway_port(self) -> int:
        return int(self.env["IBEAM_GATEWAY_PORT"])

    @property
    def health_port(self) -> int:
        return int(self.env["IBEAM_HEALTH_SERVER_PORT"])

    @property
    def control_port(self) -> int:
        return int(self.env["GATEWAY_SIM_CONTROL_PORT"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sim_state(self) -> dict:
        return get_json(f"http://127.0.0.1:{self.control_port}/sim/state")

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(VENV_BIN / "supervisorctl"),
                "-c",
                str(REPO / "supervisord.conf"),
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


def free_display() -> str:
    """Pick an X display number that has neither a lock nor a socket."""
    for number in range(200, 400):
        if (
            not Path(f"/tmp/.X{number}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{number}").exists()
        ):
            return f":{number}"
    raise RuntimeError("no free X display between :200 and :399")


def base_env(run_dir: Path, marker: str) -> dict[str, str]:
    """Environment for an appliance on free ports, marked to find its processes."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IBEAM_", "GATEWAY_SIM_")) and key != "DISPLAY"
    }
    env.update(
        PATH=f"{VENV_BIN}:{env['PATH']}",
        IBEAM_RUN_DIR=str(run_dir),
        IBEAM_GATEWAY_PORT=str(free_port()),
        IBEAM_HEALTH_SERVER_PORT=str(free_port()),
        GATEWAY_SIM_CONTROL_PORT=str(free_port()),
        IBEAM_TEST_MARKER=marker,
    )
    return env


def marked_processes(marker: str) -> list[psutil.Process]:
    """Every live process whose environment carries the test's marker."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("IBEAM_TEST_MARKER") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_tree(process: subprocess.Popen, marker: str) -> None:
    """SIGTERM the appliance, then SIGKILL whatever of it is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for proc in marked_processes(marker):
        proc.kill()


def get_json(url: str, *, timeout: float = 5) -> dict:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return json.loads(response.read().decode())


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, appliance=None
) -> None:
    """Poll condition until true; fail naming what and showing the log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError):
            pass
        if appliance is not None and appliance.process.poll() is not None:
            break
        time.sleep(1)
    tail = appliance.log()[-6000:] if appliance else ""
    pytest.fail(f"timed out waiting for {what}; log tail:\n{tail}")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ibd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_demo(scratch) -> Iterator[Callable[..., Appliance]]:
    """Yield a function that starts scripts/demo.sh (what `make demo` runs) on free
    ports in scratch, with extra environment; everything is stopped afterwards."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    started: list[Appliance] = []

    def start(**extra: str) -> Appliance:
        marker = uuid.uuid4().hex
        env = base_env(scratch / "run", marker)
        env.update(IBEAM_DEMO_DIR=str(scratch), IBEAM_DEMO_DISPLAY=free_display())
        env.update(extra)
        log_path = scratch / "appliance.log"
        with log_path.open("ab") as log_file:  # O_APPEND: shared by /dev/std*
            process = subprocess.Popen(
                [str(REPO / "scripts" / "demo.sh")],
                cwd=REPO,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(Appliance(process, env, log_path, marker))
        return started[-1]

    try:
        yield start
    finally:
        for appliance in started:
            stop_tree(appliance.process, appliance.marker)


@pytest.fixture
def demo(start_demo) -> Appliance:
    """The demo as `make demo` starts it, on free ports."""
    return start_demo()


def wait_ready(appliance: Appliance) -> None:
    """Wait for the agent's /readyz (the simulator authenticated, agent agrees)."""
    wait_for(
        lambda: http_status(f"http://127.0.0.1:{appliance.health_port}/readyz") == 200,
        300,
        "the agent's /readyz",
        appliance,
    )


@pytest.mark.timeout(600)
def test_appliance_demo_logs_in_through_chromium(demo):
    wait_for(
        lambda: demo.sim_state()["authenticated"],
        300,
        "the simulator to report authenticated",
        demo,
    )
    state = demo.sim_state()
    assert state["login_successes"] >= 1
    assert state["user"] == "demo"

    user = get_json(f"https://localhost:{demo.gateway_port}/v1/api/one/user")
    assert user
    wait_for(
        lambda: http_status(f"http://127.0.0.1:{demo.health_port}/readyz") == 200,
        120,
        "the agent's /readyz",
        demo,
    )

    status = demo.supervisorctl("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for program in ("xvfb", "gateway", "agent"):
        assert any(
            line.split()[:2] == [program, "RUNNING"]
            for line in status.stdout.splitlines()
        ), status.stdout


@pytest.mark.timeout(300)
def test_appliance_demo_stops_everything(demo):
    wait_ready(demo)
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(timeout=60) == 0

    # The gateway's message log (logs/gw.message.*.log, as the real one writes).
    logs = Path(demo.env["IBEAM_DEMO_DIR"]) / "clientportal.gw" / "logs"
    messages = "".join(path.read_text() for path in logs.glob("gw.message.*.log"))
    assert "POST /v1/api/logout" in messages, "the gateway was not logged out"
    assert marked_processes(demo.marker) == []
    assert not (Path(demo.env["IBEAM_RUN_DIR"]) / "supervisor.sock").exists()
    assert not Path(f"/tmp/.X{demo.env['IBEAM_DEMO_DISPLAY'][1:]}-lock").exists()
    for port in (demo.gateway_port, demo.health_port, demo.control_port):
        assert not listening(port), f"port {port} still open"


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(300)
def test_appliance_fatal_program_ends_supervisord(scratch):
    require_binaries("Xvfb")
    gateway = scratch / "gw"
    (gateway / "bin").mkdir(parents=True)
    (gateway / "root").mkdir()
    (gateway / "bin" / "run.sh").write_text(
        "#!/bin/bash\necho 'no java here' >&2\nexit 1\n"
    )
    marker = uuid.uuid4().hex
    env = base_env(scratch / "run", marker)
    env.update(IBEAM_GATEWAY_DIR=str(gateway), DISPLAY=free_display())
    (scratch / "run").mkdir()
    log_path = scratch / "supervisord.log"
    with log_path.open("ab") as log_file:  # O_APPEND: shared by /dev/std*
        process = subprocess.Popen(
            ["supervisord", "-c", str(REPO / "supervisord.conf")],
            cwd=scratch,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        process.wait(timeout=180)
    finally:
        stop_tree(process, marker)
    log = log_path.read_text(errors="replace")
    assert "is FATAL: shutting supervisord down" in log, log[-4000:]
    assert "gave up: gateway entered FATAL state" in log or "agent entered FATAL" in log
    assert marked_processes(marker) == []


@pytest.mark.timeout(600)
def test_appliance_serves_and_verifies_own_certificate(start_demo, scratch):
    inputs = scratch / "inputs"
    inputs.mkdir()
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (inputs / "cert.pem").write_bytes(cert_pem)
    (inputs / "key.pem").write_bytes(key_pem)
    appliance = start_demo(IBEAM_INPUTS_DIR=str(inputs))
    wait_ready(appliance)

    context = ssl.create_default_context(cafile=str(inputs / "cert.pem"))
    url = f"https://localhost:{appliance.gateway_port}/v1/api/one/user"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        assert json.loads(response.read())["username"] == "demo"
    agent_env = [
        proc.environ()
        for proc in marked_processes(appliance.marker)
        if "ibeam_agents" in proc.cmdline()
        and "eventlistener" not in " ".join(proc.cmdline())
    ]
    assert agent_env, "no agent process found"
    ca_path = Path(agent_env[0]["IBEAM_GATEWAY_CA_CERT"])
    assert ca_path.read_bytes() == cert_pem
    assert "ibeam-keystore.p12" in appliance.log()


@pytest.mark.timeout(600)
def test_appliance_takes_conf_yaml_from_inputs(start_demo, scratch):
    inputs = scratch / "inputs"
    inputs.mkdir()
    port = free_port()
    (inputs / "conf.yaml").write_text(
        f"listenPort: {port}\n"
        "listenSsl: true\n"
        "ips:\n"
        "  allow: [127.0.0.1, 10.0.0.0/8]\n"
        "  deny: [0.0.0.0/0]\n"
    )
    appliance = start_demo(IBEAM_INPUTS_DIR=str(inputs))
    wait_ready(appliance)

    user = get_json(f"https://localhost:{port}/v1/api/one/user")
    assert user["username"] == "demo"
    log = appliance.log()
    assert f"conf.yaml from {inputs / 'conf.yaml'}" in log
    assert "IBEAM_GATEWAY_PORT is ignored" in log
    assert f"curl -k https://localhost:{port}/v1/api/one/user" in log
    assert "10.0.0.0/8 written as 10.*" in log
