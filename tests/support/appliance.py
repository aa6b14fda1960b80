"""The appliance on this machine, started exactly as the image starts it.

`image/entrypoint.sh supervisord -c supervisord.conf`: the entrypoint's checks
and the init step, then the repository's supervisord.conf with its programs
(Xvfb, the gateway, the agent, the FATAL listener).  The gateway is the
simulator installed in the work directory; ports, display and run directory are
free ones, and every process carries a marker so that cleanup finds exactly
this appliance's processes.

    with Appliance(tmp_path, password="demo") as box:
        box.wait_ready()
        code, took = box.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from gateway_sim.harness import SimGateway
from tests.support.agent import FAST_SETTINGS, REPO, http
from tests.support.needs import require_binaries
from tests.support.ports import free_port

VENV_BIN = REPO / ".venv" / "bin"
MARKER = "IBEAM_TEST_MARKER"


def free_display() -> str:
    """An X display number with neither a lock nor a socket."""
    for number in range(420, 700):
        if (
            not Path(f"/tmp/.X{number}-lock").exists()
            and not Path(f"/tmp/.X11-unix/X{number}").exists()
        ):
            return f":{number}"
    raise RuntimeError("no free X display between :420 and :699")


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries marker."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
    return found


class Appliance:
    """One appliance (entrypoint + supervisord) over a simulator in workdir.

    The work directory (inputs, outputs, gateway) survives `stop()`, so a second
    `start()` is a restart of the same container with its volumes.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        account: str = "demo",
        password: str = "demo",
        faults: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        require_binaries("chromium", "chromedriver", "Xvfb")
        self.workdir = Path(workdir)
        self.inputs = self.workdir / "inputs"
        self.outputs = self.workdir / "outputs"
        # unix socket paths are limited to 107 bytes: keep the run dir short
        self.run_dir = Path(tempfile.mkdtemp(prefix="ibs-"))
        self.gateway_port = free_port()
        self.health_port = free_port()
        self.sim = SimGateway(
            self.workdir / "gw", port=self.gateway_port, control_port=free_port()
        )
        self.sim.install()
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.marker = uuid.uuid4().hex
        self.env = self._environment(account, password, faults or {})
        self.env.update(env or {})
        self.log_path = self.workdir / "appliance.log"
        self.process: subprocess.Popen | None = None

    def _environment(self, account: str, password: str, faults: dict) -> dict:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("IBEAM_", "GATEWAY_SIM_")) and key != "DISPLAY"
        }
        env.update(FAST_SETTINGS)
        env.update(
            PATH=f"{VENV_BIN}:{env['PATH']}",
            PYTHONUNBUFFERED="1",
            IBEAM_RUN_DIR=str(self.run_dir),
            IBEAM_GATEWAY_DIR=str(self.sim.root),
            IBEAM_INPUTS_DIR=str(self.inputs),
            IBEAM_OUTPUTS_DIR=str(self.outputs),
            IBEAM_GATEWAY_PORT=str(self.gateway_port),
            IBEAM_HEALTH_SERVER_PORT=str(self.health_port),
            IBEAM_LOG_LEVEL="INFO",
            IBEAM_ACCOUNT=account,
            IBEAM_PASSWORD=password,
            GATEWAY_SIM_CONTROL_PORT=str(self.sim.control_port),
            GATEWAY_SIM_FAULTS=json.dumps({"auth_delay_ms": 300, **faults}),
            DISPLAY=free_display(),
        )
        env[MARKER] = self.marker
        return env

    # -- process ------------------------------------------------------------------

    def start(self, **changes: str) -> Appliance:
        """Start (or start again) with the environment changed by changes."""
        assert self.process is None or self.process.poll() is not None
        self.env.update(changes)
        with self.log_path.open("ab") as log:  # O_APPEND: shared by /dev/std*
            self.process = subprocess.Popen(
                [
                    str(REPO / "image" / "entrypoint.sh"),
                    "supervisord",
                    "-c",
                    str(REPO / "supervisord.conf"),
                ],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM supervisord (what `docker stop` does); (exit code, seconds)."""
        assert self.process is not None
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Stop everything of this appliance, whatever state it is in."""
        if self.process is not None and self.process.poll() is None:
            self.stop(20)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        for proc in marked(self.marker):
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def __enter__(self) -> Appliance:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def processes(self) -> list[psutil.Process]:
        return marked(self.marker)

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

    def agent_pid(self) -> int | None:
        done = self.supervisorctl("pid", "agent")
        text = done.stdout.strip()
        return int(text) if text.isdigit() and text != "0" else None

    # -- the agent's health server -----------------------------------------------

    def get(self, path: str) -> tuple[int, bytes]:
        return http("GET", f"http://127.0.0.1:{self.health_port}{path}")

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        return json.loads(body) if code == 200 else {}

    def wait_for(self, predicate, timeout: float = 90.0, what: str = "condition"):
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
            f"appliance never reached {what}; last status {self.status()}\n"
            f"--- log ---\n{self.log()[-6000:]}"
        )

    def wait_state(self, *states: str, timeout: float = 90.0) -> dict[str, Any]:
        return self.wait_for(lambda s: s["state"] in states, timeout, "/".join(states))

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_for(lambda s: s.get("ready"), timeout, "ready")
