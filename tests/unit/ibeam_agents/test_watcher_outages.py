"""The watcher against outages and competing sessions that come at awkward times:
refused connections while the gateway runs, errors right after a login, another
platform grabbing the session during the settle wait, a stolen port, memory that
grows faster than the checks come."""

from __future__ import annotations

from ibeam_agents import errors
from ibeam_agents.watcher import State
from tests.unit.ibeam_agents.conftest import K

S = State


def _ready(rig):
    rig.api.kind = K.AUTHENTICATED
    rig.gateway.is_running = True
    rig.watcher.begin()
    rig.until_state(S.READY)
    return rig


def test_watcher_refused_while_gateway_runs_is_an_outage(make_rig):
    rig = _ready(make_rig())
    rig.api.kind = K.NOT_RUNNING  # refused, but the process is alive
    rig.run(1)
    assert rig.watcher.state is S.DEGRADED
    rig.run(2)
    assert rig.watcher.state is S.DEGRADED
    assert rig.gateway.events == [] and rig.login.calls == 0
    rig.api.kind = K.NO_SESSION  # back, with the session gone: one login
    rig.until_state(S.READY)
    assert rig.login.calls == 1 and rig.gateway.events == []


def test_watcher_refused_past_the_grace_restarts_once(make_rig):
    rig = _ready(make_rig())
    rig.api.kind = K.NOT_RUNNING
    rig.until_state(S.RESTARTING)
    assert rig.clock.now - 5000 >= 30
    assert rig.login.calls == 0
    metrics = rig.watcher.metrics_text().decode()
    rig.until_state(S.READY)
    assert rig.gateway.events == ["restart"]
    assert "ibeam_gateway_restarts_total" in metrics


def test_watcher_errors_right_after_login_are_not_a_failed_login(make_rig):
    rig = make_rig()
    rig.api.kind = K.NO_SESSION
    rig.watcher.begin()
    rig.login.outcomes = ["error-window"]

    def login(notify):
        rig.login.calls += 1
        rig.api.kind = K.TRANSIENT  # 503 from the first poll on
        return None

    rig.watcher._login = login
    rig.until_state(S.DEGRADED)
    assert rig.budget.spent == 0
    assert rig.budget.state().pending is None
    assert "NeverAuthenticated" not in rig.watcher.snapshot()["failures"]["by_class"]
    rig.api.kind = K.AUTHENTICATED
    rig.until_state(S.READY)
    assert rig.login.calls == 1 and rig.gateway.events == []


def test_watcher_login_confirmed_later_refills_the_budget(make_rig):
    rig = make_rig()
    rig.api.kind = K.NO_SESSION
    rig.budget.spend("CredentialsRejected")
    rig.watcher.begin()

    def login(notify):
        rig.api.kind = K.TRANSIENT
        return None

    rig.watcher._login = login
    rig.until_state(S.DEGRADED)
    assert rig.budget.spent == 1
    rig.api.kind = K.AUTHENTICATED
    rig.until_state(S.READY)
    assert rig.budget.spent == 0


def test_watcher_competing_while_awaiting_auth_is_a_counted_take_back(make_rig):
    rig = make_rig()
    rig.api.kind = K.NO_SESSION
    rig.watcher.begin()

    def login(notify):
        rig.api.kind = K.COMPETING  # another platform holds it right away
        return None

    rig.watcher._login = login
    rig.api.reauth_fixes = True
    rig.until_state(S.TAKING_BACK)
    rig.until_state(S.READY)
    assert rig.api.calls.count("logout") == 1
    assert rig.watcher._compete_times and len(rig.watcher._compete_times) == 1
    assert rig.budget.spent == 0


def test_watcher_port_stolen_while_gateway_runs_is_reported(make_rig):
    rig = make_rig()
    rig.api.kind = K.NO_SESSION
    rig.gateway.is_running = True
    holder = ["pid 77 (nc)"]
    rig.gateway.foreign_listener = lambda: holder[0]
    rig.gateway.listen_port = 5055
    rig.watcher.begin()
    rig.until_state(S.MISCONFIGURED)
    alert = rig.watcher.snapshot()["alert"]
    assert "port 5055" in alert and "pid 77 (nc)" in alert
    rig.run(10)
    assert rig.watcher.state is S.MISCONFIGURED
    assert rig.gateway.events == [] and rig.login.calls == 0
    holder[0] = None
    rig.until_state(S.READY)
    assert rig.watcher.snapshot()["alert"] is None


def test_watcher_restarts_early_when_memory_grows_fast(make_rig):
    rig = _ready(make_rig(gateway_memory_limit_mb=1000))
    mib = 1024 * 1024
    rig.gateway.memory = 500 * mib
    rig.run(1)
    rig.gateway.memory = 700 * mib  # +200 MiB in one 10 s interval
    rig.run(1)
    assert rig.watcher.state is S.RESTARTING
    assert "grows" in rig.watcher._reason
    rig.until_state(S.READY)
    metrics = rig.watcher.metrics_text().decode()
    assert 'ibeam_gateway_restarts_total{reason="memory"} 1.0' in metrics


def test_watcher_slow_memory_growth_waits_for_the_share(make_rig):
    rig = _ready(make_rig(gateway_memory_limit_mb=1000))
    mib = 1024 * 1024
    for used in (500, 510, 520, 530):
        rig.gateway.memory = used * mib
        rig.run(1)
    assert rig.watcher.state is S.READY and rig.gateway.events == []


def test_watcher_port_error_from_start_waits_quietly(make_rig, caplog):
    rig = make_rig()
    rig.api.kind = K.NOT_RUNNING
    rig.gateway.is_running = False
    rig.gateway.start_error = errors.PortInUse("port 5000 is already held by pid 9")
    rig.gateway.foreign_listener = lambda: "pid 9 (python)"
    rig.watcher.begin()
    rig.until_state(S.MISCONFIGURED)
    caplog.clear()
    rig.run(20)
    assert rig.gateway.events == ["start"]
    assert not [r for r in caplog.records if "->" in r.getMessage()]
