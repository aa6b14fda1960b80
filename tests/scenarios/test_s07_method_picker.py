"""S07: the second-factor method picker and code inputs whose id varies, with the
real agent, Chromium and the simulator."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.scenarios.login_scenarios import TOTP_SECRET, agent_for, scenario_sim
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

# Every id the simulator draws; "platinum" is one no keeper lists.
VARIANTS = ("silver", "bronze", "gold", "temp", "platinum")


def _sms_reader(tmp_path, control_url: str) -> str:
    """A command that prints the code the simulator last sent by "SMS"."""
    script = tmp_path / "read-sms.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import json, urllib.request
            with urllib.request.urlopen("{control_url}/sim/2fa/last_code") as r:
                print(json.load(r)["code"])
            """
        )
    )
    return f"{sys.executable} {script}"


def test_s07_picker_chooses_sms_and_finds_every_code_input(tmp_path):
    """S07: after the password the method picker offers IB Key, authenticator and
    SMS; with a command as the code source the agent picks SMS, finds the code
    input whatever its id (the four known ids and one it has never seen, by
    role and type), submits, sees the login succeed, and logs the picker's
    options, its choice and which input it used."""
    with scenario_sim(tmp_path, code_input_variant=VARIANTS[0]) as sim:
        agent = agent_for(
            sim,
            tmp_path,
            "pickeruser",
            IBEAM_TWO_FA_HANDLER="COMMAND",
            IBEAM_TWO_FA_COMMAND=_sms_reader(tmp_path, sim.control_url),
        )
        with agent:
            agent.wait_ready(90)
            for variant in VARIANTS[1:]:
                before = sim.state()["login_successes"]
                sim.faults(code_input_variant=variant)
                sim.expire()
                agent.wait_for(
                    lambda s, b=before: (
                        s["ready"] and sim.state()["login_successes"] > b
                    ),
                    90,
                    f"a login through the {variant} code input",
                )
            log = agent.log()
        state = sim.state()

    assert state["login_successes"] == len(VARIANTS)
    assert state["codes_sent"] == state["codes_received"] == len(VARIANTS)
    assert state["second_factor_failures"] == 0 and state["pushes_sent"] == 0
    assert "offered 'IB Key', 'Mobile Authenticator App', 'SMS'; chose 'SMS'" in log
    for variant in VARIANTS:
        assert f"code submitted into #xyz-field-{variant}-response" in log
    assert "found by generic" in log  # the unlisted id, by role and type


def test_s07_picker_chooses_authenticator_for_totp(tmp_path):
    """S07: with a TOTP secret the agent picks the authenticator app in the
    picker (not the IB Key push the page lists first) and types a code into an
    input whose id it does not know."""
    with scenario_sim(tmp_path, code_input_variant="platinum") as sim:
        agent = agent_for(
            sim,
            tmp_path,
            "pickeruser",
            IBEAM_TWO_FA_HANDLER="TOTP",
            IBEAM_TOTP_SECRET=TOTP_SECRET,
        )
        with agent:
            agent.wait_ready(120)
            log = agent.log()
        state = sim.state()
    assert state["login_successes"] == 1 and state["pushes_sent"] == 0
    assert state["codes_sent"] == 0 and state["second_factor_failures"] == 0
    assert "chose 'Mobile Authenticator App'" in log
    assert "TOTP code submitted into #xyz-field-platinum-response" in log
