"""Gateway process control: through supervisord, or on our own (standalone).

Both classes answer the same questions (`running`, `pid`, `memory_bytes`) and
take the same orders (`start`, `stop`, `restart`, `wait_ready`), so the watcher
does not care which one it has.

- `SupervisorGateway` asks supervisord over its XML-RPC interface (unix socket
  or http URL, the interface `supervisorctl` uses) to start, stop or restart the
  gateway program.  supervisord owns the process; the agent never signals it.
- `StandaloneGateway` finds the gateway by a substring of its command line,
  starts ``bin/run.sh root/conf.yaml`` from the gateway dir in a session of its
  own, and stops the whole process group (SIGTERM, then SIGKILL after a grace).
  It never starts a second gateway, and it reports a port already held by some
  other process, with that process's pid, instead of starting one that could
  not listen.

Readiness is known only by connecting: the gateway prints its banner before it
listens and never says when it does.  Two ports are involved and may differ:
the one the agent connects to (from its URL; a proxy may sit in between) and
the ``listenPort`` of the gateway's own conf.yaml, which is the one another
program can steal (`foreign_listener`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlsplit

import psutil
import yaml

from ibeam_agents.errors import (
    ConfigError,
    PortInUse,
    ProcessControlError,
    SupervisorError,
)

log = logging.getLogger(__name__)

READY_POLL = 0.1
STOP_GRACE = 5.0
CONNECT_TIMEOUT = 0.5
ORDER_VERBS = {"startProcess": "start", "stopProcess": "stop"}


class Gateway(Protocol):
    """What the watcher needs from either kind of gateway control."""

    owned: bool

    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def restart(self) -> None: ...
    def pid(self) -> int | None: ...
    def memory_bytes(self) -> int | None: ...
    def wait_ready(self, timeout: float | None = None) -> None: ...
    def answering(self) -> bool: ...


def port_answers(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tree_memory(pid: int | None) -> int | None:
    """Resident memory of a process and all its descendants, in bytes."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _listeners(port: int) -> list[int | None]:
    """Pids (None when hidden from us) of the sockets listening on port."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return []
    return [
        c.pid
        for c in conns
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]


def _foreign(port: int, ours: set[int]) -> str | None:
    """Who listens on port, when it is none of the pids in ours; else None."""
    for pid in _listeners(port):
        if pid is None or pid not in ours:
            return _describe(pid)
    return None


def _tree_pids(pid: int | None) -> set[int]:
    """pid and all its descendants (empty when pid is None or gone)."""
    if pid is None:
        return set()
    found = {pid}
    with contextlib.suppress(psutil.Error):
        found.update(child.pid for child in psutil.Process(pid).children(True))
    return found


def conf_listen_port(gateway_dir: Path | str) -> int | None:
    """listenPort of gateway_dir/root/conf.yaml, or None when it cannot be read."""
    conf = Path(gateway_dir) / "root" / "conf.yaml"
    try:
        data = yaml.safe_load(conf.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, yaml.YAMLError):
        return None
    port = data.get("listenPort") if isinstance(data, dict) else None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    return port


def _lives(proc: psutil.Process) -> bool:
    """Whether proc still runs (a zombie has stopped, whoever reaps it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(pid: int | None) -> str:
    if pid is None:
        return "another process (its pid is hidden from this user)"
    try:
        proc = psutil.Process(pid)
        return f"pid {pid} ({proc.name()})"
    except psutil.Error:
        return f"pid {pid}"


def _resolved(path: Path | str) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(path)


class StandaloneGateway:
    """A gateway the agent starts and stops itself (no supervisord)."""

    def __init__(
        self,
        gateway_dir: Path | str,
        *,
        process_match: str,
        port: int,
        host: str = "127.0.0.1",
        listen_port: int | None = None,
        startup_timeout: float = 20.0,
        console_log: Path | None = None,
        stop_grace: float = STOP_GRACE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.gateway_dir = Path(gateway_dir)
        self.process_match = process_match
        self.port = port
        self.host = host
        self.listen_port = listen_port or port
        self.startup_timeout = startup_timeout
        self.console_log = console_log
        self.stop_grace = stop_grace
        self.owned = False
        self._clock = clock
        self._sleep = sleep
        self._popen: subprocess.Popen | None = None
        self._log_handle: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"StandaloneGateway({str(self.gateway_dir)!r}, port={self.port})"

    def processes(self) -> list[psutil.Process]:
        """Live gateway processes of this gateway directory.

        A process counts when its command line contains the process match and
        it runs in IBEAM_GATEWAY_DIR: bin/run.sh only works from the gateway's
        own directory, and another gateway on the machine (a paper one next to
        a live one, say) must never be taken for ours, then stopped.
        """
        self._reap()
        found = []
        me = os.getpid()
        home = _resolved(self.gateway_dir)
        for proc in psutil.process_iter(["pid", "cmdline", "status", "cwd"]):
            info = proc.info
            if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(info["cmdline"] or ())
            if self.process_match not in cmdline:
                continue
            if info["cwd"] and _resolved(info["cwd"]) == home:
                found.append(proc)
        return found

    def running(self) -> bool:
        """Whether a gateway of this directory runs, or is on its way.

        The gateway we just started counts while bin/run.sh runs: until the
        script has started the JVM (a moment, longer on a loaded machine), no
        process shows the process match yet, and the start must not read as
        a gateway that exited.
        """
        return bool(self.processes()) or self._script_running()

    def _script_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def pid(self) -> int | None:
        procs = self.processes()
        return procs[0].pid if procs else None

    def memory_bytes(self) -> int | None:
        procs = self.processes()
        if not procs:
            return None
        return sum(_tree_memory(p.pid) or 0 for p in procs)

    def answering(self) -> bool:
        return port_answers(self.host, self.port)

    def foreign_listener(self) -> str | None:
        """Who holds the listen port, when it is not a gateway process; else None."""
        ours: set[int] = set()
        for proc in self.processes():
            ours |= _tree_pids(proc.pid)
        return _foreign(self.listen_port, ours)

    def start(self) -> None:
        """Start the gateway unless one already runs; does not wait for it."""
        if self.running():
            log.debug(
                "gateway already running (pid %s); not starting another", self.pid()
            )
            return
        holder = self.foreign_listener()
        if holder:
            raise PortInUse(
                f"port {self.listen_port} is already held by {holder}; stop it or "
                "give the gateway another listenPort in conf.yaml"
            )
        self.check_start_script()
        self._popen = self._spawn()
        self.owned = True
        log.info("gateway started (pid %d) from %s", self._popen.pid, self.gateway_dir)

    def check_start_script(self) -> None:
        """Raise ConfigError unless IBEAM_GATEWAY_DIR holds bin/run.sh."""
        if not (self.gateway_dir / "bin" / "run.sh").is_file():
            raise ConfigError(
                f"IBEAM_GATEWAY_DIR={self.gateway_dir} has no bin/run.sh; point it at "
                "the unpacked clientportal.gw directory"
            )

    def _spawn(self) -> subprocess.Popen:
        # The gateway needs none of our secrets: keep IBEAM_* out of its environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("IBEAM_")}
        output = None
        if self.console_log is not None:
            self.console_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.console_log, "ab")  # noqa: SIM115
            output = self._log_handle
        try:
            return subprocess.Popen(
                ["bash", "bin/run.sh", "root/conf.yaml"],
                cwd=self.gateway_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessControlError(
                f"cannot run bin/run.sh in {self.gateway_dir}: {exc.strerror}"
            ) from exc

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll until the port accepts connections; raise when it does not in time."""
        deadline = self._clock() + (
            self.startup_timeout if timeout is None else timeout
        )
        while True:
            if self.answering():
                return
            if self._popen is not None and self._popen.poll() is not None:
                code = self._popen.returncode
                self._popen = None
                raise ProcessControlError(
                    f"the gateway exited with code {code} while starting; "
                    f"see {self.console_log or 'its output'}"
                )
            if self._clock() >= deadline:
                raise ProcessControlError(
                    f"the gateway did not answer on port {self.port} within "
                    f"{self.startup_timeout:g} s (IBEAM_GATEWAY_STARTUP)"
                )
            self._sleep(READY_POLL)

    def stop(self) -> None:
        """Stop every gateway process group: SIGTERM, then SIGKILL after a grace."""
        targets = self._targets()
        if not targets:
            self._reap()
            return
        self._signal(targets, signal.SIGTERM)
        alive = self._wait_gone(targets, self.stop_grace)
        if alive:
            log.warning("gateway ignored SIGTERM for %g s; killing it", self.stop_grace)
            self._signal(alive, signal.SIGKILL)
            self._wait_gone(alive, self.stop_grace)
        self._reap(wait=True)
        log.info("gateway stopped")

    def _wait_gone(self, procs: list[psutil.Process], timeout: float) -> list:
        """Wait until each process is gone or a zombie; return those still alive.

        A gateway someone else started is not our child: its zombie lingers
        until its own parent reaps it, yet it is as stopped as it gets.
        """
        self._reap()
        deadline = self._clock() + timeout
        alive = list(procs)
        while True:
            alive = [proc for proc in alive if _lives(proc)]
            if not alive or self._clock() >= deadline:
                return alive
            self._sleep(READY_POLL)
            self._reap()

    def restart(self) -> None:
        self.stop()
        self._wait_port_released()
        self.start()

    def _wait_port_released(self) -> None:
        """Give the stopped gateway's listening socket a moment to disappear.

        The kernel and /proc may still list it for an instant after the process
        is gone, which would read as a port held by a hidden process.
        """
        deadline = self._clock() + self.stop_grace
        while _listeners(self.listen_port) and self._clock() < deadline:
            self._sleep(READY_POLL)

    def _targets(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        roots = self.processes()
        if self._script_running():
            with contextlib.suppress(psutil.Error):
                roots.append(psutil.Process(self._popen.pid))
        for proc in roots:
            procs[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    procs[child.pid] = child
        return list(procs.values())

    def _signal(self, procs: list[psutil.Process], signum: int) -> None:
        """Signal each process's group, or the process alone if it shares ours."""
        own_group = os.getpgrp()
        groups = set()
        for proc in procs:
            try:
                group = os.getpgid(proc.pid)
            except OSError:
                continue
            if group != own_group and group not in groups:
                groups.add(group)
                with contextlib.suppress(OSError):
                    os.killpg(group, signum)
            elif group == own_group:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signum)

    def _reap(self, wait: bool = False) -> None:
        """Collect our child's exit status so it does not linger as a zombie."""
        if self._popen is None:
            return
        if wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=self.stop_grace)
        if self._popen.poll() is not None:
            self._popen = None
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None


