"""S19: login works and the user endpoint answers, but `/iserver/*` stays 401
and auth/status stays `connected:true, authenticated:false` through
reauthentication.  Case A: a logout and a fresh login fix it.  Case B: nothing
does."""

from __future__ import annotations

import time

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    log_times,
    metric,
    running_sim,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

SETTINGS = {"IBEAM_AUTH_SETTLE_TIMEOUT": "3", "IBEAM_REAUTHENTICATE_ATTEMPTS": "2"}
RESTARTS = 'ibeam_gateway_restarts_total{reason="recovery"}'
LOGINS = 'ibeam_logins_total{outcome="succeeded"}'


def _stuck(sim) -> None:
    """The symptom: user answers, /iserver/* 401, auth/status not authenticated."""
    assert sim.request("GET", "/v1/api/one/user").status_code == 200
    assert sim.request("GET", "/v1/api/iserver/accounts").status_code == 401
    status = sim.request("POST", "/v1/api/iserver/auth/status").json()
    assert status["connected"] and not status["authenticated"]


def test_s19_case_a_fresh_login_fixes_what_reauthenticate_cannot(tmp_path):
    """S19 case A: reauthenticate rounds do not help; the ladder's next rung,
    logout and a full login, does; no gateway restart, nothing spent."""
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path, env=SETTINGS) as agent:
            agent.wait_ready(90)
            time.sleep(1)
            sim.faults(never_authenticate="until_relogin")
            _stuck(sim)
            agent.wait_for(lambda s: not s["ready"], 10, "not ready")
            status = agent.wait_ready(90)
            state = sim.state()
            restarts = metric(agent, RESTARTS)
            log = agent.log()

    assert state["reauthentications"] >= 2
    assert state["login_successes"] == 2 and state["logouts"] >= 1
    assert restarts == 0
    assert status["failures"]["budget"]["spent"] == 0
    rounds = log_times(log, "reauthenticate round")
    fresh = log_times(log, "logging out for a full login")
    assert len(rounds) == 2 and fresh and fresh[0] > rounds[-1]


def test_s19_case_b_ends_in_an_alert_not_a_loop(tmp_path):
    """S19 case B: reauthenticate, logout + login, a gateway restart and a login:
    then an alert and a backoff; one more climb spends the failure budget and
    the agent halts.  Over a long window afterwards nothing more is tried: the
    logins and gateway restarts are counted and bounded."""
    settings = {**SETTINGS, "IBEAM_REAUTHENTICATE_ATTEMPTS": "1"}
    with running_sim(tmp_path, never_authenticate="always") as sim:
        with AgentProcess(sim, tmp_path, env=settings) as agent:
            halted = agent.wait_state("HALTED", timeout=240)
            logins, restarts = metric(agent, LOGINS), metric(agent, RESTARTS)
            time.sleep(6)  # six intervals, longer than the longest backoff (4 s)
            status = agent.status()
            assert metric(agent, LOGINS) == logins
            assert metric(agent, RESTARTS) == restarts
            assert agent.get("/livez")[0] == 503
            assert agent.get("/readyz")[0] == 503
            log = agent.log()

    assert logins == 3 and restarts == 1
    assert status["state"] == "HALTED"
    assert halted["failures"]["by_class"]["NeverAuthenticated"] == 3
    assert halted["failures"]["budget"]["spent"] == 3
    assert "reset-failures" in halted["alert"]
    backoff_alert = [
        line for line in log.splitlines() if "ALERT: the session would" in line
    ]
    assert len(backoff_alert) == 1
    assert (
        log_times(log, "ALERT: the session would")[0] < log_times(log, "-> HALTED")[0]
    )
