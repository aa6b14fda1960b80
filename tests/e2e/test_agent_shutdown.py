"""SIGTERM and SIGINT: log out, stop what the agent started, exit 0 within 10 s,
leave no browser behind, even in the middle of a login."""

from __future__ import annotations

import signal

import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import (
    AgentProcess,
    browser_guard,
    kill_gateways,
    session_leftovers,
)
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

PUSH_USER = {
    "user": "pushy",
    "password": "push-pw",
    "mode": "live",
    "second_factor": "ibkey_push",
    "methods": [],
    "totp_secret": None,
    "account_id": "U7654321",
}


@pytest.fixture
def sim(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    gw = SimGateway(
        tmp_path / "gw", faults={"auth_delay_ms": 300}, accounts=[PUSH_USER]
    ).install()
    gw.start()
    yield gw
    gw.stop()
    kill_gateways(gw.root)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_agent_signal_logs_out_and_exits_quickly(sim, tmp_path, signum):
    sim.faults(push_auto_approve={"on_push": 1, "after_s": 0.5})
    env = {"IBEAM_TWO_FA_HANDLER": "IBKEY_PUSH"}
    with AgentProcess(
        sim, tmp_path, env=env, account="pushy", password="push-pw"
    ) as agent:
        agent.wait_ready(90)
        logouts = sim.state()["logouts"]
        agent.process.send_signal(signum)
        code = agent.process.wait(10)
        assert code == 0
        assert sim.state()["logouts"] == logouts + 1
        assert session_leftovers(agent.process.pid) == []


def test_agent_sigterm_during_a_login_leaves_no_browser(sim, tmp_path):
    env = {"IBEAM_TWO_FA_HANDLER": "IBKEY_PUSH", "IBEAM_TWO_FA_TIMEOUT": "120"}
    with AgentProcess(
        sim, tmp_path, env=env, account="pushy", password="push-pw"
    ) as agent:
        waiting = agent.wait_for(
            lambda s: s["notice"] and "push" in s["notice"], 90, "a waiting push"
        )
        assert waiting["state"] == "LOGGING_IN"
        assert agent.get("/livez")[0] == 200  # a long login is not a stalled loop
        assert sim.state()["pushes_sent"] == 1
        session = agent.process.pid
        code, took = agent.terminate()
        assert code == 0 and took < 10, agent.log()[-3000:]
        assert session_leftovers(session) == []
        budget = (tmp_path / "outputs" / "failure-budget.json").read_text()
        assert '"spent": 0' in budget  # stopped on purpose: not counted