def _timed_transport(serverurl: str, timeout: float):
    """supervisor's transport, with a socket timeout on every connection."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, serverurl)
    make = transport._get_connection

    def get_connection():
        conn = make()
        conn.timeout = timeout
        if serverurl.startswith("unix://"):
            path = serverurl[len("unix://") :]

            def connect():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(path)
                except OSError:
                    sock.close()
                    raise
                conn.sock = sock

            conn.connect = connect
        return conn

    transport._get_connection = get_connection
    return transport


class SupervisorGateway:
    """The gateway as a supervisord program, driven over XML-RPC."""

    owned = False

    def __init__(
        self,
        url: str,
        program: str = "gateway",
        *,
        port: int,
        host: str = "127.0.0.1",
        listen_port: int | None = None,
        startup_timeout: float = 20.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.program = program
        self.port = port
        self.host = host
        self.listen_port = listen_port or port
        self.startup_timeout = startup_timeout
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"SupervisorGateway({self.url!r}, {self.program!r})"

    def _call(self, method: str, *args, harmless: str | None = None):
        """Call supervisord; the fault harmless names (in Faults) returns None."""
        import xmlrpc.client

        from supervisor.xmlrpc import Faults

        transport = _timed_transport(self.url, self.timeout)
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if harmless and fault.faultCode == getattr(Faults, harmless):
                return None
            if fault.faultCode == Faults.BAD_NAME:
                raise ConfigError(
                    f"IBEAM_SUPERVISOR_PROGRAM={self.program} is not a program of "
                    f"the supervisord at {self.url}; set it to the gateway's name"
                ) from fault
            if fault.faultCode == Faults.SHUTDOWN_STATE:
                # supervisord stops everything; our own SIGTERM is on its way.
                raise SupervisorError(
                    f"supervisord at {self.url} is shutting down; {method} refused"
                ) from fault
            if method in ORDER_VERBS:
                raise SupervisorError(
                    f"supervisord could not {ORDER_VERBS[method]} {self.program}: "
                    f"{fault.faultString}"
                ) from fault
            raise SupervisorError(
                f"supervisord refused {method}: {fault.faultString}"
            ) from fault
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise SupervisorError(
                f"supervisord at {self.url} did not answer {method} ({exc}); "
                "check IBEAM_SUPERVISOR_URL"
            ) from exc
        finally:
            transport.close()

    def info(self) -> dict:
        return self._call("getProcessInfo", self.program)

    def state(self) -> str:
        return str(self.info().get("statename", "UNKNOWN"))

    def running(self) -> bool:
        return self.state() in ("RUNNING", "STARTING")

    def pid(self) -> int | None:
        pid = self.info().get("pid") or None
        return int(pid) if pid else None

    def memory_bytes(self) -> int | None:
        return _tree_memory(self.pid())

    def answering(self) -> bool:
        return port_answers(self.host, self.port)

    def foreign_listener(self) -> str | None:
        """Who holds the listen port, when it is not the gateway program's tree.

        A gateway that cannot bind stays up serving nothing, so supervisord
        shows it RUNNING while another program answers on its port.
        """
        return _foreign(self.listen_port, _tree_pids(self.pid()))

    def start(self) -> None:
        self._call("startProcess", self.program, True, harmless="ALREADY_STARTED")
        log.info("gateway started through supervisord (%s)", self.program)

    def stop(self) -> None:
        self._call("stopProcess", self.program, True, harmless="NOT_RUNNING")
        log.info("gateway stopped through supervisord (%s)", self.program)

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = self._clock() + (
            self.startup_timeout if timeout is None else timeout
        )
        while not self.answering():
            state = self.state()
            if state in ("FATAL", "STOPPED", "EXITED"):
                raise ProcessControlError(
                    f"supervisord reports the gateway program {self.program} {state}"
                )
            if self._clock() >= deadline:
                raise ProcessControlError(
                    f"the gateway did not answer on port {self.port} within "
                    f"{self.startup_timeout:g} s (IBEAM_GATEWAY_STARTUP)"
                )
            self._sleep(READY_POLL)


def make_gateway(settings, *, console_log: Path | None = None):
    """The gateway control the settings ask for."""
    host = urlsplit(settings.base_url).hostname or "127.0.0.1"
    # The agent's URL may reach the gateway through a proxy: the port another
    # program can steal is the gateway's own listenPort.
    listen_port = conf_listen_port(settings.gateway_dir) or settings.gateway_port
    if settings.supervisor_url:
        return SupervisorGateway(
            settings.supervisor_url,
            settings.supervisor_program,
            port=settings.gateway_port,
            host=host,
            listen_port=listen_port,
            startup_timeout=settings.gateway_startup,
        )
    return StandaloneGateway(
        settings.gateway_dir,
        process_match=settings.gateway_process_match,
        port=settings.gateway_port,
        host=host,
        listen_port=listen_port,
        startup_timeout=settings.gateway_startup,
        console_log=console_log,
    )
