"""The two keepers as processes: how each is started, watched and stopped.

Both run standalone and start the gateway themselves (`bin/run.sh` of an
installed simulator directory that is not running at t0).  Each gets default
settings except what is needed to run here at all and the shared maintenance
interval; `settings_notes()` lists those deviations for the report.

Every process a keeper starts inherits a unique environment token, so the
clean-up finds browsers, drivers and displays even when they left the
keeper's process tree or session.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import REPO
from gateway_sim.harness import SimGateway, free_port

log = logging.getLogger(__name__)

TOKEN_VAR = "IBEAM_BENCH_TOKEN"
DEMO_ACCOUNT = ("demo", "demo")  # the simulator's default accounts file
BROWSER_PREFIXES = ("chrom",)  # chromium, chromedriver, chrome_crashpad...
DISPLAY_NAMES = ("Xvfb",)
STOP_GRACE = 10.0
CHROMEDRIVER = "/usr/bin/chromedriver"


@dataclass(frozen=True)
class Keeper:
    """One keeper: its name, its command and the settings it needs here."""

    name: str
    python: Path
    module: str
    cwd: Path

    @property
    def is_ours(self) -> bool:
        return self.module == "ibeam_agents"

    def command(self) -> list[str]:
        return [str(self.python), "-m", self.module]

    def settings(self, sim: SimGateway, workdir: Path, interval: float) -> dict:
        """The IBEAM_* variables this keeper gets (everything else default)."""
        account, password = DEMO_ACCOUNT
        common = {
            "IBEAM_GATEWAY_DIR": str(sim.root),
            "IBEAM_ACCOUNT": account,
            "IBEAM_PASSWORD": password,
            "IBEAM_MAINTENANCE_INTERVAL": f"{interval:g}",
            "IBEAM_GATEWAY_PROCESS_MATCH": process_match(sim),
            "IBEAM_HEALTH_SERVER_PORT": str(free_port()),
            "IBEAM_OUTPUTS_DIR": str(workdir / "outputs"),
            "IBEAM_INPUTS_DIR": str(workdir / "inputs"),
        }
        if self.is_ours:
            return common
        # IBeam has no default for the driver and assumes port 5000.
        common["IBEAM_CHROME_DRIVER_PATH"] = CHROMEDRIVER
        common["IBEAM_GATEWAY_BASE_URL"] = sim.base_url
        return common


def ours() -> Keeper:
    return Keeper("ours", Path(sys.executable), "ibeam_agents", REPO)


def ibeam(python: Path) -> Keeper:
    return Keeper("IBeam", python, "ibeam.ibeam_starter", REPO)


def settings_notes(interval: float) -> list[str]:
    """Why each keeper gets the settings it gets, for the report."""
    return [
        f"IBEAM_MAINTENANCE_INTERVAL={interval:g} for both (the shared interval).",
        "IBEAM_GATEWAY_DIR: the round's simulator directory; IBEAM_ACCOUNT / "
        "IBEAM_PASSWORD: the simulator's demo account (environment, never argv).",
        "IBEAM_GATEWAY_PROCESS_MATCH=-Dgateway_sim.dir=<dir>: the default "
        "(GatewayStart) would also match other simulators on this shared machine, "
        "and a keeper that sees one would not start its own gateway.",
        "IBEAM_HEALTH_SERVER_PORT: a free port (5001 may be taken); "
        "IBEAM_OUTPUTS_DIR / IBEAM_INPUTS_DIR: an empty directory of the round.",
        "IBeam only: IBEAM_CHROME_DRIVER_PATH=/usr/bin/chromedriver (no default) "
        "and IBEAM_GATEWAY_BASE_URL=https://localhost:<port> (the simulator listens "
        "on a free port; ours reads the port from conf.yaml).",
        "Both: TMPDIR points into the round's directory (IBeam's Chromium profile "
        "is $TMPDIR/ibeam-chrome-default, shared by every IBeam on the machine "
        "otherwise); DISPLAY is unset, so each keeper starts its own Xvfb.",
        "IBeam's Chromium always opens DevTools port 9222, so two IBeams on one "
        "machine drive each other's browser: each IBeam round waits for the "
        "machine-wide turn (.cache/ibeam-0.5.12.lock, shared with the simulator's "
        "IBeam test) and for port 9222 to be free, before its clock starts.",
    ]


def process_match(sim: SimGateway) -> str:
    return sim.process_match.strip()


class KeeperProcess:
    """A running keeper: its process tree, its browsers, and a clean stop."""

    def __init__(self, keeper: Keeper, sim: SimGateway, workdir: Path, interval):
        self.keeper = keeper
        self.sim = sim
        self.workdir = workdir
        self.token = uuid.uuid4().hex
        self.env = self._environment(interval)
        self.log_path = workdir / f"{keeper.name.lower()}.log"
        self.process: subprocess.Popen | None = None

    def _environment(self, interval: float) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("IBEAM_", "GATEWAY_SIM_"))
        }
        env.pop("DISPLAY", None)
        env.update(self.keeper.settings(self.sim, self.workdir, interval))
        tmp = self.workdir / "tmp"
        for sub in (tmp, self.workdir / "outputs", self.workdir / "inputs"):
            sub.mkdir(parents=True, exist_ok=True)
        env.update(
            TMPDIR=str(tmp),
            GATEWAY_SIM_CONTROL_PORT=str(self.sim.control_port),
            PYTHONUNBUFFERED="1",
        )
        env[TOKEN_VAR] = self.token
        return env

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.keeper.command(),
                cwd=self.keeper.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- the process tree, without the gateway ------------------------------

    def tree(self) -> list[psutil.Process]:
        """The keeper and its descendants, minus the gateway and its children."""
        try:
            root = psutil.Process(self.pid)
            descendants = root.children(recursive=True)
        except psutil.Error:
            return []
        marker = process_match(self.sim)
        gateway: set[int] = set()
        for proc in descendants:
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(proc.cmdline()):
                    gateway.add(proc.pid)
                    gateway.update(c.pid for c in proc.children(recursive=True))
        return [root] + [p for p in descendants if p.pid not in gateway]

    def browsers(self, tree: list[psutil.Process] | None = None) -> list:
        """Browser, driver and display processes in the tree (not zombies)."""
        found = []
        for proc in self.tree() if tree is None else tree:
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if is_browser(proc.name()):
                    found.append(proc)
        return found

    def browser_started_after(self, since: float) -> float | None:
        """Earliest start (epoch) of a Chromium of the tree after since.

        Only the browser counts: a chromedriver may be started on its own to
        check it works, and `chromium --version` is a pre-flight check too.
        """
        starts = []
        for proc in self.tree()[1:]:
            with contextlib.suppress(psutil.Error):
                name = proc.name()
                if not name.startswith(BROWSER_PREFIXES) or name == "chromedriver":
                    continue
                if "--version" in proc.cmdline():
                    continue
                started = start_time(proc)
                if started >= since:
                    starts.append(started)
        return min(starts) if starts else None

    # -- stopping -----------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop the keeper and everything it started; return what had to be killed.

        The keeper's process group gets SIGTERM (a keeper may log out and stop
        its gateway), then SIGKILL.  Whatever still runs after that, outside the
        group (a gateway in a session of its own, a browser of a driver started
        in its own group), is killed and reported.
        """
        group = self._group()
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        if self.process is not None:
            _signal_group(self.pid, signal.SIGKILL)
            self.process.wait(5)
        psutil.wait_procs(group, timeout=5)
        left = self._leftovers()
        killed = []
        for proc in left:
            with contextlib.suppress(psutil.Error):
                killed.append(f"{proc.pid} {proc.name()}")
                proc.kill()
        psutil.wait_procs(left, timeout=5)
        return killed

    def _group(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == self.pid:
                    found.append(proc)
        return found

    def _leftovers(self) -> list[psutil.Process]:
        marker = process_match(self.sim)
        found = []
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if marker in " ".join(proc.cmdline()):
                    found.append(proc)
                elif proc.environ().get(TOKEN_VAR) == self.token:
                    found.append(proc)
        return found


@functools.cache
def _boot_time() -> float:
    """Boot time in epoch seconds, to the 10 ms of /proc/uptime.

    psutil adds the kernel's btime, a whole second, to a process's start
    ticks; its start times can then be up to a second off time.time().
    """
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime


def start_time(proc: psutil.Process) -> float:
    """When proc started, in epoch seconds comparable with time.time()."""
    return proc.create_time() - psutil.boot_time() + _boot_time()


def is_browser(name: str) -> bool:
    return name.startswith(BROWSER_PREFIXES) or name in DISPLAY_NAMES


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
