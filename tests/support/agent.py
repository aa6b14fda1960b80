"""Run the agent as a real process (`python -m ibeam_agents`) against a simulator.

    sim = SimGateway(tmp_path / "gw").install()
    with AgentProcess(sim, tmp_path) as agent:
        agent.wait_ready()
        assert agent.status()["state"] == "READY"

Settings default to small intervals so recoveries happen in seconds.  On exit
the agent is stopped (SIGTERM, then SIGKILL) together with any gateway it
started, found by the simulator directory in its command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from gateway_sim.harness import SimGateway
from tests.support import procs
from tests.support.needs import require_binaries
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")

FAST_SETTINGS = {
    "IBEAM_MAINTENANCE_INTERVAL": "1",
    "IBEAM_BACKOFF_MIN": "1",
    "IBEAM_BACKOFF_MAX": "4",
    "IBEAM_AUTH_SETTLE_TIMEOUT": "15",
    "IBEAM_REQUEST_TIMEOUT": "3",
    "IBEAM_GATEWAY_STARTUP": "20",
    "IBEAM_LOG_LEVEL": "DEBUG",
}


def http(method: str, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one plain HTTP request; status 0 when nothing answers."""
    request = urllib.request.Request(
        url, method=method, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class AgentProcess:
    """One agent process pointed at one simulator directory."""

    def __init__(
        self,
        sim,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        account: str = "demo",
        password: str = "demo",
    ) -> None:
        self.sim = sim
        self.workdir = Path(workdir)
        self.outputs = self.workdir / "outputs"
        self.health_port = free_port()
        self.args = args
        self.log_path = self.workdir / f"agent-{self.health_port}.log"
        self.process: subprocess.Popen | None = None
        self.env = self._environment(account, password)
        self.env.update(env or {})

    def _environment(self, account: str, password: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IBEAM_")}
        env.pop("DISPLAY", None)  # the agent starts its own Xvfb, as standalone does
        env.update(FAST_SETTINGS)
        env.update(
            IBEAM_GATEWAY_DIR=str(self.sim.root),
            IBEAM_OUTPUTS_DIR=str(self.outputs),
            IBEAM_INPUTS_DIR=str(self.workdir / "inputs"),
            IBEAM_GATEWAY_PROCESS_MATCH=f"gateway_sim.dir={self.sim.root}",
            IBEAM_HEALTH_SERVER_PORT=str(self.health_port),
            IBEAM_ACCOUNT=account,
            IBEAM_PASSWORD=password,
            GATEWAY_SIM_CONTROL_PORT=str(self.sim.control_port),
            PYTHONUNBUFFERED="1",
        )
        if self.sim.initial_faults:
            env["GATEWAY_SIM_FAULTS"] = json.dumps(self.sim.initial_faults)
        return env

    # -- process ------------------------------------------------------------------

    def start(self) -> AgentProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ibeam_agents", *self.args],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()

    def terminate(self, timeout: float = 15.0) -> tuple[int | None, float]:
        """SIGTERM; return (exit code, seconds it took)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Stop the agent and anything it left behind, whatever state it is in."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(12)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # A gateway the test itself started (the harness's) is the test's to stop.
        kill_gateways(self.sim.root, keep=self.sim.pid if self.sim.running() else None)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- health server ----------------------------------------------------------

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http("GET", self.health_url + path)

    def post(self, path: str) -> tuple[int, bytes]:
        return http("POST", self.health_url + path)

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        return json.loads(body) if code == 200 else {}

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        """Poll /status until predicate(status) holds; fail with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and predicate(status):
                return status
            if not self.alive():
                break
            time.sleep(0.2)
        raise AssertionError(
            f"agent never reached {what}; last status {self.status()}\n"
            f"--- agent log ---\n{self.log()[-6000:]}"
        )

    def wait_state(self, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_for(lambda s: s["state"] in states, timeout, "/".join(states))

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_for(lambda s: s.get("ready"), timeout, "ready")


@contextlib.contextmanager
def running_sim(
    tmp_path: Path,
    *,
    accounts: list[dict] | None = None,
    conf_overrides: dict[str, Any] | None = None,
    **faults: Any,
) -> Iterator[SimGateway]:
    """A simulator started by the test (fast auth unless faults say otherwise).

    Stopped afterwards together with any gateway an agent started from the same
    directory (an agent that restarts the gateway replaces the test's process).
    """
    require_binaries("chromium", "chromedriver", "Xvfb")
    knobs = {"auth_delay_ms": 300, **faults}
    sim = SimGateway(
        tmp_path / "gw", accounts=accounts, faults=knobs, conf_overrides=conf_overrides
    )
    sim.install().start()
    try:
        yield sim
    finally:
        sim.stop()
        kill_gateways(sim.root)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll predicate until it returns something true; fail naming what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def log_times(text: str, needle: str) -> list[float]:
    """Epoch seconds of each agent log line containing needle."""
    found = []
    for line in text.splitlines():
        match = LOG_TIME.match(line)
        if match and needle in line:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            found.append(stamp.timestamp())
    return found


def metric(agent: AgentProcess, name: str) -> float:
    """One sample of the agent's /metrics (name with labels as printed); 0 if absent."""
    text = agent.get("/metrics")[1].decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_cli(env: dict[str, str], *args: str, timeout: float = 60):
    """Run `python -m ibeam_agents ARGS` with env; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "ibeam_agents", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def gateway_processes(root: Path) -> list[psutil.Process]:
    """Simulator processes started from directory root."""
    marker = f"gateway_sim.dir={root}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def kill_gateways(root: Path, keep: int | None = None) -> None:
    """Kill every simulator process of root but keep (a pid)."""
    for proc in gateway_processes(root):
        if proc.pid == keep:
            continue
        with contextlib.suppress(psutil.Error):
            proc.kill()
            proc.wait(5)


def session_leftovers(session_id: int) -> list[str]:
    """Processes still alive in the session the agent led (browser, driver, Xvfb).

    The agent runs in a session of its own, and Chromium, chromedriver and Xvfb
    inherit it, so after the agent exits nothing should be left in it.  The
    gateway it starts has a session of its own and is not counted.
    """
    left = []
    for proc in psutil.process_iter(["pid", "name", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getsid(proc.info["pid"]) == session_id:
                left.append(f"{proc.info['pid']} {proc.info['name']}")
        except OSError:
            continue
    return left


def browser_guard():
    """Fixture body: fail a test that leaves a browser, driver or Xvfb behind.

    Use as ``no_browser_left = pytest.fixture(autouse=True)(browser_guard)``;
    the agent inherits the tracking token from the environment it is given.
    """
    with procs.tracking() as snap:
        yield
    procs.assert_none_left(snap)
