"""Recovery against the simulator: expired, dropped and competing sessions, 5xx
windows, hangs, and the configuration errors that must never cause a login."""

from __future__ import annotations

import time

import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import AgentProcess, browser_guard, kill_gateways
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

FAST = {"auth_delay_ms": 300}


@pytest.fixture
def sim(tmp_path):
    """A running simulator (started by the test, so it outlives the agent)."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    gw = SimGateway(tmp_path / "gw", faults=FAST).install().start()
    yield gw
    gw.stop()
    kill_gateways(gw.root)


@pytest.fixture
def ready_agent(sim, tmp_path):
    with AgentProcess(sim, tmp_path) as agent:
        agent.wait_ready(90)
        assert sim.state()["login_successes"] == 1
        yield agent


def _not_ready_then_ready(agent, timeout=60.0):
    agent.wait_for(lambda s: not s["ready"], 20, "not ready")
    return agent.wait_ready(timeout)


def test_agent_recovers_expired_session_with_one_login(sim, ready_agent):
    sim.expire(style="no_session")
    _not_ready_then_ready(ready_agent)
    state = sim.state()
    assert state["login_successes"] == 2
    assert state["login_attempts"] == 2
    assert "NO_SESSION" in ready_agent.log()


def test_agent_recovers_expired_session_answering_401(sim, ready_agent):
    sim.expire(style="401")
    _not_ready_then_ready(ready_agent)
    assert sim.state()["login_successes"] == 2


def test_agent_reauthenticates_a_dropped_session_without_login(sim, ready_agent):
    sim.drop()
    _not_ready_then_ready(ready_agent)
    state = sim.state()
    assert state["reauthentications"] >= 1
    assert state["login_attempts"] == 1
    assert "another device" in ready_agent.log()


def test_agent_takes_back_a_competing_session_without_login(sim, ready_agent):
    sim.compete()
    status = _not_ready_then_ready(ready_agent)
    state = sim.state()
    assert not state["competing"]
    # taken back with ssodh/init (compete): no logout, no reauthenticate, no login
    assert state["ssodh_inits"] >= 1
    assert state["logouts"] == 0
    assert state["login_attempts"] == 1
    assert status["status"]["competing"] is False
    assert "took the brokerage session" in ready_agent.log()


def test_agent_notices_a_lost_session_between_maintenance_checks(tmp_path):
    # The quick auth/status reads (IBEAM_STATUS_INTERVAL) find the loss; the
    # maintenance check, 10 minutes away, is not needed.
    require_binaries("chromium", "chromedriver", "Xvfb")
    gw = SimGateway(tmp_path / "gw", faults=FAST).install().start()
    env = {"IBEAM_MAINTENANCE_INTERVAL": "600", "IBEAM_STATUS_INTERVAL": "1"}
    try:
        with AgentProcess(gw, tmp_path, env=env) as agent:
            agent.wait_ready(90)
            tickles = gw.state()["requests"].get("/v1/api/tickle", 0)
            gw.compete()
            _not_ready_then_ready(agent)
            gw.expire(style="no_session")
            _not_ready_then_ready(agent)
            state = gw.state()
            assert state["login_successes"] == 2
            assert state["requests"].get("/v1/api/tickle", 0) == tickles
    finally:
        gw.stop()
        kill_gateways(gw.root)


def test_agent_tolerates_a_5xx_window_without_login_or_restart(sim, ready_agent):
    pid = sim.pid
    sim.faults(error_status=503, error_for_s=6, error_scope="api")
    degraded = ready_agent.wait_for(lambda s: s["degraded"], 20, "degraded")
    assert degraded["state"] == "DEGRADED"
    assert ready_agent.get("/readyz")[0] == 503
    assert ready_agent.get("/livez")[0] == 200
    ready_agent.wait_ready(60)
    state = sim.state()
    assert state["login_attempts"] == 1
    assert sim.pid == pid and sim.running()


def test_agent_waits_out_a_hanging_gateway_without_login(sim, ready_agent):
    sim.faults(hang_for_s=8)
    ready_agent.wait_for(lambda s: s["degraded"], 30, "degraded")
    ready_agent.wait_ready(60)
    assert sim.state()["login_attempts"] == 1


def test_agent_never_logs_in_when_access_is_denied(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    conf = {"ips": {"allow": ["10.*"], "deny": ["212.90.324.10"]}}
    gw = SimGateway(tmp_path / "gw", faults=FAST, conf_overrides=conf).install()
    gw.start()
    try:
        with AgentProcess(gw, tmp_path) as agent:
            status = agent.wait_state("MISCONFIGURED", timeout=30)
            assert "ips.allow" in status["alert"]
            assert str(gw.conf_path) in status["alert"]
            time.sleep(3)
            assert gw.state()["login_attempts"] == 0
            assert agent.get("/readyz")[0] == 503
            assert "Access Denied" in agent.log()
    finally:
        gw.stop()


def test_agent_restarts_a_crashed_gateway_it_started(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    gw = SimGateway(tmp_path / "gw", faults=FAST).install()
    try:
        with AgentProcess(gw, tmp_path) as agent:
            agent.wait_ready(90)
            first = agent.status()["last_login"]["at"]
            gw.crash()
            agent.wait_for(lambda s: s["last_login"]["at"] != first and s["ready"], 90)
            assert "NOT_RUNNING" in agent.log() or "STARTING" in agent.log()
    finally:
        kill_gateways(gw.root)


def test_agent_fresh_login_fixes_a_session_reauthenticate_cannot(sim, ready_agent):
    # S19 case A: reauthenticate never helps; logout and a fresh login do.
    sim.faults(never_authenticate="until_relogin")
    sim.drop()
    _not_ready_then_ready(ready_agent, timeout=120)
    state = sim.state()
    assert state["login_successes"] == 2
    assert state["reauthentications"] >= 2
    log = ready_agent.log()
    assert "logging out for a full login" in log


def test_agent_session_that_never_authenticates_ends_in_an_alert(tmp_path):
    # S19 case B: nothing helps; the ladder ends at the budget, not in a loop.
    require_binaries("chromium", "chromedriver", "Xvfb")
    faults = {"auth_delay_ms": 300, "never_authenticate": "always"}
    gw = SimGateway(tmp_path / "gw", faults=faults).install()
    env = {"IBEAM_AUTH_SETTLE_TIMEOUT": "3", "IBEAM_REAUTHENTICATE_ATTEMPTS": "1"}
    try:
        with AgentProcess(gw, tmp_path, env=env) as agent:
            halted = agent.wait_state("HALTED", timeout=240)
            assert halted["failures"]["by_class"]["NeverAuthenticated"] == 3
            assert halted["failures"]["budget"]["spent"] == 3
            assert "reset-failures" in halted["alert"]
            metrics = agent.get("/metrics")[1].decode()
            assert 'ibeam_gateway_restarts_total{reason="recovery"} 1.0' in metrics
            assert agent.get("/livez")[0] == 503
    finally:
        kill_gateways(gw.root)
