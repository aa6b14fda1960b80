"""Refusals that do not say why: the gateway is asked before they count."""

from __future__ import annotations

import pytest

from ibeam_agents.errors import (
    CredentialsRejected,
    GatewayTransientError,
    SecondFactorFailed,
)
from ibeam_agents.login import LoginRefused
from ibeam_agents.twofa import CommandSource
from tests.unit.ibeam_agents.test_login import (
    CODE,
    FORM,
    PUSH,
    FakeClock,
    _totp,
    banner,
    run,
    submits,
)


class Probe:
    """The gateway check: counts its calls, raises while the gateway is down."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.down:
            raise GatewayTransientError("the gateway answered HTTP 503")


@pytest.fixture
def code_source(tmp_path):
    script = tmp_path / "code.sh"
    script.write_text("#!/bin/sh\necho 123456\n")
    script.chmod(0o755)
    return CommandSource(str(script), 5)


def _flow(screens, probe, **kwargs):
    flow, page = run(screens, **kwargs)
    flow.probe = probe
    return flow, page


def test_refusal_bare_error_at_code_check_during_outage_is_a_gateway_error(
    code_source,
):
    probe = Probe(down=True)
    flow, page = _flow(
        [FORM, CODE, banner("ERROR", CODE)], probe, second_factor=code_source
    )
    with pytest.raises(GatewayTransientError):
        flow.run()
    assert probe.calls == 1


def test_refusal_bare_error_at_code_check_is_ambiguous(code_source):
    probe = Probe()
    flow, page = _flow(
        [FORM, CODE, banner("ERROR", CODE)], probe, second_factor=code_source
    )
    with pytest.raises(SecondFactorFailed) as info:
        flow.run()
    assert info.value.ambiguous and info.value.spends_budget
    assert probe.calls == 1


def test_refusal_incorrect_code_is_explicit_and_asks_nothing(code_source):
    probe = Probe(down=True)
    refused = banner("Incorrect security code", CODE)
    flow, page = _flow([FORM, CODE, refused], probe, second_factor=code_source)
    with pytest.raises(SecondFactorFailed) as info:
        flow.run()
    assert not info.value.ambiguous
    assert probe.calls == 0


def test_refusal_totp_bare_error_during_outage_is_not_retried():
    clock = FakeClock()
    probe = Probe(down=True)
    flow, page = _flow(
        [FORM, CODE, banner("ERROR", CODE)],
        probe,
        clock=clock,
        second_factor=_totp(clock),
    )
    with pytest.raises(GatewayTransientError):
        flow.run()
    assert page.actions.count(("type", "code_input")) == 1  # no second code


def test_refusal_push_without_reason_is_ambiguous():
    probe = Probe()
    flow, page = _flow([FORM, banner("ERROR", PUSH)], probe)
    with pytest.raises(SecondFactorFailed) as info:
        flow.run()
    assert info.value.ambiguous and probe.calls == 1


@pytest.mark.parametrize(
    ("text", "ambiguous"),
    [
        ("Invalid username password combination", False),
        ("Login failed", True),
    ],
)
def test_refusal_credentials_banner_is_ambiguous_only_without_a_reason(text, ambiguous):
    probe = Probe()
    flow, page = _flow([FORM, banner(text, FORM)], probe)
    with pytest.raises(CredentialsRejected) as info:
        flow.run()
    assert info.value.ambiguous is ambiguous
    assert probe.calls == (1 if ambiguous else 0)
    assert submits(page) == 1


def test_refusal_unknown_banner_is_always_ambiguous():
    flow, page = _flow([FORM, banner("Something odd", FORM)], Probe())
    with pytest.raises(LoginRefused) as info:
        flow.run()
    assert info.value.ambiguous and info.value.spends_budget
