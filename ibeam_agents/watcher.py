"""The watcher: a state machine that keeps the gateway authenticated.

The loop follows gunicorn's arbiter: signal handlers and the health server only
put an event on a queue; the loop blocks on that queue with a timeout, hands
each event to ``handle_<name>``, then runs the step of the current state when it
is due.  Each state has one step function that does one thing and returns the
next state; a state change is one log line.

Recovery is a bounded ladder, reset whenever the session is healthy again:

    NOT_AUTHENTICATED / NOT_CONNECTED
      1. reauthenticate (IBEAM_REAUTHENTICATE_ATTEMPTS rounds, each waiting up to
         IBEAM_AUTH_SETTLE_TIMEOUT for the brokerage session)
      2. log out, then a full browser login
      3. restart the gateway, then a full login
      4. back off exponentially (IBEAM_BACKOFF_MIN..MAX) with an alert, and
         climb again
    NO_SESSION            a full login at once
    COMPETING             ssodh/init with compete=true, then log out and
                          reauthenticate (then a full login), at most
                          IBEAM_COMPETE_MAX_PER_HOUR take-backs an hour
    TRANSIENT/UNREACHABLE wait; restart the gateway only after
                          IBEAM_TRANSIENT_GRACE; never a login
    ACCESS_DENIED/TLS     configuration error: never a login, check slowly
    RATE_LIMITED          back off

Every browser login reserves the failure budget first and settles it after
(see budget.py), so the budget decides how many risky attempts are made.  Logins
run on a worker thread; the loop stays responsive (signals, health snapshot,
shutdown) while one runs.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psutil

from ibeam_agents import errors
from ibeam_agents.budget import FailureBudget
from ibeam_agents.client import GatewayApi, Status, StatusKind
from ibeam_agents.metrics import Metrics
from ibeam_agents.planner import RestartPlanner
from ibeam_agents.settings import Settings

log = logging.getLogger(__name__)

AUTH_POLL = 0.25
START_POLL = 0.1
JOB_POLL = 0.25
MAX_LOOP_WAIT = 1.0
SHUTDOWN_LOGOUT_TIMEOUT = 3.0
BROWSER_NAMES = ("chrom", "xvfb")
LOST_SESSION_HINT = (
    "likely another login to this user from another device (IBKR Mobile on a "
    "phone, TWS, a browser) or an IBKR reset"
)
#: budget history entries that are not failed logins
BUDGET_MARKS = ("Reset", "AccountLocked")
#: what to check before `ibeam reset-failures`, by the last failure's class
HALT_FIXES = {
    "CredentialsRejected": "check IBEAM_ACCOUNT and IBEAM_PASSWORD (and IBEAM_KEY)",
    "SecondFactorFailed": "check the second-factor source (IBEAM_TWO_FA_HANDLER)",
    "NeverAuthenticated": "check the account's state with IBKR (log in by hand)",
    "LoginRefused": "read the banner in the log; check the credentials",
}
SESSION_KINDS = (
    StatusKind.AUTHENTICATED,
    StatusKind.NOT_AUTHENTICATED,
    StatusKind.NOT_CONNECTED,
    StatusKind.COMPETING,
)


class State(enum.Enum):
    """What the watcher is doing now."""

    STARTING = "starting the gateway and waiting for it to answer"
    CHECKING = "reading the session state"
    READY = "authenticated; keeping the session alive"
    REAUTHENTICATING = "asking the gateway to reauthenticate"
    LOGGING_IN = "logging in through the browser"
    AWAITING_AUTH = "waiting for the brokerage session to authenticate"
    TAKING_BACK = "taking the session back from another platform"
    RESTARTING = "restarting the gateway"
    DEGRADED = "the gateway answers errors or nothing; waiting it out"
    BACKING_OFF = "backing off after failures"
    MISCONFIGURED = "configuration error; checking slowly"
    HALTED = "logins stopped; an operator must act"
    PAUSED = "deactivated"
    STOPPING = "shutting down"


#: leaving READY for one of these means the session or the gateway went bad
LOSS_STATES = (
    State.REAUTHENTICATING,
    State.LOGGING_IN,
    State.TAKING_BACK,
    State.DEGRADED,
    State.BACKING_OFF,
    State.STARTING,
    State.MISCONFIGURED,
)


@dataclass
class _Ladder:
    """How far up the recovery ladder the current incident has climbed."""

    reauth_rounds: int = 0
    relogin_done: bool = False
    restart_done: bool = False
    take_back_step: int = 0  # 1: ssodh/init sent; 2: logout and reauthenticate sent


@dataclass
class _LoginJob:
    """A browser login running on a worker thread."""

    run: Callable[[], Any]
    wake: Callable[[], None]
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.result = self.run()
        except BaseException as exc:  # handed to the loop, which classes it
            self.error = exc
        finally:
            self.done.set()
            self.wake()


def _spawn_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="login", daemon=True).start()


def _trouble(status: Status) -> errors.GatewayError | None:
    """The gateway error an answer amounts to when it is an outage, else None."""
    said = f"the gateway answered {status.describe()}"
    if status.kind is StatusKind.TRANSIENT:
        return errors.GatewayTransientError(said)
    if status.kind is StatusKind.UNREACHABLE:
        return errors.GatewayUnreachable(said)
    if status.kind is StatusKind.NOT_RUNNING:
        return errors.GatewayNotRunning(said)
    return None


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


class Watcher:
    """Keeps one gateway authenticated; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        api: GatewayApi,
        gateway,
        budget: FailureBudget,
        login: Callable[[Callable[[str, str], None]], Any],
        preflight: Callable[[], str] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        spawn: Callable[[Callable[[], None]], None] = _spawn_thread,
    ) -> None:
        self.settings = settings
        self.api = api
        self.gateway = gateway
        self.budget = budget
        self._login = login
        self._preflight = preflight
        self.metrics = metrics or Metrics(
            [s.name for s in State], [k.name for k in StatusKind]
        )
        self._clock = clock
        self._wall = wall
        self._spawn = spawn
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.state = State.CHECKING
        self.status: Status | None = None
        self.exit_code: int | None = None
        self._reason = "start"
        self._next_step = clock()
        self._maintenance_due = clock()
        self._heartbeat = clock()
        self._ladder = _Ladder()
        self._backoff_level = 0
        self._degraded_since: float | None = None
        self._start_deadline: float | None = None
        self._await: dict[str, Any] | None = None
        self._job: _LoginJob | None = None
        self._compete_times: collections.deque[float] = collections.deque()
        self._compete_warned = False
        self._preflight_error: str | None = None
        self._preflight_done = False
        self._login_unconfirmed = False
        self._lost_in_a_row = 0
        self._last_check: float | None = None
        self._last_good: float | None = None
        self._last_validate: float | None = None
        self._last_login: dict[str, Any] | None = None
        self._alert: str | None = None
        self._notice: str | None = None
        self._halt_reason: str | None = None
        self._misconfig: str | None = None
        self._active = True
        self.planner = RestartPlanner(
            settings.restart_schedule,
            settings.gateway_memory_limit_mb,
            settings.maintenance_interval,
            wall=wall,
        )
        self._failures: collections.Counter[str] = collections.Counter()
        self._budget_view: dict[str, Any] | None = None
        self._snapshot: dict[str, Any] | None = None
        self._steps = {
            state: getattr(self, "step_" + state.name.lower()) for state in State
        }
        self.metrics.budget_limit.set(settings.max_failed_auth)
        self.metrics.state.state(self.state.name)

    # -- the loop -------------------------------------------------------------

    def begin(self, *, maintain_only: bool = False) -> None:
        """Pick the first state: paused, a first check later (-m), or start now."""
        self.planner.plan()
        self._publish_budget(self.budget.state())
        if not self.settings.start_active:
            self._active = False
            self._change(
                State.PAUSED, "IBEAM_START_ACTIVE=false; waiting for /activate"
            )
        elif maintain_only:
            self._change(State.CHECKING, "maintenance only (-m)")
            self._wake(self.settings.maintenance_interval)
        else:
            self._change(State.STARTING, "agent start")
        self._publish()

    def run(self, until: Callable[[State], bool] | None = None) -> int:
        """Loop until a signal or a fatal error, then shut down; returns the exit code.

        With `until`, return 0 as soon as until(state) holds, without shutting
        down (one-shot commands use it).
        """
        self._install_signals()
        try:
            while self.exit_code is None:
                self.run_once()
                if until is not None and self.exit_code is None and until(self.state):
                    return 0
        except Exception:
            log.exception("watcher loop failed")
            self.exit_code = 1
            self._reason = "internal error"
        self.shutdown(self._reason)
        return self.exit_code

    def run_once(self, block: bool = True) -> None:
        """Wait for an event or the next step, handle events, run the step if due."""
        wait = max(0.0, min(self._next_step - self._clock(), MAX_LOOP_WAIT))
        try:
            event = (
                self._events.get(timeout=wait)
                if block and wait
                else (self._events.get_nowait())
            )
        except queue.Empty:
            event = None
        while event is not None:
            getattr(self, "handle_" + event)()
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        self._heartbeat = self._clock()
        if self.exit_code is None and self._clock() >= self._next_step:
            self.step()

    def step(self) -> State:
        """Run the current state's step and move to the state it returns."""
        self._wake(self.settings.maintenance_interval)
        try:
            new = self._steps[self.state]()
        except errors.AgentError as exc:
            new = self._step_failed(exc)
        self._change(new, self._reason)
        self._publish()
        return new

    def _step_failed(self, exc: errors.AgentError) -> State:
        """An AgentError escaped a step: config errors halt, others back off."""
        self._failures[type(exc).__name__] += 1
        self.metrics.failures.labels(failure_class=type(exc).__name__).inc()
        if isinstance(exc, errors.ConfigError):
            return self._halt(f"{type(exc).__name__}: {exc}")
        return self._back_off(f"{type(exc).__name__}: {exc}", alert=True)

    def post(self, event: str) -> None:
        """Queue an event: term, int, activate, deactivate or wake."""
        self._events.put(event)

    def command(self, name: str) -> None:
        """Health server entry: POST /activate and /deactivate."""
        if name in ("activate", "deactivate"):
            self.post(name)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.post("term"))
        signal.signal(signal.SIGINT, lambda *_: self.post("int"))

    def _wake(self, seconds: float) -> None:
        self._next_step = self._clock() + max(0.0, seconds)

    def _change(self, new: State, reason: str) -> None:
        old, self.state = self.state, new
        if new is old:
            return
        level = logging.INFO
        if new in (State.DEGRADED, State.BACKING_OFF, State.TAKING_BACK):
            level = logging.WARNING
        if old is State.READY and new in LOSS_STATES:
            level = logging.WARNING
        if new in (State.HALTED, State.MISCONFIGURED):
            level = logging.ERROR
        log.log(level, "%s -> %s: %s", old.name, new.name, reason)
        self.metrics.state.state(new.name)
        if new is State.READY:
            self._on_ready()

    # -- events ---------------------------------------------------------------

    def handle_term(self) -> None:
        self._reason = "SIGTERM"
        self.exit_code = 0

    def handle_int(self) -> None:
        self._reason = "SIGINT"
        self.exit_code = 0

    def handle_wake(self) -> None:
        """A login finished: look at it now."""
        if self.state is State.LOGGING_IN:
            self._wake(0)

    def handle_activate(self) -> None:
        self._active = True
        if self.state is State.PAUSED:
            self._change(State.CHECKING, "activated")
        self._wake(0)
        self._publish()

    def handle_deactivate(self) -> None:
        if self.state is State.PAUSED:
            return
        self._active = False
        self._abandon_login()
        self._logout("deactivated")
        self._change(State.PAUSED, "deactivated")
        self._wake(self.settings.maintenance_interval)
        self._publish()

    # -- steps, one per state -------------------------------------------------

    def step_starting(self) -> State:
        """Start the gateway if none runs, then wait until it answers."""
        if self._start_deadline is None:
            return self._start_gateway()
        if self.gateway.answering():
            self._start_deadline = None
            holder = self._port_holder()
            if holder:
                return self._gateway_problem(self._port_in_use(holder))
            self._reason = "gateway answers"
            self._wake(0)
            return State.CHECKING
        if self._clock() >= self._start_deadline:
            self._start_deadline = None
            return self._gateway_failed(
                f"the gateway did not answer within {self.settings.gateway_startup:g} s"
            )
        if not self._gateway_alive():
            self._start_deadline = None
            return self._gateway_failed("the gateway exited while starting")
        self._wake(START_POLL)
        return State.STARTING

    def step_checking(self) -> State:
        return self._route(self._check(self.api.tickle))

    def step_ready(self) -> State:
        """Maintenance: tickle, renew SSO when due, watch memory and the schedule.

        Between two maintenance checks, a quick auth/status read every
        IBEAM_STATUS_INTERVAL notices a lost or taken session within seconds.
        """
        if self._clock() < self._maintenance_due:
            return self._quick_read()
        planned = self.planner.schedule_due() or self._memory_restart_due()
        if planned:
            return self._restart(planned)
        status = self._check(self.api.tickle)
        if status.kind is not StatusKind.AUTHENTICATED:
            return self._route(status)
        wrong_mode = self._renew_sso(status)
        if wrong_mode is not None:
            return wrong_mode
        return self._stay_ready()

    def _quick_read(self) -> State:
        status = self._check(self.api.auth_status)
        if status.kind is not StatusKind.AUTHENTICATED:
            return self._route(status)
        self._wake(self._until_next_read())
        return State.READY

    def _stay_ready(self) -> State:
        """READY: maintenance an interval from now, quick reads until then."""
        self._maintenance_due = self._clock() + self.settings.maintenance_interval
        self._wake(self._until_next_read())
        return State.READY

    def _until_next_read(self) -> float:
        return self._quick(max(0.0, self._maintenance_due - self._clock()))

    def _quick(self, limit: float) -> float:
        """IBEAM_STATUS_INTERVAL, at most limit; limit when the reads are off."""
        quick = self.settings.status_interval
        return min(quick, limit) if quick > 0 else limit

    def step_reauthenticating(self) -> State:
        self._ladder.reauth_rounds += 1
        self.metrics.reauthentications.inc()
        triggered = self.api.reauthenticate()
        self._reason = (
            f"reauthenticate round {self._ladder.reauth_rounds} "
            f"({'triggered' if triggered else 'not triggered'})"
        )
        return self._await_auth("reauthenticate")

    def step_awaiting_auth(self) -> State:
        """Poll auth/status until authenticated or the settle time runs out."""
        status = self._check(self.api.auth_status)
        waiting = self._await or {}
        if status.kind is StatusKind.AUTHENTICATED:
            return self._authenticated_after(waiting.get("origin", "?"))
        if status.kind in (
            StatusKind.ACCESS_DENIED,
            StatusKind.TLS_ERROR,
            StatusKind.NOT_RUNNING,
            StatusKind.COMPETING,
        ):
            # Competing after our own login or reauthenticate is another
            # platform's doing: a take-back, counted against the hourly limit.
            self._await = None
            return self._route(status)
        if status.kind not in (StatusKind.NOT_AUTHENTICATED, StatusKind.NOT_CONNECTED):
            # no session, or no usable answer: not the S19 shape of a session that
            # is there and stays unauthenticated for the whole settle time
            waiting["unsteady"] = True
        now = self._clock()
        if now >= waiting.get("deadline", now):
            self._await = None
            return self._settle_failed(waiting, status)
        if waiting.get("origin") == "login" and not waiting.get("nudged"):
            if now >= waiting["nudge_at"]:
                waiting["nudged"] = True
                log.info(
                    "brokerage session still not authenticated; sending ssodh/init"
                )
                self.api.init_session(compete=True)
        self._wake(AUTH_POLL)
        return State.AWAITING_AUTH

    def step_logging_in(self) -> State:
        if self._job is None:
            return self._start_login()
        if not self._job.done.is_set():
            self._wake(JOB_POLL)
            return State.LOGGING_IN
        job, self._job = self._job, None
        return self._after_login(job)

    def step_taking_back(self) -> State:
        """Competing: take the session back, a bounded number of times an hour.

        Each take-back first asks with ssodh/init and compete=true, IBKR's way
        of claiming the brokerage session (one request, no wait).  When the
        session still competes after that, the same take-back logs out and
        reauthenticates.
        """
        status = self._recent_status() or self._check(self.api.tickle)
        if status.kind is not StatusKind.COMPETING:
            return self._route(status)
        if self._ladder.take_back_step == 1:
            self._ladder.take_back_step = 2
            self.api.logout()
            self.metrics.reauthentications.inc()
            self.api.reauthenticate()
            self._reason = (
                "ssodh/init did not take the session back; logged out and "
                "reauthenticated"
            )
            return self._await_auth("take-back")
        now = self._clock()
        while self._compete_times and now - self._compete_times[0] > 3600:
            self._compete_times.popleft()
        if len(self._compete_times) >= self.settings.compete_max_per_hour:
            if not self._compete_warned:
                self._compete_warned = True
                self._set_alert(
                    "another platform holds the brokerage session and the take-back "
                    f"limit ({self.settings.compete_max_per_hour}/hour) is reached"
                )
            self._wake(self.settings.maintenance_interval)
            return State.TAKING_BACK
        self._compete_times.append(now)
        log.warning(
            "another IBKR platform (TWS, mobile, web) took the brokerage session; "
            "taking it back (%d of %d this hour)",
            len(self._compete_times),
            self.settings.compete_max_per_hour,
        )
        self._ladder.take_back_step = 1
        self.api.init_session(compete=True)
        self._reason = "asked the gateway for the session back (ssodh/init, compete)"
        return self._await_auth("take-back")

    def step_restarting(self) -> State:
        reason = self._reason
        self.metrics.gateway_restarts.labels(reason=self._restart_label(reason)).inc()
        try:
            self.gateway.restart()
        except errors.AgentError as exc:
            return self._gateway_problem(exc)
        self._ladder.restart_done = True
        self.planner.forget_memory()
        self._start_deadline = self._clock() + self.settings.gateway_startup
        self._reason = "gateway restarted"
        self._wake(0)
        return State.STARTING

    def step_degraded(self) -> State:
        """5xx or no answer: wait for the grace before restarting the gateway."""
        planned = self.planner.schedule_due()
        if planned:
            return self._restart(planned)
        status = self._check(self.api.tickle)
        outage = self._outage(status)
        if outage is None:
            self._degraded_since = None
            return self._route(status)
        return self._degraded(outage)

    def step_backing_off(self) -> State:
        self._ladder = _Ladder()
        self._reason = "backoff over"
        self._wake(0)
        return State.CHECKING

    def step_misconfigured(self) -> State:
        if self._misconfig == "port":
            holder = self._port_holder()
            if holder:
                self._wake(self._slow_interval())
                return State.MISCONFIGURED
            self._misconfig = None
            self._clear_alert()
            self._reason = "the gateway port is free again; starting the gateway"
            self._start_deadline = None
            self._wake(0)
            return State.STARTING
        status = self._check(self.api.tickle)
        if status.kind in (StatusKind.ACCESS_DENIED, StatusKind.TLS_ERROR):
            self._wake(self._slow_interval())
            return State.MISCONFIGURED
        self._misconfig = None
        self._clear_alert()
        return self._route(status)

    def step_halted(self) -> State:
        """No logins; keep any session alive and watch for an operator's reset."""
        state = self.budget.state()
        self._publish_budget(state)
        if not state.exhausted and self._halt_reason_is_budget():
            log.info("failure budget reset; resuming")
            self._halt_reason = None
            self._clear_alert()
            self._ladder = _Ladder()
            self._backoff_level = 0
            self._wake(0)
            self._reason = "failure budget reset"
            return State.CHECKING
        self._check(self.api.tickle)
        self._wake(self.settings.maintenance_interval)
        return State.HALTED

    def step_paused(self) -> State:
        self._wake(self.settings.maintenance_interval)
        return State.PAUSED

    def step_stopping(self) -> State:
        return State.STOPPING

    # -- routing and the ladder -----------------------------------------------

    def _route(self, status: Status) -> State:
        """The next state for a fresh status answer."""
        kind = status.kind
        self._reason = status.describe()
        if kind is StatusKind.AUTHENTICATED:
            return self._stay_ready()
        self._failures[kind.name] += 1
        self.metrics.failures.labels(failure_class=kind.name).inc()
        self._wake(0)
        if kind is StatusKind.NO_SESSION:
            return self._login_or_halt()
        if kind in (StatusKind.NOT_AUTHENTICATED, StatusKind.NOT_CONNECTED):
            if self.state is State.READY and status.connected:
                self._reason += f" ({LOST_SESSION_HINT})"
            return self._escalate()
        if kind is StatusKind.COMPETING:
            return State.TAKING_BACK
        outage = self._outage(status)
        if outage is not None:
            return self._degraded(outage)
        if kind is StatusKind.NOT_RUNNING:
            return State.STARTING
        if kind is StatusKind.RATE_LIMITED:
            return self._back_off("IBKR answered 429", delay=status.retry_after)
        return self._misconfigured(status)

    def _escalate(self) -> State:
        """Climb one rung of the ladder for a session that is not authenticated."""
        rung = self._ladder
        if rung.reauth_rounds < self.settings.reauthenticate_attempts:
            return State.REAUTHENTICATING
        if not rung.relogin_done:
            rung.relogin_done = True
            self._logout("before a fresh login")
            self._reason += (
                "; reauthenticate did not help: logging out for a full login"
            )
            return self._login_or_halt()
        if not rung.restart_done:
            return self._restart("session would not authenticate")
        return self._back_off(
            "the session would not authenticate after reauthenticate, a fresh login "
            "and a gateway restart",
            alert=True,
        )

    def _login_or_halt(self) -> State:
        state = self.budget.state()
        self._publish_budget(state)
        if state.exhausted:
            return self._halt_budget(state)
        return State.LOGGING_IN

    def _outage(self, status: Status) -> Status | None:
        """status as an outage to wait out (5xx, no answer), or None.

        A refused connection while the gateway process runs is one too: the
        gateway is busy or the network between us is down, and neither a new
        process nor a login helps before IBEAM_TRANSIENT_GRACE.
        """
        if status.kind in (StatusKind.TRANSIENT, StatusKind.UNREACHABLE):
            return status
        if status.kind is StatusKind.NOT_RUNNING and self._gateway_alive():
            return replace(
                status,
                kind=StatusKind.UNREACHABLE,
                message="connection refused while the gateway process runs",
            )
        return None

    def _degraded(self, status: Status) -> State:
        now = self._clock()
        if self._degraded_since is None:
            self._degraded_since = now
        elapsed = now - self._degraded_since
        if elapsed >= self.settings.transient_grace:
            self._degraded_since = None
            return self._restart(
                f"{status.kind.name.lower()} for {elapsed:.0f} s "
                f"(IBEAM_TRANSIENT_GRACE={self.settings.transient_grace:g})"
            )
        self._reason = f"{status.describe()}; no login or restart for now"
        self._wake(min(self._outage_poll(), self._grace_left(elapsed)))
        return State.DEGRADED

    def _outage_poll(self) -> float:
        """How often an outage is probed: a gateway back (supervisord restarted
        it after a crash, IBKR's reset ended) is logged in within seconds."""
        return self._quick(self.settings.maintenance_interval)

    def _grace_left(self, elapsed: float) -> float:
        return max(START_POLL, self.settings.transient_grace - elapsed)

    def _back_off(self, why: str, *, alert: bool = False, delay=None) -> State:
        if delay is None:
            settings = self.settings
            delay = min(
                settings.backoff_max, settings.backoff_min * 2**self._backoff_level
            )
            self._backoff_level += 1
        if alert:
            self._set_alert(why)
        self._reason = f"{why}; next try in {delay:.0f} s"
        self._wake(delay)
        return State.BACKING_OFF

    def _misconfigured(self, status: Status) -> State:
        conf = self.settings.gateway_dir / "root" / "conf.yaml"
        if status.kind is StatusKind.ACCESS_DENIED:
            why = (
                "the gateway answers 404 Access Denied: its IP filter does not allow "
                f"the agent; add 127.0.0.1 to ips.allow in {conf} (or in the conf.yaml "
                "of the inputs dir) and restart the gateway"
            )
        else:
            why = (
                f"TLS to {self.settings.base_url} failed ({status.message}); check "
                "IBEAM_GATEWAY_CA_CERT, listenSsl and the certificate's host names"
            )
        self._misconfig = status.kind.name
        self._set_alert(why)
        self._reason = why
        self._wake(self._slow_interval())
        return State.MISCONFIGURED

    def _slow_interval(self) -> float:
        return max(self.settings.maintenance_interval, self.settings.backoff_min)

    # -- gateway process ------------------------------------------------------

    def _start_gateway(self) -> State:
        try:
            if not self.gateway.running():
                self.gateway.start()
        except errors.AgentError as exc:
            return self._gateway_problem(exc)
        self._run_preflight()
        self._start_deadline = self._clock() + self.settings.gateway_startup
        self._reason = "waiting for the gateway to answer"
        self._wake(0)
        return State.STARTING

    def _gateway_alive(self) -> bool:
        try:
            return self.gateway.running()
        except errors.AgentError:
            return True

    def _gateway_failed(self, why: str) -> State:
        holder = self._port_holder()
        if holder:
            return self._gateway_problem(self._port_in_use(holder))
        if not self._ladder.restart_done:
            return self._restart(why)
        return self._back_off(why, alert=True)

    def _port_holder(self) -> str | None:
        """Another program listening on the gateway's port, described; else None."""
        check = getattr(self.gateway, "foreign_listener", None)
        if check is None:
            return None
        try:
            return check()
        except errors.AgentError:
            return None

    def _port_in_use(self, holder: str) -> errors.PortInUse:
        port = getattr(self.gateway, "listen_port", self.settings.gateway_port)
        return errors.PortInUse(
            f"port {port} is held by {holder}, not by the gateway; stop that "
            "program or give the gateway another listenPort in conf.yaml"
        )

    def _gateway_problem(self, exc: errors.AgentError) -> State:
        self._failures[type(exc).__name__] += 1
        self.metrics.failures.labels(failure_class=type(exc).__name__).inc()
        if isinstance(exc, errors.PortInUse):
            self._misconfig = "port"
            self._set_alert(str(exc))
            self._reason = str(exc)
            self._wake(self._slow_interval())
            return State.MISCONFIGURED
        if isinstance(exc, errors.ConfigError):
            return self._halt(str(exc))
        return self._back_off(f"{type(exc).__name__}: {exc}", alert=True)

    def _restart(self, why: str) -> State:
        self._abandon_login()
        self._reason = why
        self._wake(0)
        return State.RESTARTING

    @staticmethod
    def _restart_label(reason: str) -> str:
        for label in ("memory", "planned", "transient", "unreachable", "answer"):
            if label in reason:
                return label
        return "recovery"

    def _memory_restart_due(self) -> str | None:
        try:
            used = self.gateway.memory_bytes()
        except errors.AgentError:
            return None
        if used is None:
            return None
        self.metrics.gateway_memory.set(used)
        return self.planner.memory_due(used, self._clock())

    # -- login ----------------------------------------------------------------

    def _run_preflight(self) -> None:
        if self._preflight_done or self._preflight is None:
            return
        self._preflight_done = True
        try:
            version = self._preflight()
        except errors.BrowserUnavailable as exc:
            self._preflight_error = str(exc)
            log.error("browser unavailable: %s", exc)
            return
        log.info("browser ready: %s", version)

    def _start_login(self) -> State:
        if self._preflight_error:
            self._failures["BrowserUnavailable"] += 1
            self.metrics.failures.labels(failure_class="BrowserUnavailable").inc()
            self._preflight_done = False
            self._preflight_error = None
            return self._back_off("browser unavailable", alert=True)
        self.budget.reserve("login")
        self._job = _LoginJob(
            run=lambda: self._login(self._notify),
            wake=lambda: self.post("wake"),
            started=self._clock(),
        )
        self._reason = "browser login started"
        self._spawn(self._job)
        self._wake(JOB_POLL)
        return State.LOGGING_IN

    def _notify(self, event: str, detail: str) -> None:
        """Operator-facing events from the login (e.g. an IB Key push waiting)."""
        self._notice = f"{event}: {detail}"
        log.warning("login: %s: %s", event.replace("_", " "), detail)
        self._publish()

    def _after_login(self, job: _LoginJob) -> State:
        duration = self._clock() - job.started
        if job.error is None:
            result = job.result
            variant = getattr(result, "page_variant", "?")
            factor = getattr(result, "second_factor", None) or "none"
            log.info(
                "browser login done in %.1f s (page %s, second factor %s)",
                duration,
                variant,
                factor,
            )
            self._record_login("succeeded", duration)
            self._notice = None
            self._reason = f"browser login succeeded ({variant})"
            # The page is done with the password: a crash from here on is no risk.
            self.budget.release()
            self._login_unconfirmed = True
            return self._await_auth("login")
        return self._login_failed(job.error, duration)

    def _login_failed(self, error: BaseException, duration: float) -> State:
        name = type(error).__name__
        self._record_login(name, duration)
        self._failures[name] += 1
        self.metrics.failures.labels(failure_class=name).inc()
        self._notice = None
        if isinstance(error, errors.AccountLocked):
            state = self.budget.lock(
                str(error) or "the login page says the account is locked"
            )
            self._publish_budget(state)
            return self._halt(
                "the account is locked; unlock it with IBKR, then run "
                "`ibeam reset-failures`",
                budget=True,
            )
        if isinstance(error, errors.LoginError) and error.spends_budget:
            trouble = self._trouble_behind(error)
            if trouble is not None:
                self.budget.release()
                return self._back_off(
                    f"login failed: {name} while {trouble}; not counted"
                )
            state = self.budget.spend(name, str(error))
            self._publish_budget(state)
            if state.exhausted:
                return self._halt_budget(state)
            return self._back_off(f"login failed: {name}: {error}")
        self.budget.release()
        if isinstance(error, errors.ConfigError | errors.SecondFactorUnavailable):
            return self._halt(f"{name}: {error}")
        if not isinstance(error, errors.AgentError):
            log.error("login raised an unexpected error", exc_info=error)
        alert = isinstance(
            error,
            errors.BrowserUnavailable
            | errors.PageNotRecognised
            | errors.WrongTradingMode,
        )
        return self._back_off(f"login failed: {name}: {error}", alert=alert)

    def _trouble_behind(self, error: errors.LoginError) -> errors.GatewayError | None:
        """For a refusal that does not say why: the gateway's trouble now, if any.

        A bare or unknown banner is what the page shows when its request met a
        5xx or no answer; IBKR's outages must never spend the failure budget.
        """
        if not getattr(error, "ambiguous", False):
            return None
        return _trouble(self._check(self.api.tickle))

    def gateway_check(self) -> None:
        """Raise a GatewayError when the gateway cannot answer now.

        The browser login calls it, from its own thread, when the page refuses
        without saying why; the loop makes no request while a login runs.
        """
        trouble = _trouble(self.api.tickle())
        if trouble is not None:
            raise trouble

    def _record_login(self, outcome: str, duration: float) -> None:
        self._last_login = {
            "at": _iso(self._wall()),
            "outcome": outcome,
            "duration_s": round(duration, 2),
        }
        self.metrics.logins.labels(outcome=outcome).inc()

    def _await_auth(self, origin: str) -> State:
        now = self._clock()
        settle = self.settings.auth_settle_timeout
        self._await = {
            "origin": origin,
            "deadline": now + settle,
            "nudge_at": now + settle / 2,
            "nudged": False,
        }
        self._wake(0 if origin == "login" else AUTH_POLL)
        return State.AWAITING_AUTH

    def _authenticated_after(self, origin: str) -> State:
        self._await = None
        self._reason = f"authenticated after {origin}"
        if origin == "login":
            result = self.api.validate()
            if result is not None:
                self._last_validate = self._clock()
                wrong_mode = self._check_mode(result)
                if wrong_mode is not None:
                    return wrong_mode
        return self._stay_ready()

    def _check_mode(self, result) -> State | None:
        """Halt, logged out, when sso/validate shows the other trading mode.

        The login page's Live/Paper switch is set and checked before submit;
        this catches a page that ignored it (an old page without the switch
        logs a paper user in as paper whatever was asked).
        """
        if not result.ok or result.paper is None:
            return None
        wanted = self.settings.trading_mode
        got = "paper" if result.paper else "live"
        if got == wanted:
            return None
        self._logout("the session is in the wrong trading mode")
        self._check(self.api.auth_status)  # what /status and /readyz show now
        self.metrics.failures.labels(failure_class="WrongTradingMode").inc()
        self._failures["WrongTradingMode"] += 1
        return self._halt(
            f"the gateway's session is a {got} one (sso/validate LOGIN_TYPE) but "
            f"IBEAM_TRADING_MODE={wanted}: logged out, no more logins; set "
            f"IBEAM_TRADING_MODE={got} or give the {wanted} user, then restart "
            "the agent"
        )

    def _settle_failed(self, waiting: dict[str, Any], status: Status) -> State:
        """The settle time ran out without an authenticated session."""
        origin = waiting.get("origin", "?")
        settle = self.settings.auth_settle_timeout
        outage = self._outage(status)
        if outage is not None or status.kind is StatusKind.RATE_LIMITED:
            # The gateway or IBKR cannot answer: nothing to blame the login for.
            self._reason = f"no usable answer {settle:g} s after {origin}"
            return self._route(status)
        if origin == "login":
            self._login_unconfirmed = False
            if status.kind is StatusKind.NO_SESSION:
                return self._lost_after_login(status)
            if waiting.get("unsteady"):
                self._ladder.relogin_done = True
                log.warning(
                    "the session was not authenticated %g s after a login, but it "
                    "was gone or not answering part of that time: not counted",
                    settle,
                )
            else:
                halted = self._never_authenticated(settle, status)
                if halted is not None:
                    return halted
        self._reason = (
            f"not authenticated {settle:g} s after {origin}: {status.describe()}"
        )
        if status.kind is StatusKind.NO_SESSION:
            return self._login_or_halt()
        if origin == "take-back":
            self._ladder.reauth_rounds = self.settings.reauthenticate_attempts
        return self._escalate()

    def _never_authenticated(self, settle: float, status: Status) -> State | None:
        """Spend the budget on a session that stayed unauthenticated (S19)."""
        error = errors.NeverAuthenticated(
            f"'{self.settings.success_el_text}' was shown but the session did not "
            f"authenticate within {settle:g} s ({status.kind.name})"
        )
        self._record_login("NeverAuthenticated", settle)
        self._failures["NeverAuthenticated"] += 1
        self.metrics.failures.labels(failure_class="NeverAuthenticated").inc()
        state = self.budget.spend("NeverAuthenticated", str(error))
        self._publish_budget(state)
        if state.exhausted:
            return self._halt_budget(state)
        self._ladder.relogin_done = True
        log.warning("%s", error)
        return None

    def _lost_after_login(self, status: Status) -> State:
        """The session ended before it authenticated: log in again, spend nothing.

        The password and the second factor were accepted, so this cannot lead to
        a lock-out.  The first time logs in again at once; a repeat backs off
        (doubling, with an alert from the third), so a session that keeps ending
        never makes a stream of logins.
        """
        self._lost_in_a_row += 1
        why = (
            "the session ended after a successful login, before it authenticated "
            f"({LOST_SESSION_HINT}); not counted"
        )
        if self._lost_in_a_row == 1:
            state = self._route(status)
            self._reason = f"{why}; logging in again"
            return state
        return self._back_off(
            f"{why}; {self._lost_in_a_row} logins in a row",
            alert=self._lost_in_a_row >= 3,
        )

    def _abandon_login(self) -> None:
        """Stop a login in flight: kill our browser processes, settle nothing."""
        if self._job is None or self._job.done.is_set():
            self._job = None
            return
        log.warning("stopping the browser login in progress")
        self._kill_browsers()
        self._job.done.wait(timeout=3.0)
        self._job = None
        # Stopped on purpose, not a crash: the attempt is not counted.
        self.budget.release()

    @staticmethod
    def _kill_browsers() -> None:
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            with contextlib.suppress(psutil.Error):
                if any(word in child.name().lower() for word in BROWSER_NAMES):
                    child.kill()

    # -- halting and alerts ---------------------------------------------------

    def _halt(self, why: str, *, budget: bool = False) -> State:
        self._halt_reason = ("budget: " if budget else "") + why
        self._set_alert(why)
        self._reason = why
        self._wake(self.settings.maintenance_interval)
        return State.HALTED

    def _halt_budget(self, state) -> State:
        kinds = [entry.get("kind") for entry in state.history]
        last = next((k for k in reversed(kinds) if k not in BUDGET_MARKS), None)
        fix = HALT_FIXES.get(last, "find the cause in the log")
        return self._halt(
            f"failure budget spent ({state.spent} of {state.limit} failed logins"
            f"{f', the last {last}' if last else ''}); no more logins until "
            f"`ibeam reset-failures`: {fix} first",
            budget=True,
        )

    def _halt_reason_is_budget(self) -> bool:
        return bool(self._halt_reason and self._halt_reason.startswith("budget: "))

    def _set_alert(self, why: str) -> None:
        if self._alert != why:
            log.error("ALERT: %s", why)
        self._alert = why
        self.metrics.alert.set(1)

    def _clear_alert(self) -> None:
        self._alert = None
        self.metrics.alert.set(0)

    def _on_ready(self) -> None:
        if self._login_unconfirmed:
            self._login_unconfirmed = False
            self._publish_budget(self.budget.succeed())
        self._ladder = _Ladder()
        self._backoff_level = 0
        self._lost_in_a_row = 0
        self._degraded_since = None
        self._compete_warned = False
        self._misconfig = None
        if not self._halt_reason:
            self._clear_alert()

    # -- session helpers ------------------------------------------------------

    def _check(self, call: Callable[[], Status]) -> Status:
        status = call()
        now = self._clock()
        self.status = status
        self._last_check = self._wall()
        self.metrics.session.state(status.kind.name)
        if status.kind is StatusKind.AUTHENTICATED:
            self._last_good = self._wall()
            self.metrics.mark_good(now, self._clock)
        self.metrics.ready.set(1 if status.kind is StatusKind.AUTHENTICATED else 0)
        return status

    def _recent_status(self) -> Status | None:
        if self.status is None or self._last_check is None:
            return None
        return self.status if self._wall() - self._last_check < 1.0 else None

    def _renew_sso(self, status: Status) -> State | None:
        """sso/validate when SSO nears its end, or every few minutes anyway.

        Returns HALTED when the answer shows the other trading mode.
        """
        interval_ms = self.settings.maintenance_interval * 1000
        expiring = status.sso_expires_ms is not None and (
            status.sso_expires_ms < 2 * interval_ms + 10_000
        )
        stale = (
            self._last_validate is None or self._clock() - self._last_validate >= 300
        )
        if not (expiring or stale):
            return None
        result = self.api.validate()
        if result is None:
            return None
        self._last_validate = self._clock()
        if not result.ok:
            log.warning(
                "sso/validate did not confirm the SSO session (HTTP %s)",
                result.http_status,
            )
        return self._check_mode(result)

    def _logout(self, why: str) -> None:
        if self.status is not None and self.status.kind not in SESSION_KINDS:
            return
        ok = self.api.logout(
            timeout=min(SHUTDOWN_LOGOUT_TIMEOUT, self.settings.request_timeout)
        )
        log.info(
            "logged out (%s)%s", why, "" if ok else "; the gateway did not confirm"
        )

    # -- shutdown -------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Log out, stop what we started, and say why we stop."""
        if self.state is State.STOPPING:
            return
        self._change(State.STOPPING, reason)
        self._publish()
        self._abandon_login()
        try:
            self._logout("shutdown")
        except Exception:
            log.warning("logout on shutdown failed", exc_info=True)
        if self.gateway.owned and not self.settings.under_supervisor:
            try:
                self.gateway.stop()
            except errors.AgentError as exc:
                log.warning("could not stop the gateway: %s", exc)
        code = self.exit_code or 0
        log.log(
            logging.INFO if code == 0 else logging.ERROR,
            "stopped (%s), exit code %d",
            reason,
            code,
        )
        self._publish()

    # -- snapshot for the health server ---------------------------------------

    def _publish_budget(self, state) -> None:
        self.metrics.budget_spent.set(state.spent)
        self._budget_view = {
            "spent": state.spent,
            "limit": state.limit,
            "locked": state.locked,
        }

    def _publish(self) -> None:
        """Refresh the snapshot the health server reads."""
        with self._lock:
            self._snapshot = self._build_snapshot()

    def _build_snapshot(self) -> dict[str, Any]:
        status = self.status
        next_in = max(0.0, self._next_step - self._clock())
        return {
            "state": self.state.name,
            "state_detail": self.state.value,
            "reason": self._reason,
            "active": self._active,
            "status": status.as_dict() if status else None,
            "last_check": _iso(self._last_check),
            "last_good_check": _iso(self._last_good),
            "last_login": self._last_login,
            "failures": {
                "budget": self._budget_view,
                "by_class": dict(self._failures),
            },
            "next_action": self._next_action(),
            "next_action_at": _iso(self._wall() + next_in),
            "alert": self._alert,
            "notice": self._notice,
            "degraded": self.state is State.DEGRADED,
            "gateway": self.settings.base_url,
        }

    def _next_action(self) -> str:
        return {
            State.STARTING: "wait for the gateway",
            State.CHECKING: "check the session",
            State.READY: "tickle",
            State.REAUTHENTICATING: "reauthenticate",
            State.LOGGING_IN: "finish the browser login",
            State.AWAITING_AUTH: "poll auth/status",
            State.TAKING_BACK: "take the session back",
            State.RESTARTING: "restart the gateway",
            State.DEGRADED: "check again; restart after the grace",
            State.BACKING_OFF: "check again after the backoff",
            State.MISCONFIGURED: "check again (configuration error)",
            State.HALTED: "nothing until an operator acts",
            State.PAUSED: "nothing until POST /activate",
            State.STOPPING: "exit",
        }[self.state]

    def snapshot(self) -> dict[str, Any]:
        """What /status shows, plus live and ready for the probes."""
        with self._lock:
            snap = dict(self._snapshot or self._build_snapshot())
        now = self._clock()
        window = max(3 * self.settings.maintenance_interval, 30.0)
        authenticated = bool(
            snap["status"] and snap["status"]["kind"] == "AUTHENTICATED"
        )
        halted = snap["state"] == State.HALTED.name
        stale = now - self._heartbeat > window
        snap["live"] = not stale and not (halted and not authenticated)
        snap["live_reason"] = (
            "ok"
            if snap["live"]
            else ("loop stalled" if stale else f"halted: {self._alert}")
        )
        ready_states = (State.READY.name, State.HALTED.name)
        snap["ready"] = authenticated and snap["state"] in ready_states and not stale
        snap["ready_reason"] = "ok" if snap["ready"] else f"not ready: {snap['state']}"
        return snap

    def metrics_text(self) -> bytes:
        return self.metrics.render()
