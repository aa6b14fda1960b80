"""S14: fifty login cycles in a row with a 64 MB /dev/shm: the agent's login path
(`perform_login` with the options `Settings` gives it, the call the watcher
makes for each login) against a real simulator, with real Chromium under an
Xvfb started for each login.

The cycles run in a child process inside a private mount namespace whose
/dev/shm is a fresh 64 MB tmpfs (Docker's default size), so the machine's own
/dev/shm is untouched.  Each cycle: a full browser login, a wait until the
gateway says authenticated, then the simulator expires the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.scenarios.login_scenarios import scenario_sim
from tests.support import procs
from tests.support.agent import REPO, browser_guard
from tests.support.needs import require

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

CYCLES = 50
SHM_SIZE = "64m"

CYCLE_PROGRAM = textwrap.dedent(
    """\
    import json, logging, os, sys, threading, time, urllib.request
    from pathlib import Path
    from ibeam_agents.client import GatewayApi
    from ibeam_agents.credentials import Credentials
    from ibeam_agents.login import perform_login
    from ibeam_agents.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s"
    )
    args = json.loads(sys.argv[1])
    peak = [0]
    stop = threading.Event()

    def watch_shm():
        while not stop.is_set():
            shm = os.statvfs("/dev/shm")
            peak[0] = max(peak[0], (shm.f_blocks - shm.f_bfree) * shm.f_frsize)
            stop.wait(0.1)

    threading.Thread(target=watch_shm, daemon=True).start()
    shm = os.statvfs("/dev/shm")
    settings = Settings(
        gateway_dir=Path(args["gateway_dir"]),
        gateway_base_url=args["base_url"],
        outputs_dir=Path(args["outputs_dir"]),
    )
    credentials = Credentials("liveuser", args["password"])
    api = GatewayApi(settings.base_url, timeout=5, verify=False)
    times = []
    for cycle in range(args["cycles"]):
        started = time.monotonic()
        perform_login(
            settings.login_options(), credentials, settings.two_factor_config()
        )
        deadline = time.monotonic() + 15
        while api.auth_status().kind.name != "AUTHENTICATED":
            if time.monotonic() > deadline:
                sys.exit(f"cycle {cycle}: the session never authenticated")
            time.sleep(0.25)
        times.append(time.monotonic() - started)
        expire = urllib.request.Request(
            args["control_url"] + "/sim/session/expire", data=b"{}", method="POST"
        )
        urllib.request.urlopen(expire, timeout=10).read()
    stop.set()
    api.close()
    print(json.dumps({"times": times, "shm_size": shm.f_blocks * shm.f_frsize,
                      "shm_peak": peak[0]}), flush=True)
    """
)


class BrowserWatch:
    """Record the command lines of this test's Chromium processes while it runs."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.cmdlines: dict[int, list[str]] = {}
        self.xvfb: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrowserWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        var, _, value = self.token.partition("=")
        while not self._stop.wait(0.3):
            for proc in psutil.process_iter(["pid", "name", "cmdline"]):
                name = proc.info["name"] or ""
                if not name.startswith(("chromium", "Xvfb")):
                    continue
                try:
                    if proc.environ().get(var) != value:
                        continue
                except psutil.Error:
                    continue
                if name.startswith("Xvfb"):
                    self.xvfb.add(proc.info["pid"])
                elif proc.info["cmdline"]:  # empty while a process exits
                    self.cmdlines[proc.info["pid"]] = proc.info["cmdline"]


def _in_small_shm(command: list[str]) -> list[str]:
    """command, run in a private mount namespace with a 64 MB /dev/shm."""
    mount = f"mount -t tmpfs -o size={SHM_SIZE},mode=1777 tmpfs /dev/shm"
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{mount} && exec "$@"',
        "sh",
        *command,
    ]


def test_s14_fifty_logins_with_small_dev_shm_leave_nothing(tmp_path):
    """S14: with /dev/shm at 64 MB, fifty full logins in a row all succeed (no
    browser crash), Chromium keeps its shared memory out of /dev/shm
    (--disable-dev-shm-usage on every browser process), and afterwards no
    chromium, chromedriver or Xvfb process, X lock, temporary profile or
    temporary file is left.  TMPDIR is a long path on purpose: Chromium's socket
    under it would not fit a Unix socket path."""
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    locks_before = set(Path("/tmp").glob(".X*-lock"))
    with scenario_sim(tmp_path, auth_delay_ms=200) as sim:
        args = {
            "password": "liveuser-pw",
            "gateway_dir": str(sim.root),
            "outputs_dir": str(tmp_path / "outputs"),
            "base_url": sim.base_url,
            "process_match": f"gateway_sim.dir={sim.root}",
            "control_url": sim.control_url,
            "cycles": CYCLES,
        }
        program = tmp_path / "cycles.py"
        program.write_text(CYCLE_PROGRAM)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IBEAM_")}
        env.pop("DISPLAY", None)
        env.update(TMPDIR=str(scratch), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        command = [sys.executable, str(program), json.dumps(args)]
        started = time.monotonic()
        token = f"{procs.TOKEN_VAR}={os.environ[procs.TOKEN_VAR]}"
        with BrowserWatch(token) as watch:
            done = subprocess.run(
                _in_small_shm(command),
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        took = time.monotonic() - started
        state = sim.state()

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    times = report["times"]
    print(
        f"{CYCLES} login cycles in {took:.0f} s: mean {sum(times) / len(times):.1f} s,"
        f" max {max(times):.1f} s; /dev/shm {report['shm_size'] >> 20} MiB, peak "
        f"use {report['shm_peak'] >> 10} KiB; {len(watch.cmdlines)} chromium processes"
    )
    assert len(times) == CYCLES
    assert state["login_successes"] == state["login_attempts"] == CYCLES
    assert report["shm_size"] == 64 << 20
    assert report["shm_peak"] < 8 << 20

    browsers = [
        cmdline
        for cmdline in watch.cmdlines.values()
        if any(arg.startswith("--user-data-dir=") for arg in cmdline)
        and not any(arg.startswith("--type=") for arg in cmdline)
    ]
    assert len(browsers) >= CYCLES // 2, "too few browser processes were seen"
    assert all("--disable-dev-shm-usage" in cmdline for cmdline in browsers)
    assert len(watch.xvfb) >= CYCLES // 2

    assert list(scratch.iterdir()) == [], "temporary files left behind"
    profiles = {
        arg.split("=", 1)[1]
        for cmdline in browsers
        for arg in cmdline
        if arg.startswith("--user-data-dir=")
    }
    assert len(profiles) >= CYCLES // 2
    assert [p for p in profiles if os.path.exists(p)] == [], "profiles left behind"
    new_locks = set(Path("/tmp").glob(".X*-lock")) - locks_before
    ours = [
        lock for lock in new_locks if lock.read_text().strip() in map(str, watch.xvfb)
    ]
    assert ours == [], f"X locks left behind: {ours}"
