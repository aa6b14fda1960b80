"""S01: the brokerage session is lost some minutes after a good login (the user
logged in from a phone); tickle still answers 200, only its JSON says so."""

from __future__ import annotations

import time

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    log_times,
    running_sim,
    wait_until,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

INTERVAL = 2.0
SETTINGS = {
    "IBEAM_MAINTENANCE_INTERVAL": str(INTERVAL),
    "IBEAM_AUTH_SETTLE_TIMEOUT": "3",
    "IBEAM_REAUTHENTICATE_ATTEMPTS": "1",
}


def _lose_session(sim, agent) -> float:
    """Drop the brokerage session; return when, after checking tickle says 200."""
    wait_until(lambda: sim.state()["authenticated"], 10, "an authenticated session")
    sim.drop()
    dropped = time.time()
    state = sim.state()
    assert not state["authenticated"] and state["connected"] and state["sso"]
    return dropped


def _readiness_while(agent, done) -> list[int]:
    """/readyz codes sampled until done() holds."""
    codes = []
    while not done():
        codes.append(agent.get("/readyz")[0])
        time.sleep(0.2)
    return codes


def test_s01_lost_session_noticed_from_json_and_recovered(tmp_path):
    """S01: `authenticated:false, connected:true` behind a 200 tickle is noticed
    within one maintenance interval (from the JSON, not the HTTP code); the agent
    is not ready while the session is lost; reauthenticate fixes it without a
    login; when reauthenticate does nothing, it logs out and logs in once; the log
    names the likely cause (another login, e.g. from a phone)."""
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path, env=SETTINGS) as agent:
            agent.wait_ready(90)
            time.sleep(INTERVAL)  # a few quiet checks: the session is settled

            # Reauthenticate brings the brokerage session back: no login.
            dropped = _lose_session(sim, agent)
            agent.wait_for(lambda s: not s["ready"], 3 * INTERVAL, "not ready")
            status = agent.wait_ready(30)
            noticed = log_times(agent.log(), "READY -> REAUTHENTICATING")
            assert noticed and noticed[-1] - dropped <= INTERVAL + 1.0
            state = sim.state()
            assert state["login_attempts"] == 1
            assert state["reauthentications"] >= 1
            assert status["failures"]["budget"]["spent"] == 0

            # Reauthenticate answers but brings nothing: log out, one full login.
            sim.faults(reauth_refused=True)
            time.sleep(INTERVAL)
            dropped = _lose_session(sim, agent)
            agent.wait_for(lambda s: not s["ready"], 3 * INTERVAL, "not ready")
            codes = _readiness_while(agent, lambda: sim.state()["authenticated"])
            assert codes and set(codes) == {503}
            status = agent.wait_ready(60)
            state = sim.state()
            assert state["login_attempts"] == 2 and state["login_successes"] == 2
            assert state["logouts"] >= 1
            assert status["failures"]["budget"]["spent"] == 0
            log = agent.log()

    lost = [line for line in log.splitlines() if "READY -> REAUTHENTICATING" in line]
    assert len(lost) == 2
    for line in lost:
        assert "[WARNING]" in line
        assert "NOT_AUTHENTICATED, HTTP 200" in line  # the JSON, not the code
        assert "another device" in line and "phone" in line
    assert log_times(log, "READY -> REAUTHENTICATING")[-1] - dropped <= INTERVAL + 1.0
    assert "logging out for a full login" in log
