"""Second-factor knobs added for the login scenarios: reject_next_codes (S10) and
the code input variant no keeper lists (S07)."""

from __future__ import annotations

import pytest

from gateway_sim import faults, login
from tests.unit.gateway_sim.test_login import SECRET, attempt, code_at


def test_reject_next_codes_refuses_right_codes_then_accepts(make_sim, clock):
    sim = make_sim(
        {"user": "t", "password": "pw", "second_factor": "totp", "totp_secret": SECRET}
    )
    sim.set_faults({"reject_next_codes": 1})
    flow, _ = attempt(sim, "t", "pw")
    right = {"action": "code", "code": code_at(clock.wall_time)}
    assert login.handle(sim, flow, right) == {
        "step": "code_error",
        "message": login.BAD_CODE,
    }
    assert sim.faults["reject_next_codes"] == 0
    assert login.handle(sim, flow, right)["step"] == "success"
    assert sim.counters["second_factor_failures"] == 1


def test_reject_next_codes_leaves_wrong_codes_to_count_as_usual(make_sim):
    sim = make_sim({"user": "s", "password": "pw", "second_factor": "sms"})
    sim.set_faults({"reject_next_codes": 1})
    flow, _ = attempt(sim, "s", "pw")
    wrong = {"action": "code", "code": "12"}
    assert login.handle(sim, flow, wrong)["step"] == "code_error"
    assert sim.faults["reject_next_codes"] == 1  # only right codes use it up


@pytest.mark.parametrize("value", [-1, 1.5, "2", True])
def test_reject_next_codes_must_be_a_count(value):
    with pytest.raises(faults.FaultError, match="reject_next_codes"):
        faults.validate({"reject_next_codes": value})


def test_platinum_code_variant_is_accepted(make_sim):
    sim = make_sim({"user": "s", "password": "pw", "second_factor": "sms"})
    sim.set_faults({"code_input_variant": "platinum"})
    _, answer = attempt(sim, "s", "pw")
    assert answer["variant"] == "platinum"
