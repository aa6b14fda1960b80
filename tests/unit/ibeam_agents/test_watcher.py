"""The watcher's state machine, driven step by step with fakes and a fake clock."""

from __future__ import annotations

import logging
import threading

import pytest

from ibeam_agents import errors
from ibeam_agents.budget import FailureBudget
from ibeam_agents.schedule import parse_schedule
from ibeam_agents.watcher import State
from tests.unit.ibeam_agents.conftest import K

S = State


def _started(rig, kind=K.NO_SESSION, running=False):
    """Begin with a running gateway in state kind, or with no gateway at all."""
    rig.api.kind = kind if running else K.NOT_RUNNING
    rig.gateway.is_running = running
    rig.watcher.begin()
    return rig


# -- start-up -----------------------------------------------------------------


def test_watcher_cold_start_starts_gateway_and_logs_in(make_rig):
    rig = _started(make_rig())
    rig.until_state(S.READY)
    assert rig.gateway.events == ["start"]
    assert rig.login.calls == 1
    assert rig.budget.spent == 0
    assert rig.budget.state().pending is None
    snap = rig.watcher.snapshot()
    assert snap["ready"] and snap["live"]
    assert snap["last_login"]["outcome"] == "succeeded"


def test_watcher_finds_authenticated_gateway_and_does_not_log_in(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    assert rig.gateway.events == []
    assert rig.login.calls == 0


def test_watcher_never_starts_a_second_gateway(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.until_state(S.READY)
    assert "start" not in rig.gateway.events


def test_watcher_login_runs_as_soon_as_gateway_answers(make_rig):
    rig = _started(make_rig())
    turns = rig.until_state(S.LOGGING_IN)
    assert turns <= 4
    assert rig.clock.now == 5000.0  # no waiting at all in between


def test_watcher_start_inactive_waits_for_activate(make_rig):
    rig = make_rig(start_active=False)
    rig.watcher.begin()
    rig.run(5)
    assert rig.watcher.state is S.PAUSED
    assert rig.gateway.events == [] and rig.login.calls == 0
    rig.watcher.post("activate")
    rig.until_state(S.READY)


def test_watcher_maintain_only_waits_one_interval(make_rig):
    rig = make_rig()
    rig.api.kind = K.AUTHENTICATED
    rig.watcher.begin(maintain_only=True)
    rig.until_state(S.READY)
    assert rig.clock.now == 5010.0


# -- maintenance ----------------------------------------------------------------


def test_watcher_ready_tickles_every_interval_and_logs_nothing(make_rig, caplog):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    before = rig.api.calls.count("tickle")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ibeam_agents.watcher"):
        start = rig.clock.now
        rig.run(10)
    assert rig.api.calls.count("tickle") == before + 10
    assert rig.clock.now == pytest.approx(start + 100)
    assert not [r for r in caplog.records if "->" in r.getMessage()]


def test_watcher_renews_sso_when_it_nears_expiry(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.run(2)
    first = rig.api.calls.count("validate")
    assert first == 1  # once at the start, then only every few minutes
    rig.api.sso_expires_ms = 25_000
    rig.run(1)
    assert rig.api.calls.count("validate") == first + 1


def test_watcher_notices_lost_session_within_one_interval(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.NOT_AUTHENTICATED
    rig.run(1)
    assert rig.watcher.state is S.REAUTHENTICATING
    assert not rig.watcher.snapshot()["ready"]


# -- the ladder ---------------------------------------------------------------


def test_watcher_reauthenticate_fixes_without_login(make_rig):
    rig = _started(make_rig(), K.NOT_AUTHENTICATED, running=True)
    rig.api.reauth_fixes = True
    rig.until_state(S.READY)
    assert rig.api.calls.count("reauthenticate") == 1
    assert rig.login.calls == 0


def test_watcher_ladder_reauth_then_logout_and_login(make_rig):
    rig = _started(make_rig(), K.NOT_AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    assert rig.api.calls.count("reauthenticate") == 2
    assert "logout" in rig.api.calls
    assert rig.login.calls == 1
    assert rig.gateway.events == []


def test_watcher_never_authenticated_climbs_to_backoff_then_halts(make_rig):
    rig = _started(make_rig(), K.NOT_AUTHENTICATED, running=True)
    rig.login.default = "ok-silent"
    rig.until_state(S.BACKING_OFF)
    assert rig.login.calls == 2
    assert rig.gateway.events == ["restart"]
    assert rig.budget.spent == 2
    assert rig.watcher.snapshot()["alert"]
    rig.until_state(S.HALTED)
    assert rig.login.calls == 3
    rig.run(20)
    assert rig.login.calls == 3
    assert not rig.watcher.snapshot()["live"]


def test_watcher_nudges_with_ssodh_init_while_waiting(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.default = "ok-silent"
    rig.until_state(S.BACKING_OFF, S.RESTARTING, S.REAUTHENTICATING)
    assert rig.api.calls.count("init_session") == 1


# -- the failure budget -------------------------------------------------------


def test_watcher_bad_password_stops_at_the_budget(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.default = errors.CredentialsRejected(
        "Invalid username password combination"
    )
    rig.until_state(S.HALTED)
    assert rig.login.calls == 3
    rig.run(50)
    assert rig.login.calls == 3
    snap = rig.watcher.snapshot()
    assert not snap["live"] and "reset-failures" in snap["alert"]
    assert "the last CredentialsRejected" in snap["alert"]
    assert "check IBEAM_ACCOUNT and IBEAM_PASSWORD" in snap["alert"]
    assert snap["failures"]["budget"]["spent"] == 3


def test_watcher_spent_budget_survives_a_restart(make_rig, tmp_path):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.default = errors.CredentialsRejected("bad")
    rig.until_state(S.HALTED)
    again = _started(make_rig(), K.NO_SESSION, running=True)
    again.until_state(S.HALTED)
    assert again.login.calls == 0


def test_watcher_resumes_after_operator_reset(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.outcomes = [errors.CredentialsRejected("bad")] * 3
    rig.until_state(S.HALTED)
    FailureBudget(rig.settings.budget_path, 3).reset("test")
    turns = rig.until_state(S.READY)
    assert turns <= 6
    assert rig.login.calls == 4


def test_watcher_backs_off_exponentially_between_budgeted_failures(make_rig):
    rig = _started(make_rig(max_failed_auth=5), K.NO_SESSION, running=True)
    rig.login.default = errors.SecondFactorFailed("push expired")
    waits = []
    for _ in range(3):
        rig.until_state(S.BACKING_OFF)
        waits.append(rig.watcher._next_step - rig.clock.now)
        rig.run(1)
    assert waits == [60.0, 120.0, 240.0]


def test_watcher_account_locked_is_fatal(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.default = errors.AccountLocked("account locked")
    rig.until_state(S.HALTED)
    rig.run(20)
    assert rig.login.calls == 1
    assert rig.budget.state().locked


@pytest.mark.parametrize(
    "error",
    [
        errors.BrowserUnavailable("no chromium"),
        errors.PageNotRecognised("maintenance page"),
        errors.LoginTimeout("slow"),
        errors.WrongTradingMode("paper user"),
        errors.GatewayUnreachable("hang"),
        RuntimeError("bug in the login"),
    ],
)
def test_watcher_free_failures_never_spend_but_back_off(make_rig, error):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.outcomes = [error]
    rig.until_state(S.BACKING_OFF)
    assert rig.budget.spent == 0
    assert rig.budget.state().pending is None
    assert rig.watcher._next_step - rig.clock.now == 60.0
    rig.until_state(S.READY)
    assert rig.login.calls == 2


def test_watcher_missing_second_factor_halts_without_spending(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.default = errors.SecondFactorUnavailable("a code is asked")
    rig.until_state(S.HALTED)
    rig.run(10)
    assert rig.login.calls == 1
    assert rig.budget.spent == 0


def test_watcher_preflight_failure_backs_off_without_login(make_rig):
    rig = make_rig()

    def broken():
        raise errors.BrowserUnavailable("chromedriver 1 does not match chromium 2")

    rig.watcher._preflight = broken
    rig.api.kind = K.NOT_RUNNING
    rig.gateway.is_running = False
    rig.watcher.begin()
    rig.until_state(S.BACKING_OFF)
    assert rig.login.calls == 0
    assert rig.budget.spent == 0
    assert "browser unavailable" in rig.watcher.snapshot()["alert"]


# -- transient errors, configuration errors, competing --------------------------


def test_watcher_transient_errors_wait_without_login_or_restart(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.TRANSIENT
    rig.run(1)
    assert rig.watcher.state is S.DEGRADED
    assert rig.watcher.snapshot()["degraded"]
    rig.run(2)
    assert rig.watcher.state is S.DEGRADED
    rig.api.kind = K.AUTHENTICATED
    rig.run(1)
    assert rig.watcher.state is S.READY
    assert rig.login.calls == 0 and rig.gateway.events == []


def test_watcher_restarts_gateway_after_the_transient_grace(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.UNREACHABLE
    rig.until_state(S.RESTARTING)
    assert rig.clock.now - 5000 >= 30
    rig.until_state(S.READY)
    assert rig.gateway.events == ["restart"]
    assert rig.login.calls == 1


def test_watcher_access_denied_never_logs_in(make_rig, caplog):
    rig = _started(make_rig(), K.ACCESS_DENIED, running=True)
    rig.run(30)
    assert rig.watcher.state is S.MISCONFIGURED
    assert rig.login.calls == 0
    alert = rig.watcher.snapshot()["alert"]
    assert "ips.allow" in alert and "conf.yaml" in alert
    assert rig.watcher._next_step - rig.clock.now == 60.0


def test_watcher_rate_limit_backs_off(make_rig):
    rig = _started(make_rig(), K.RATE_LIMITED, running=True)
    rig.api.retry_after = 42.0
    rig.until_state(S.BACKING_OFF)
    assert rig.watcher._next_step - rig.clock.now == 42.0


def test_watcher_takes_back_a_competing_session(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.COMPETING
    rig.api.reauth_fixes = True
    rig.run(1)
    assert not rig.watcher.snapshot()["ready"]
    rig.until_state(S.READY)
    assert "logout" in rig.api.calls
    assert rig.login.calls == 0


def test_watcher_takes_back_with_ssodh_init_first(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.COMPETING
    rig.api.init_takes_back = True
    rig.run(1)
    rig.until_state(S.READY)
    assert "init_session" in rig.api.calls
    assert "logout" not in rig.api.calls
    assert "reauthenticate" not in rig.api.calls
    assert rig.login.calls == 0


def test_watcher_take_back_falls_back_to_logout_and_reauthenticate(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.COMPETING
    rig.api.reauth_fixes = True
    rig.run(1)
    rig.until_state(S.READY)
    calls = rig.api.calls
    first = calls.index("init_session")
    assert calls.index("logout", first) < calls.index("reauthenticate", first)
    # one take-back, both ways: counted once against the hourly limit
    assert len(rig.watcher._compete_times) == 1


def test_watcher_quick_reads_between_maintenance_checks(make_rig):
    rig = _started(make_rig(status_interval=2.0), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.run(1)
    ticks, reads = rig.api.calls.count("tickle"), rig.api.calls.count("auth_status")
    start = rig.clock.now
    rig.run_until(lambda r: r.clock.now >= start + 20)
    # a tickle every 10 s, an auth/status read every 2 s in between
    assert rig.api.calls.count("tickle") - ticks == 2
    assert rig.api.calls.count("auth_status") - reads == 8


def test_watcher_quick_read_notices_a_lost_session_within_seconds(make_rig):
    rig = _started(make_rig(status_interval=2.0), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.run(1)
    lost_at = rig.clock.now
    rig.api.kind = K.NO_SESSION
    rig.run_until(lambda r: r.watcher.state is not S.READY)
    assert rig.watcher.state is S.LOGGING_IN
    assert rig.clock.now - lost_at <= 2.0


def test_watcher_outage_is_tried_again_every_status_interval(make_rig):
    """A gateway that supervisord restarted after a crash is logged in within
    seconds of answering, not a maintenance interval later."""
    rig = _started(make_rig(status_interval=2.0), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.kind = K.UNREACHABLE
    rig.run_until(lambda r: r.watcher.state is S.DEGRADED)
    assert rig.watcher._next_step - rig.clock.now == 2.0
    back_at = rig.clock.now
    rig.api.kind = K.AUTHENTICATED
    rig.run_until(lambda r: r.watcher.state is S.READY)
    assert rig.clock.now - back_at <= 2.0
    assert rig.gateway.events == []


def test_watcher_competing_take_backs_are_bounded_per_hour(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.api.reauth_fixes = True
    for _ in range(2):
        rig.api.kind = K.COMPETING
        rig.run(1)
        rig.until_state(S.READY)
    rig.api.kind = K.COMPETING
    rig.run(10)
    assert rig.watcher.state is S.TAKING_BACK
    assert rig.api.calls.count("reauthenticate") == 2
    assert not rig.watcher.snapshot()["ready"]
    rig.clock.now += 3600
    rig.until_state(S.READY)


def test_watcher_restarts_a_dead_gateway(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.gateway.is_running = False
    rig.api.kind = K.NOT_RUNNING
    rig.until_state(S.STARTING)
    rig.until_state(S.READY)
    assert rig.gateway.events == ["start"]


def test_watcher_port_held_by_another_process_is_not_a_loop(make_rig):
    rig = make_rig()
    rig.api.kind = K.NOT_RUNNING
    rig.gateway.is_running = False
    rig.gateway.start_error = errors.PortInUse("port 5000 is already held by pid 99")
    rig.watcher.begin()
    rig.until_state(S.MISCONFIGURED)
    start = rig.clock.now
    rig.run(10)
    assert rig.clock.now - start >= 5 * 60
    assert len(rig.gateway.events) <= 6
    assert "pid 99" in rig.watcher.snapshot()["alert"]


# -- planned restarts -----------------------------------------------------------


def test_watcher_restarts_before_the_memory_limit(make_rig):
    rig = _started(make_rig(gateway_memory_limit_mb=100), K.AUTHENTICATED, running=True)
    rig.gateway.memory = 50 * 1024 * 1024
    rig.until_state(S.READY)
    rig.run(3)
    assert rig.gateway.events == []
    rig.gateway.memory = 95 * 1024 * 1024
    rig.until_state(S.RESTARTING)
    rig.gateway.memory = 50 * 1024 * 1024
    rig.until_state(S.READY)
    assert rig.gateway.events == ["restart"]


def test_watcher_planned_restart_once_per_occurrence(make_rig):
    schedule = parse_schedule("12:00", "UTC")
    rig = _started(make_rig(restart_schedule=schedule), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    next_at = rig.watcher.planner.next_restart.timestamp()
    rig.clock.now = next_at - 1_800_000_000.0 + 1
    rig.until_state(S.RESTARTING)
    rig.until_state(S.READY)
    rig.run(30)
    assert rig.gateway.events == ["restart"]


# -- commands and shutdown ----------------------------------------------------


def test_watcher_deactivate_logs_out_and_pauses(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    rig.watcher.post("deactivate")
    rig.run(1)
    assert rig.watcher.state is S.PAUSED
    assert rig.api.calls[-1] == "logout"
    calls = len(rig.api.calls)
    rig.run(10)
    assert len(rig.api.calls) == calls
    rig.api.reauth_fixes = True  # logout keeps SSO; reauthenticate brings it back
    rig.watcher.post("activate")
    rig.until_state(S.READY)
    assert rig.login.calls == 0


def test_watcher_sigterm_logs_out_and_stops_owned_gateway(make_rig):
    rig = _started(make_rig())
    rig.until_state(S.READY)
    rig.watcher.post("term")
    code = rig.watcher.run()
    assert code == 0
    assert rig.watcher.state is S.STOPPING
    assert "logout" in rig.api.calls
    assert rig.gateway.events == ["start", "stop"]


def test_watcher_under_supervisor_does_not_stop_the_gateway(make_rig):
    rig = _started(make_rig(supervisor_url="unix:///tmp/x.sock"))
    rig.until_state(S.READY)
    rig.watcher.post("term")
    assert rig.watcher.run() == 0
    assert "logout" in rig.api.calls
    assert "stop" not in rig.gateway.events


def test_watcher_no_logout_without_a_session(make_rig):
    rig = _started(make_rig(), K.ACCESS_DENIED, running=True)
    rig.until_state(S.MISCONFIGURED)
    rig.watcher.post("int")
    assert rig.watcher.run() == 0
    assert "logout" not in rig.api.calls


def test_watcher_stays_responsive_during_a_slow_login(make_rig):
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    release = threading.Event()
    original = rig.login

    def slow(notify):
        notify("push_waiting", "approve the IB Key push")
        release.wait(10)
        return original(notify)

    rig.watcher._login = slow
    rig.watcher._spawn = lambda job: threading.Thread(target=job, daemon=True).start()
    rig.until_state(S.LOGGING_IN)
    rig.run(5)
    snap = rig.watcher.snapshot()
    assert snap["state"] == "LOGGING_IN" and snap["live"]
    assert "push_waiting" in snap["notice"]
    release.set()
    rig.run_until(lambda r: r.watcher.state is S.READY, limit=2000)


def test_watcher_metrics_follow_state(make_rig):
    rig = _started(make_rig())
    rig.until_state(S.READY)
    text = rig.watcher.metrics_text().decode()
    assert 'ibeam_watcher_state{ibeam_watcher_state="READY"} 1.0' in text
    assert 'ibeam_logins_total{outcome="succeeded"} 1.0' in text
    assert "ibeam_failure_budget_limit 3.0" in text
    assert "ibeam_seconds_since_last_good_check" in text
    assert "ibeam_ready 1.0" in text


def test_watcher_status_snapshot_shape(make_rig):
    rig = _started(make_rig(), K.AUTHENTICATED, running=True)
    rig.until_state(S.READY)
    snap = rig.watcher.snapshot()
    for key in (
        "state",
        "status",
        "last_check",
        "last_good_check",
        "last_login",
        "failures",
        "next_action",
        "next_action_at",
        "alert",
        "degraded",
    ):
        assert key in snap
    assert snap["next_action"] == "tickle"
    assert snap["status"]["kind"] == "AUTHENTICATED"


def test_watcher_login_without_session_logs_in_again_then_backs_off(make_rig):
    """A login that leaves no session spends nothing; a repeat backs off."""
    rig = _started(make_rig(), K.NO_SESSION, running=True)
    rig.login.outcomes = ["no-change", "no-change", "ok"]
    seen = []
    rig.run_until(lambda r: seen.append(r.watcher.state) or r.login.calls == 2)
    assert S.BACKING_OFF not in seen  # the first time: at once
    rig.until_state(S.BACKING_OFF)
    assert rig.login.calls == 2 and rig.budget.spent == 0
    rig.until_state(S.READY)
    assert rig.login.calls == 3
    assert rig.budget.spent == 0


# -- trading mode -----------------------------------------------------------------


def test_watcher_checks_the_mode_right_after_a_login(make_rig):
    rig = _started(make_rig(trading_mode="paper"), K.NO_SESSION, running=True)
    rig.api.validate_paper = True
    rig.until_state(S.READY)
    assert "validate" in rig.api.calls
    assert rig.watcher.snapshot()["ready"]


def test_watcher_session_in_the_other_mode_logs_out_and_halts(make_rig):
    rig = _started(make_rig(trading_mode="live"), K.NO_SESSION, running=True)
    rig.api.validate_paper = True
    rig.until_state(S.HALTED)
    assert "logout" in rig.api.calls[rig.api.calls.index("validate") :]
    alert = rig.watcher.snapshot()["alert"]
    assert "IBEAM_TRADING_MODE=paper" in alert
    logins = rig.login.calls
    rig.run(20)
    assert rig.login.calls == logins
    assert rig.watcher.state is S.HALTED


def test_watcher_unknown_login_type_is_not_a_mode_error(make_rig):
    rig = _started(make_rig(trading_mode="paper"), K.NO_SESSION, running=True)
    rig.api.validate_paper = None
    rig.until_state(S.READY)
    rig.run(40)
    assert rig.watcher.state is S.READY
