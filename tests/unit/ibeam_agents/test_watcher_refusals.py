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
