"""S09: an account that needs a code, and no code source configured, with the real
agent, Chromium and the simulator counting every code it sends."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from tests.scenarios.login_scenarios import agent_for, scenario_sim
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

QUICK = {"IBEAM_BACKOFF_MIN": 1, "IBEAM_BACKOFF_MAX": 2}


def _halted_without_source(agent) -> dict:
    status = agent.wait_state("HALTED", timeout=90)
    assert "IBEAM_TWO_FA_HANDLER" in (status["alert"] or "")
    assert not status["ready"]
    assert status["failures"]["budget"]["spent"] == 0
    return status


def test_s09_code_needed_without_source_sends_one_code_at_most(tmp_path):
    """S09: every attempt at this account sends an SMS code.  With no code source
    configured the agent stops at the code page with a configuration alert and
    tries no more logins, neither in this run (several intervals and backoffs
    later) nor after a restart, which refuses before any browser starts; so at
    most one code is ever sent.  Once a source is configured it logs in."""
    with scenario_sim(tmp_path) as sim:
        with agent_for(sim, tmp_path, "smsuser", **QUICK) as agent:
            _halted_without_source(agent)
            time.sleep(5)  # five intervals, several backoffs' worth
            assert agent.status()["state"] == "HALTED"
        assert sim.state()["codes_sent"] == 1
        assert sim.state()["login_attempts"] == 1

        with agent_for(sim, tmp_path, "smsuser", **QUICK) as again:
            status = _halted_without_source(again)
            assert "still not set" in status["alert"]
            time.sleep(3)
            log = again.log()
        state = sim.state()
        assert state["codes_sent"] == 1 and state["login_attempts"] == 1
        assert state["codes_received"] == 0
        assert "login page:" not in log  # refused before the browser

        reader = tmp_path / "read-sms.py"
        reader.write_text(
            textwrap.dedent(
                f"""\
                import json, urllib.request
                url = "{sim.control_url}/sim/2fa/last_code"
                with urllib.request.urlopen(url) as reply:
                    print(json.load(reply)["code"])
                """
            )
        )
        configured = agent_for(
            sim,
            tmp_path,
            "smsuser",
            IBEAM_TWO_FA_HANDLER="COMMAND",
            IBEAM_TWO_FA_COMMAND=f"{sys.executable} {reader}",
        )
        with configured:
            configured.wait_ready(90)
        state = sim.state()
    assert state["codes_sent"] == 2 and state["login_successes"] == 1
    assert not (configured.outputs / "second-factor.json").exists()


def test_s09_picker_without_source_chooses_nothing(tmp_path):
    """S09: when the page first offers a choice of second factor and no source is
    configured, the agent chooses nothing, so no code and no push is sent, and it
    stops with a configuration alert instead of retrying."""
    with scenario_sim(tmp_path) as sim:
        with agent_for(sim, tmp_path, "pickeruser", **QUICK) as agent:
            _halted_without_source(agent)
            time.sleep(3)
        state = sim.state()
    assert state["codes_sent"] == 0 and state["pushes_sent"] == 0
    assert state["login_attempts"] == 1
