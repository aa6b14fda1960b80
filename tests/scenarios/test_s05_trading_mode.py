"""S05: the Live/Paper switch, with the real agent, Chromium and the simulator.

The simulator's switch defaults to Live, its Paper submit button has another
class, and a user submitted in the other mode gets IBKR's wrong-mode banner.
"""

from __future__ import annotations

import pytest

from tests.scenarios.login_scenarios import agent_for, scenario_sim
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

LOGIN_TYPES = {"live": 1, "paper": 2}


def _login_type(sim) -> int:
    """LOGIN_TYPE of the gateway's SSO session (1 live, 2 paper)."""
    reply = sim.request("GET", "/v1/portal/sso/validate")
    assert reply.status_code == 200, reply.text
    return reply.json()["LOGIN_TYPE"]


@pytest.mark.parametrize(
    ("mode", "user"), [("paper", "paperuser"), ("live", "liveuser")]
)
def test_s05_configured_mode_is_set_and_kept(tmp_path, mode, user):
    """S05: with IBEAM_TRADING_MODE `paper` (and, separately, `live`) the switch
    is set to that mode before the password goes in, the login succeeds at the
    first submit, and the session is in that mode (sso/validate LOGIN_TYPE)."""
    with scenario_sim(tmp_path) as sim:
        with agent_for(sim, tmp_path, user, IBEAM_TRADING_MODE=mode) as agent:
            agent.wait_ready(90)
            log = agent.log()
            state = sim.state()
            assert state["mode"] == mode
            assert _login_type(sim) == LOGIN_TYPES[mode]
    assert state["login_attempts"] == 1 and state["wrong_mode_errors"] == 0
    assert f"credentials submitted (current DOM, {mode} mode)" in log
    assert ("Live/Paper switch set to paper" in log) == (mode == "paper")


def test_s05_wrong_mode_is_no_bad_password_and_no_other_mode(tmp_path):
    """S05: a paper user configured as `live` gets the wrong-mode banner: it never
    counts as a bad password (no failure budget, no bad-password count at the
    gateway), the agent never logs into the other mode, and it raises an alert
    naming the setting to change, backing off between tries."""
    with scenario_sim(tmp_path) as sim:
        agent = agent_for(
            sim,
            tmp_path,
            "paperuser",
            IBEAM_TRADING_MODE="live",
            IBEAM_BACKOFF_MIN=1,
            IBEAM_BACKOFF_MAX=30,
        )
        with agent:
            status = agent.wait_for(
                lambda s: s["failures"]["by_class"].get("WrongTradingMode", 0) >= 2,
                120,
                "two wrong-mode answers",
            )
            state = sim.state()
            log = agent.log()
    assert "IBEAM_TRADING_MODE=paper" in (status["alert"] or "")
    assert status["failures"]["budget"]["spent"] == 0
    assert not status["ready"]
    assert state["login_successes"] == 0 and not state["authenticated"]
    assert state["login_failures"] == 0
    assert state["wrong_mode_errors"] == state["login_attempts"] >= 2
    assert "CredentialsRejected" not in log


def test_s05_session_in_the_other_mode_is_logged_out_and_halts(tmp_path):
    """S05: an old login page without the Live/Paper switch logs a paper user in
    as paper even though `live` was asked. The agent checks the session's mode
    (sso/validate LOGIN_TYPE) once authenticated: it logs out, stops logging in
    and raises an alert naming the setting, instead of serving the other mode."""
    with scenario_sim(tmp_path, login_page="legacy") as sim:
        with agent_for(sim, tmp_path, "paperuser", IBEAM_TRADING_MODE="live") as agent:
            status = agent.wait_state("HALTED", timeout=90)
            state = sim.state()
            log = agent.log()
    assert "IBEAM_TRADING_MODE=paper" in (status["alert"] or "")
    assert not status["ready"]
    assert status["failures"]["budget"]["spent"] == 0
    assert state["login_successes"] == 1 and state["logouts"] >= 1
    assert not state["authenticated"]
    assert "wrong trading mode" in log or "LOGIN_TYPE" in log
