"""Fakes for the watcher's collaborators: gateway API, process control, login."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ibeam_agents.budget import FailureBudget
from ibeam_agents.client import Status, StatusKind, ValidateResult
from ibeam_agents.settings import Settings
from ibeam_agents.watcher import Watcher

K = StatusKind
SESSION = (K.AUTHENTICATED, K.NOT_AUTHENTICATED, K.NOT_CONNECTED, K.COMPETING)


class FakeClock:
    def __init__(self):
        self.now = 5000.0

    def __call__(self):
        return self.now

    def wall(self):
        return 1_800_000_000.0 + self.now


class FakeApi:
    """A gateway session reduced to its StatusKind, with scripted reactions."""

    def __init__(self):
        self.kind = K.NO_SESSION
        self.calls: list[str] = []
        self.reauth_fixes = False
        self.init_takes_back = False
        self.sso_expires_ms: int | None = 500_000
        self.validate_ok = True
        self.validate_paper: bool | None = None
        self.retry_after = None

    def _status(self) -> Status:
        return Status(
            kind=self.kind,
            session=self.kind in SESSION,
            authenticated=self.kind in (K.AUTHENTICATED, K.COMPETING),
            connected=True,
            competing=self.kind is K.COMPETING,
            sso_expires_ms=self.sso_expires_ms if self.kind in SESSION else None,
            retry_after=self.retry_after,
        )

    def tickle(self):
        self.calls.append("tickle")
        return self._status()

    def auth_status(self, timeout=None):
        self.calls.append("auth_status")
        return self._status()

    def reauthenticate(self):
        self.calls.append("reauthenticate")
        if self.reauth_fixes and self.kind in SESSION:
            self.kind = K.AUTHENTICATED
        return self.kind in SESSION

    def logout(self, timeout=None):
        self.calls.append("logout")
        if self.kind in SESSION:
            self.kind = K.NOT_AUTHENTICATED
        return True

    def init_session(self, compete=True):
        self.calls.append("init_session")
        if compete and self.init_takes_back and self.kind is K.COMPETING:
            self.kind = K.AUTHENTICATED
        return self._status()

    def validate(self):
        self.calls.append("validate")
        return ValidateResult(
            ok=self.validate_ok, http_status=200, paper=self.validate_paper
        )

    def close(self):
        self.calls.append("close")


class FakeGateway:
    def __init__(self, api: FakeApi, running: bool = True):
        self.api = api
        self.is_running = running
        self.owned = False
        self.events: list[str] = []
        self.start_error: Exception | None = None
        self.memory = 100 * 1024 * 1024

    def running(self):
        return self.is_running

    def answering(self):
        return self.is_running

    def start(self):
        self.events.append("start")
        if self.start_error:
            raise self.start_error
        self.is_running = True
        self.owned = True
        if self.api.kind is K.NOT_RUNNING:
            self.api.kind = K.NO_SESSION

    def stop(self):
        self.events.append("stop")
        self.is_running = False
        self.api.kind = K.NOT_RUNNING

    def restart(self):
        self.events.append("restart")
        self.is_running = True
        self.api.kind = K.NO_SESSION

    def pid(self):
        return 4242 if self.is_running else None

    def memory_bytes(self):
        return self.memory if self.is_running else None


@dataclass(frozen=True)
class FakeResult:
    page_variant: str = "current"
    second_factor: str | None = None
    steps: tuple[str, ...] = ("form", "success")
    duration_s: float = 1.0


class FakeLogin:
    """Each call pops an outcome: "ok" (authenticates), "ok-silent", or an error."""

    def __init__(self, api: FakeApi):
        self.api = api
        self.outcomes: list = []
        self.default = "ok"
        self.calls = 0

    def __call__(self, notify):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else self.default
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "ok":
            self.api.kind = K.AUTHENTICATED
        elif outcome == "ok-silent":
            self.api.kind = K.NOT_AUTHENTICATED
        return FakeResult()


@dataclass
class Rig:
    watcher: Watcher
    api: FakeApi
    gateway: FakeGateway
    login: FakeLogin
    clock: FakeClock
    budget: FailureBudget
    settings: Settings

    def run(self, steps: int = 1) -> None:
        """Run `steps` loop turns, jumping the clock to each next step."""
        for _ in range(steps):
            self.clock.now = max(self.clock.now, self.watcher._next_step)
            self.watcher.run_once(block=False)

    def run_until(self, predicate, limit: int = 500) -> int:
        for turn in range(limit):
            if predicate(self):
                return turn
            self.run()
        raise AssertionError(f"never reached; state {self.watcher.state.name}")

    def until_state(self, *states, limit: int = 500) -> int:
        return self.run_until(lambda rig: rig.watcher.state in states, limit)


@pytest.fixture
def make_rig(tmp_path):
    def make(**overrides) -> Rig:
        values = dict(
            gateway_dir=tmp_path / "gw",
            outputs_dir=tmp_path / "out",
            maintenance_interval=10.0,
            status_interval=0.0,
            backoff_min=60.0,
            backoff_max=600.0,
            auth_settle_timeout=5.0,
            transient_grace=30.0,
            gateway_startup=5.0,
            compete_max_per_hour=2,
        )
        values.update(overrides)
        settings = Settings(**values)
        clock = FakeClock()
        api = FakeApi()
        gateway = FakeGateway(api)
        login = FakeLogin(api)
        budget = FailureBudget(settings.budget_path, settings.max_failed_auth)
        watcher = Watcher(
            settings,
            api=api,
            gateway=gateway,
            budget=budget,
            login=login,
            preflight=lambda: "Chromium 1.0",
            clock=clock,
            wall=clock.wall,
            spawn=lambda job: job(),
        )
        return Rig(watcher, api, gateway, login, clock, budget, settings)

    return make
