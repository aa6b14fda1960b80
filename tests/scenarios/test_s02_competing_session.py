"""S02: after a gateway restart the status says `authenticated:true,
competing:true` (another platform holds the brokerage session)."""

from __future__ import annotations

import time

import pytest

from gateway_sim.harness import SimGatewayError
from tests.support.agent import (
    AgentProcess,
    browser_guard,
    metric,
    running_sim,
    wait_until,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

SETTINGS = {"IBEAM_COMPETE_MAX_PER_HOUR": "2", "IBEAM_AUTH_SETTLE_TIMEOUT": "4"}


def _state_or_none(sim) -> dict | None:
    """The simulator's state, or None while its process is being replaced."""
    try:
        return sim.state()
    except SimGatewayError:
        return None


def _compete_after_restart(sim) -> None:
    """Crash the gateway; as soon as the agent's new login authenticates, let
    another platform take the session (what a restart next to TWS looks like)."""
    sim.crash()
    wait_until(
        lambda: (_state_or_none(sim) or {}).get("authenticated"),
        120,
        "the restarted gateway to authenticate",
        interval=0.05,
    )
    assert sim.compete()["competing"]


def _compete_when_ready(sim, agent) -> None:
    agent.wait_ready(30)
    time.sleep(1.5)
    assert sim.compete()["competing"]


def test_s02_competing_is_unhealthy_and_take_backs_are_bounded(tmp_path):
    """S02: `competing` counts as unhealthy (not ready); the agent takes the
    session back (logout, then reauthenticate) without a new login, at most
    IBEAM_COMPETE_MAX_PER_HOUR times; past that it stays not-ready with an
    alert, tickling, until competing is false again."""
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path, env=SETTINGS) as agent:
            agent.wait_ready(90)
            _compete_after_restart(sim)
            agent.wait_for(lambda s: not s["ready"], 10, "not ready")
            _compete_when_ready(sim, agent)  # the second take-back
            agent.wait_for(lambda s: not s["ready"], 10, "not ready")
            _compete_when_ready(sim, agent)  # one too many this hour

            held = agent.wait_for(
                lambda s: s["state"] == "TAKING_BACK" and s["alert"],
                20,
                "the take-back limit",
            )
            assert "take-back limit (2/hour)" in held["alert"]
            before = sim.state()
            for _ in range(4):  # several intervals: not ready, nothing more tried
                time.sleep(1)
                status = agent.status()
                assert status["state"] == "TAKING_BACK" and not status["ready"]
                assert status["status"]["competing"] is True
                assert agent.get("/readyz")[0] == 503
            state = sim.state()
            assert state["competing"] and state["logouts"] == before["logouts"]
            assert state["ssodh_inits"] == before["ssodh_inits"]

            # The other platform lets go: ready again, alert cleared.
            reply = sim.request(
                "POST", "/v1/api/iserver/auth/ssodh/init", json={"compete": True}
            )
            assert reply.status_code == 200
            ready = agent.wait_ready(20)
            assert ready["alert"] is None
            state = sim.state()
            logins = metric(agent, 'ibeam_logins_total{outcome="succeeded"}')
            log = agent.log()

    # Two logins in all, one per gateway process; the take-backs never log in.
    assert logins == 2
    assert state["login_attempts"] == 1 and state["login_successes"] == 1
    assert ready["failures"]["budget"]["spent"] == 0
    assert "taking it back (1 of 2 this hour)" in log
    assert "taking it back (2 of 2 this hour)" in log
    assert "(3 of 2" not in log
