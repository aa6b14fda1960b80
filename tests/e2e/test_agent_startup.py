"""The agent process from cold start to ready, against the simulator, with a real
Chromium login under Xvfb; its health routes; and a clean exit."""

from __future__ import annotations

import json
import time

import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import (
    AgentProcess,
    browser_guard,
    gateway_processes,
    kill_gateways,
    session_leftovers,
)
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


@pytest.fixture
def sim(tmp_path):
    """An installed simulator directory that the agent itself starts."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    gw = SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 500}).install()
    yield gw
    kill_gateways(gw.root)


def test_agent_cold_start_logs_in_and_exits_clean(sim, tmp_path):
    with AgentProcess(sim, tmp_path) as agent:
        started = time.monotonic()
        status = agent.wait_ready(90)
        print(f"cold start to ready: {time.monotonic() - started:.1f} s")
        state = sim.state()
        assert state["authenticated"] and state["login_successes"] == 1
        assert status["gateway"] == sim.base_url  # derived from conf.yaml
        assert status["last_login"]["outcome"] == "succeeded"
        assert status["failures"]["budget"]["spent"] == 0
        assert len(gateway_processes(sim.root)) == 1

        session = agent.process.pid
        code, took = agent.terminate()
        assert code == 0, agent.log()[-3000:]
        assert took < 10
    assert gateway_processes(sim.root) == []  # it started the gateway, so it stops it
    assert session_leftovers(session) == []
    log = agent.log()
    assert "-> READY" in log and "logged out (shutdown)" in log
    assert "demo" not in log.replace("demo account", "")


def test_agent_health_routes_answer_while_and_after_logging_in(sim, tmp_path):
    with AgentProcess(sim, tmp_path) as agent:
        agent.wait_for(lambda s: s["state"] in ("LOGGING_IN", "AWAITING_AUTH", "READY"))
        assert agent.get("/livez")[0] == 200
        agent.wait_ready(90)

        assert agent.get("/livez") == (200, b"ok\n")
        assert agent.get("/readyz") == (200, b"ok\n")
        code, body = agent.get("/metrics")
        text = body.decode()
        assert code == 200
        assert 'ibeam_watcher_state{ibeam_watcher_state="READY"} 1.0' in text
        assert 'ibeam_logins_total{outcome="succeeded"} 1.0' in text
        assert "ibeam_seconds_since_last_good_check" in text
        assert "ibeam_failure_budget_limit 3.0" in text
        code, body = agent.get("/status")
        assert code == 200 and json.loads(body)["next_action"] == "tickle"
        assert agent.get("/activate")[0] == 405
        assert agent.get("/deactivate")[0] == 405
        assert agent.post("/livez")[0] == 405
        assert agent.get("/nothing")[0] == 404

        logouts = sim.state()["logouts"]
        assert agent.post("/deactivate")[0] == 202
        agent.wait_state("PAUSED", timeout=10)
        assert agent.get("/readyz")[0] == 503
        assert agent.get("/livez")[0] == 200
        assert sim.state()["logouts"] == logouts + 1

        assert agent.post("/activate")[0] == 202
        agent.wait_ready(60)
        assert sim.state()["login_successes"] == 1  # reauthenticate was enough


def test_agent_takes_over_a_running_gateway_and_leaves_it_running(sim, tmp_path):
    sim.start()
    try:
        with AgentProcess(sim, tmp_path) as agent:
            agent.wait_ready(90)
            code, _ = agent.terminate()
            assert code == 0
            assert sim.running()  # not started by the agent: not stopped by it
            assert sim.state()["logouts"] >= 1
    finally:
        sim.stop()
