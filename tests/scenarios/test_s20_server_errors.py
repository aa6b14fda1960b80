"""S20: right after a login, tickle and auth/status answer 503 for several
minutes (scaled), then recover with the session intact; also a 500 window over
every proxied route, and a window that outlasts the grace."""

from __future__ import annotations

import time

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    log_times,
    metric,
    running_sim,
    wait_until,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

GRACE = 8.0
SETTINGS = {
    "IBEAM_AUTH_SETTLE_TIMEOUT": "3",
    "IBEAM_TRANSIENT_GRACE": str(GRACE),
}
LOGINS = 'ibeam_logins_total{outcome="succeeded"}'
TRANSIENT_RESTARTS = 'ibeam_gateway_restarts_total{reason="transient"}'


def _degraded_then_ready(agent, timeout: float = 30) -> dict:
    seen = agent.wait_for(lambda s: s["degraded"], 15, "degraded")
    assert seen["state"] == "DEGRADED" and not seen["ready"]
    assert agent.get("/readyz")[0] == 503
    assert agent.get("/livez")[0] == 200  # waiting it out is not a stall
    return agent.wait_ready(timeout)


def test_s20_server_errors_are_waited_out_without_login_or_restart(tmp_path):
    """S20: 5xx answers are transient: no gateway kill, no new login (no new
    second factor) and nothing counted against the budget while they last less
    than IBEAM_TRANSIENT_GRACE, even when they start in the middle of the
    post-login settle wait; health says degraded.  The same holds for 500 on
    every proxied route (scope `all`).  Only a window past the grace restarts the
    gateway, once, and then one login follows."""
    with running_sim(tmp_path, auth_delay_ms=1500) as sim:
        pid = sim.pid
        with AgentProcess(sim, tmp_path, env=SETTINGS) as agent:
            # 503 from the moment the login page says "Client login succeeds".
            wait_until(lambda: sim.state()["login_successes"], 90, "a login", 0.05)
            sim.faults(error_status=503, error_for_s=6, error_scope="api")
            status = _degraded_then_ready(agent)
            assert status["failures"]["budget"]["spent"] == 0
            assert "NeverAuthenticated" not in status["failures"]["by_class"]
            assert sim.state()["login_attempts"] == 1

            # 500 on everything proxied, while ready.
            time.sleep(1)
            sim.faults(error_status=500, error_for_s=4, error_scope="all")
            status = _degraded_then_ready(agent)
            assert sim.state()["login_attempts"] == 1
            assert sim.running() and sim.pid == pid
            assert metric(agent, LOGINS) == 1
            assert metric(agent, TRANSIENT_RESTARTS) == 0

            # Past the grace: one restart, then one login.
            time.sleep(1)
            sim.faults(error_status=503, error_for_s=300, error_scope="api")
            agent.wait_for(lambda s: s["degraded"], 15, "degraded")
            agent.wait_for(
                lambda s: metric(agent, LOGINS) == 2 and s["ready"], 90, "a new login"
            )
            status = agent.status()
            restarts = metric(agent, TRANSIENT_RESTARTS)
            log = agent.log()

    assert restarts == 1
    assert status["failures"]["budget"]["spent"] == 0
    degraded = log_times(log, "READY -> DEGRADED")
    restarted = log_times(log, "DEGRADED -> RESTARTING")
    assert len(degraded) == 2 and len(restarted) == 1
    assert restarted[0] - degraded[-1] >= GRACE - 0.5
    assert "HTTP 503" in log and "HTTP 500" in log
