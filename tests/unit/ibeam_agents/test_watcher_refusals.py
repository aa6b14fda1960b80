"""Budget decisions that depend on the gateway: a refusal that does not say why
(a bare "ERROR" banner) while the gateway is in trouble, and a session that ends
while the brokerage session settles after a login."""

from __future__ import annotations

import pytest

from ibeam_agents import errors
from ibeam_agents.watcher import State
from tests.unit.ibeam_agents.conftest import K

S = State


def _failing_login(rig, error, *, then=K.TRANSIENT):
    """A login that fails with error, leaving the gateway answering `then`."""

    def login(notify):
        rig.login.calls += 1
        rig.api.kind = then
        raise error

    rig.watcher._login = login
    return rig


def _logging_in(rig):
    rig.api.kind = K.NO_SESSION
    rig.watcher.begin()
    return rig


def test_watcher_ambiguous_refusal_during_outage_spends_nothing(make_rig):
    rig = _logging_in(make_rig())
    error = errors.SecondFactorFailed("the second factor failed: 'ERROR'")
    error.ambiguous = True
    _failing_login(rig, error)
    rig.until_state(S.BACKING_OFF)
    assert rig.budget.spent == 0
    assert rig.budget.state().pending is None
    reason = rig.watcher.snapshot()["reason"]
    assert "while the gateway answered TRANSIENT" in reason and "not counted" in reason
    assert rig.watcher.snapshot()["alert"] is None


@pytest.mark.parametrize("kind", [K.UNREACHABLE, K.NOT_RUNNING])
def test_watcher_ambiguous_refusal_without_answer_spends_nothing(make_rig, kind):
    rig = _logging_in(make_rig())
    _failing_login(rig, errors.SecondFactorFailed("x", ambiguous=True), then=kind)
    rig.until_state(S.BACKING_OFF)
    assert rig.budget.spent == 0


def test_watcher_ambiguous_refusal_with_gateway_fine_spends(make_rig):
    rig = _logging_in(make_rig())
    error = errors.SecondFactorFailed("the second factor failed: 'ERROR'")
    error.ambiguous = True
    _failing_login(rig, error, then=K.NO_SESSION)
    rig.until_state(S.BACKING_OFF)
    assert rig.budget.spent == 1


def test_watcher_explicit_refusal_spends_even_during_outage(make_rig):
    rig = _logging_in(make_rig())
    _failing_login(rig, errors.CredentialsRejected("Invalid username password"))
    rig.until_state(S.BACKING_OFF)
    assert rig.budget.spent == 1


def test_watcher_gateway_error_from_the_login_backs_off_free(make_rig):
    rig = _logging_in(make_rig())
    _failing_login(rig, errors.GatewayTransientError("the gateway answered 503"))
    rig.until_state(S.BACKING_OFF)
    assert rig.budget.spent == 0 and rig.budget.state().pending is None
    rig.api.kind = K.NO_SESSION
    rig.watcher._login = rig.login
    rig.until_state(S.READY)


@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        (K.TRANSIENT, errors.GatewayTransientError),
        (K.UNREACHABLE, errors.GatewayUnreachable),
        (K.NOT_RUNNING, errors.GatewayNotRunning),
        (K.NO_SESSION, None),
        (K.AUTHENTICATED, None),
    ],
)
def test_watcher_gateway_check_raises_only_for_outages(make_rig, kind, raised):
    rig = make_rig()
    rig.api.kind = kind
    if raised is None:
        rig.watcher.gateway_check()
    else:
        with pytest.raises(raised):
            rig.watcher.gateway_check()


# -- a session lost while it settles after a login -------------------------------


def test_watcher_session_lost_while_settling_logs_in_again_free(make_rig):
    rig = _logging_in(make_rig())
    rig.login.outcomes = ["no-change", "ok"]  # the session ends, then a good login
    rig.until_state(S.READY)
    assert rig.login.calls == 2
    assert rig.budget.spent == 0
    snap = rig.watcher.snapshot()
    assert "NeverAuthenticated" not in snap["failures"]["by_class"]


def test_watcher_session_lost_again_and_again_backs_off_with_alert(make_rig):
    rig = _logging_in(make_rig())
    rig.login.default = "no-change"
    rig.run_until(lambda r: r.login.calls == 4, limit=2000)
    assert rig.watcher.snapshot()["failures"]["budget"]["spent"] == 0
    assert rig.watcher.snapshot()["alert"]
    start = rig.clock.now
    rig.run_until(lambda r: r.login.calls == 6, limit=2000)
    # backoffs of 60, 120, 240 s ... between the later logins: no stream
    assert rig.clock.now - start >= 60 + 120


def test_watcher_outage_while_settling_then_unauthenticated_spends_nothing(make_rig):
    rig = _logging_in(make_rig())

    def login(notify):
        rig.login.calls += 1
        rig.api.kind = K.TRANSIENT  # a 5xx window right after the login
        return None

    rig.watcher._login = login
    rig.until_state(S.AWAITING_AUTH)
    rig.run(3)
    rig.api.kind = K.NOT_AUTHENTICATED  # back, but never authenticated
    rig.run_until(lambda r: r.watcher.state is not S.AWAITING_AUTH)
    assert rig.budget.spent == 0
    assert rig.watcher.state is S.REAUTHENTICATING  # the ladder, not a new login
    assert rig.login.calls == 1


def test_watcher_session_present_and_unauthenticated_throughout_spends(make_rig):
    """S19's shape is still a failed login."""
    rig = _logging_in(make_rig())
    rig.login.outcomes = ["ok-silent"]
    rig.run_until(lambda r: r.watcher.state is S.REAUTHENTICATING)
    assert rig.budget.spent == 1
    assert "NeverAuthenticated" in rig.watcher.snapshot()["failures"]["by_class"]
