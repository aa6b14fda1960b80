"""Lockout safety end to end: a wrong password stops at the failure budget, stays
stopped across agent restarts, and only an operator's reset lets logins resume."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import (
    REPO,
    AgentProcess,
    browser_guard,
    kill_gateways,
    session_leftovers,
)
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


@pytest.fixture
def sim(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    faults = {"auth_delay_ms": 300, "lockout_after": 5}
    gw = SimGateway(tmp_path / "gw", faults=faults).install().start()
    yield gw
    gw.stop()
    kill_gateways(gw.root)


def test_agent_wrong_password_stops_at_the_budget_across_restarts(sim, tmp_path):
    with AgentProcess(sim, tmp_path, password="wrong-password") as agent:
        halted = agent.wait_state("HALTED", timeout=120)
        assert "reset-failures" in halted["alert"]
        assert halted["failures"]["budget"] == {"spent": 3, "limit": 3, "locked": False}
        assert agent.get("/livez")[0] == 503
        time.sleep(4)  # several intervals: nothing more is tried
        state = sim.state()
        assert state["login_failures"] == 3 and state["login_attempts"] == 3
        assert not state["locked"]
        session = agent.process.pid
        code, _ = agent.terminate()
        assert code == 0
    assert session_leftovers(session) == []
    assert "wrong-password" not in agent.log()

    # A new agent (a container restart) with the right password still may not try.
    with AgentProcess(sim, tmp_path) as again:
        again.wait_state("HALTED", timeout=30)
        time.sleep(3)
        assert sim.state()["login_attempts"] == 3

        reset = subprocess.run(
            [sys.executable, "-m", "ibeam_agents", "reset-failures"],
            cwd=REPO,
            env=again.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert reset.returncode == 0, reset.stderr
        assert "was 3 of 3 spent" in reset.stdout
        again.wait_ready(60)  # the running agent noticed the reset by itself
        state = sim.state()
        assert state["login_successes"] == 1 and state["login_attempts"] == 4


def test_agent_budget_is_spent_by_unanswered_pushes_not_by_unknown_pages(sim, tmp_path):
    sim.faults(login_page="unrecognised")
    env = {"IBEAM_OAUTH_TIMEOUT": "3", "IBEAM_PAGE_LOAD_TIMEOUT": "10"}
    with AgentProcess(sim, tmp_path, env=env) as agent:
        agent.wait_for(
            lambda s: s["failures"]["by_class"].get("PageNotRecognised", 0) >= 2,
            timeout=120,
            what="two unrecognised pages",
        )
        status = agent.status()
        assert status["failures"]["budget"]["spent"] == 0
        assert status["alert"]
        assert list((tmp_path / "outputs").glob("*.png"))
