"""One round of one keeper: cold start, idle cost, and two recoveries.

Times come from outside the keeper: the simulator's control API polled every
50 ms (readiness, logins, requests received) and the keeper's process tree read
with psutil (browser start times, memory, CPU).  Epoch seconds throughout, so
that psutil's process start times line up with the polls.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.keepers import Keeper, KeeperProcess
from bench.probe import (
    FAST_POLL,
    TICKLE,
    BenchTimeout,
    Probe,
    port_accepts,
    ready,
    total_requests,
)
from bench.venv import VenvError, ibeam_turn
from gateway_sim.harness import SimGateway, SimGatewayError

log = logging.getLogger(__name__)

COLD_TIMEOUT = 180.0
RECOVERY_TIMEOUT = 180.0
SETTLE = 1.0
SAMPLE_EVERY = 1.0
FAULTS = ("expire", "compete")
MIB = 1024 * 1024


class KeeperDied(RuntimeError):
    """The keeper process exited while it was being measured."""


@dataclass
class ColdStart:
    """Start of the keeper (gateway not running) to the session being usable."""

    total_s: float
    gateway_up_s: float | None  # keeper start -> simulator listening
    browser_start_s: float | None  # keeper start -> first Chromium
    login_s: float | None  # browser start -> "Client login succeeds"
    auth_after_login_s: float | None  # login success -> usable


@dataclass
class Recovery:
    """A fault injected at steady state, to the session being usable again."""

    fault: str
    total_s: float
    detect_s: float | None  # fault -> the keeper's first request after it
    repair_s: float | None  # that request -> usable
    login_s: float | None  # browser start -> "Client login succeeds", if any
    logins: int  # browser logins it took


@dataclass
class Idle:
    """The keeper at steady maintenance, over a window."""

    window_s: float
    rss_mib: float  # median of the samples, keeper tree without the gateway
    cpu_percent: float  # of one core, over the window
    browsers: int  # most browser/driver/Xvfb processes alive at one sample
    per_minute: dict[str, float]  # requests the gateway received, by kind
    peak_per_second: float


@dataclass
class KeeperRound:
    """Everything measured for one keeper in one round."""

    keeper: str
    round: int
    cold: ColdStart | None = None
    idle: Idle | None = None
    recoveries: dict[str, Recovery] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)

    def logins(self) -> list[float]:
        found = [self.cold.login_s] if self.cold else []
        found += [r.login_s for r in self.recoveries.values()]
        return [value for value in found if value is not None]


def run_keeper_round(
    keeper: Keeper, workdir: Path, number: int, interval: float, idle_s: float
) -> KeeperRound:
    """Measure one keeper against a fresh simulator; always stop everything."""
    turn = contextlib.nullcontext() if keeper.is_ours else ibeam_turn()
    try:
        with turn:
            return _measure(keeper, workdir, number, interval, idle_s)
    except VenvError as exc:
        log.warning("%s round %d skipped: %s", keeper.name, number, exc)
        return KeeperRound(keeper.name, number, errors=[f"skipped: {exc}"])


def _measure(
    keeper: Keeper, workdir: Path, number: int, interval: float, idle_s: float
) -> KeeperRound:
    sim = SimGateway(workdir / "gw").install()
    process = KeeperProcess(keeper, sim, workdir, interval)
    probe = Probe(sim)
    result = KeeperRound(keeper.name, number)
    try:
        result.cold = cold_start(process, probe)
        log.info("%s: cold start to ready %.2f s", keeper.name, result.cold.total_s)
        result.idle = idle(process, probe, idle_s, interval)
        for fault in FAULTS:
            recovery = recover(process, probe, fault, interval)
            result.recoveries[fault] = recovery
            log.info(
                "%s: recovery after %s %.2f s", keeper.name, fault, recovery.total_s
            )
    except (BenchTimeout, KeeperDied, SimGatewayError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        log.warning("%s round %d: %s", keeper.name, number, message)
        tail = process.log_tail()
        if tail:
            log.warning("%s log tail:\n%s", keeper.name, tail)
        result.errors.append(message)
    finally:
        result.killed = process.stop()
    return result


def _check_alive(process: KeeperProcess) -> None:
    if not process.alive():
        code = process.process.returncode if process.process else None
        raise KeeperDied(f"{process.keeper.name} exited with status {code}")


class BrowserWatch:
    """Notes when the keeper's first browser process after a moment started.

    Runs on a thread of its own so that scanning the process table never
    slows the 50 ms polls of the simulator; the start time comes from the
    process itself, so the scan only has to catch the browser alive.
    """

    def __init__(self, process: KeeperProcess, since: float):
        self.process = process
        self.since = since
        self.started: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BrowserWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while self.started is None and not self._stop.wait(FAST_POLL):
            self.started = self.process.browser_started_after(self.since)


def cold_start(process: KeeperProcess, probe: Probe) -> ColdStart:
    """Start the keeper and watch until the session is usable."""
    started = time.time()
    process.start()
    marks: dict[str, float] = {}
    with BrowserWatch(process, started) as watch:
        while True:
            state = probe.state()
            now = time.time()
            if "listen" not in marks and port_accepts(probe.sim.port):
                marks["listen"] = time.time()
            if state is not None:
                if state["login_successes"] >= 1:
                    marks.setdefault("login", now)
                if ready(state):
                    break
            _check_alive(process)
            if now - started > COLD_TIMEOUT:
                raise BenchTimeout(f"not ready {COLD_TIMEOUT:g} s after the start")
            time.sleep(FAST_POLL)
    browser = watch.started
    login = marks.get("login")
    return ColdStart(
        total_s=now - started,
        gateway_up_s=_span(started, marks.get("listen")),
        browser_start_s=_span(started, browser),
        login_s=_span(browser, login),
        auth_after_login_s=_span(login, now),
    )


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return end - start


def idle(process: KeeperProcess, probe: Probe, seconds: float, interval: float) -> Idle:
    """Sample memory, CPU, browsers and requests over a window of steady state.

    The window opens just after the first maintenance check that follows
    readiness, so that what a login brings with it (a first sso/validate, the
    browser going away) is not counted as steady maintenance.
    """
    _next_check(probe, interval)
    time.sleep(SETTLE)
    first = _must(probe)
    started = time.monotonic()
    cpu_before = cpu_seconds(process.tree())
    rss, browsers, totals = [], 0, [(started, total_requests(first))]
    while time.monotonic() - started < seconds:
        time.sleep(min(SAMPLE_EVERY, max(0.0, seconds - (time.monotonic() - started))))
        _check_alive(process)
        tree = process.tree()
        rss.append(rss_bytes(tree) / MIB)
        browsers = max(browsers, len(process.browsers(tree)))
        totals.append((time.monotonic(), total_requests(_must(probe))))
    window = time.monotonic() - started
    cpu = cpu_seconds(process.tree()) - cpu_before
    last = _must(probe)
    return Idle(
        window_s=window,
        rss_mib=statistics.median(rss) if rss else 0.0,
        cpu_percent=100.0 * cpu / window,
        browsers=browsers,
        per_minute=per_minute(first["requests"], last["requests"], window),
        peak_per_second=_peak(totals),
    )


def _next_check(probe: Probe, interval: float) -> None:
    """Return once a maintenance tickle reaches the gateway after a quiet spell.

    A tickle that follows half an interval without another tickle is a
    scheduled check; the tickles a keeper sends while it waits for a login to
    settle come in quick succession and are passed over.  Other requests (our
    agent's auth/status reads between checks) do not count.
    """
    last_ticks = _must(probe)["requests"].get(TICKLE, 0)
    changed = time.monotonic()
    deadline = changed + 3 * interval + 10
    while time.monotonic() < deadline:
        time.sleep(FAST_POLL)
        state = probe.state()
        if state is None:
            continue
        ticks = state["requests"].get(TICKLE, 0)
        if ticks == last_ticks:
            continue
        now = time.monotonic()
        if now - changed >= interval / 2:
            return
        last_ticks, changed = ticks, now
    raise BenchTimeout("no maintenance tickle after a quiet spell")


def _must(probe: Probe) -> dict[str, Any]:
    state = probe.state()
    if state is None:
        raise BenchTimeout("the simulator's control API stopped answering")
    return state


def _peak(totals: list[tuple[float, int]]) -> float:
    rates = [
        (n1 - n0) / (t1 - t0)
        for (t0, n0), (t1, n1) in zip(totals, totals[1:], strict=False)
        if t1 > t0
    ]
    return max(rates, default=0.0)


def per_minute(before: dict, after: dict, window: float) -> dict[str, float]:
    """Requests received per minute over the window, by kind and in total."""
    kinds: dict[str, float] = {"total": 0.0, "tickle": 0.0, "validate": 0.0}
    for path, count in after.items():
        delta = count - before.get(path, 0)
        if delta <= 0:
            continue
        kinds["total"] += delta
        kind = request_kind(path)
        kinds[kind] = kinds.get(kind, 0.0) + delta
    return {kind: 60.0 * n / window for kind, n in kinds.items()}


def request_kind(path: str) -> str:
    if path.rstrip("/") == TICKLE:
        return "tickle"
    if path.rstrip("/").endswith("/sso/validate"):
        return "validate"
    if path.rstrip("/").endswith("/iserver/auth/status"):
        return "status"
    return "other"


def rss_bytes(tree: list[psutil.Process]) -> int:
    total = 0
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def cpu_seconds(tree: list[psutil.Process]) -> float:
    """CPU time of the tree, including children it has already reaped."""
    total = 0.0
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
            total += times.children_user + times.children_system
    return total


def recover(
    process: KeeperProcess, probe: Probe, fault: str, interval: float
) -> Recovery:
    """Inject fault halfway between two maintenance checks; time the way back."""
    probe.wait(ready, RECOVERY_TIMEOUT, f"ready before {fault}")
    _next_check(probe, interval)
    # Half an interval after a check, for both keepers: detection then takes
    # about half the shared interval, whoever is measured.
    time.sleep(interval / 2)
    sim = probe.sim
    struck = time.time()
    after = sim.expire() if fault == "expire" else sim.compete()
    return _watch_recovery(process, probe, fault, struck, after)


def _watch_recovery(process, probe, fault, struck, after) -> Recovery:
    base_requests = total_requests(after)
    base_logins = after["login_successes"]
    detected = logged_in = None
    with BrowserWatch(process, struck) as watch:
        while True:
            state = probe.state()
            now = time.time()
            if state is not None:
                if detected is None and total_requests(state) > base_requests:
                    detected = now
                if logged_in is None and state["login_successes"] > base_logins:
                    logged_in = now
                if ready(state):
                    break
            _check_alive(process)
            if now - struck > RECOVERY_TIMEOUT:
                raise BenchTimeout(f"not ready {RECOVERY_TIMEOUT:g} s after {fault}")
            time.sleep(FAST_POLL)
    browser = watch.started
    return Recovery(
        fault=fault,
        total_s=now - struck,
        detect_s=_span(struck, detected),
        repair_s=_span(detected, now),
        login_s=_span(browser, logged_in),
        logins=state["login_successes"] - base_logins,
    )
