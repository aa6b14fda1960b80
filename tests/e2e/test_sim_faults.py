"""Fault knobs of the simulator, observed through the gateway port and control API."""

from __future__ import annotations

import datetime
import time
from zoneinfo import ZoneInfo

import pytest
import requests

from gateway_sim.harness import SimGatewayError

pytestmark = pytest.mark.e2e

NEW_YORK = ZoneInfo("America/New_York")
QUIET = {"auth_delay_ms": 300, "pacing": False}


def logged_in(sim_factory, **faults):
    gw = sim_factory(faults={**QUIET, **faults})
    gw.http_login()
    gw.wait_for(lambda s: s["authenticated"])
    return gw


def offset_to(weekday: int, hour: int, minute: int, second: int) -> float:
    """clock_offset_s that puts the New York clock at the next such moment."""
    now = datetime.datetime.now(NEW_YORK)
    target = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    target += datetime.timedelta(days=(weekday - now.weekday()) % 7)
    if target <= now:
        target += datetime.timedelta(days=7)
    return target.timestamp() - now.timestamp()


def test_error_window_answers_status_then_recovers(sim_factory):
    gw = logged_in(sim_factory)
    gw.faults(error_for_s=1.5, error_status=503)
    response = gw.request("POST", "/v1/api/tickle")
    assert (response.status_code, response.text) == (503, "Service Unavailable")
    assert gw.request("GET", "/sso/Login").status_code == 200
    assert gw.request("GET", "/").status_code == 302
    time.sleep(1.7)
    assert gw.request("POST", "/v1/api/tickle").status_code == 200
    assert gw.state()["authenticated"] is True


def test_error_scope_all_covers_login_page(sim):
    sim.faults(error_for_s=5, error_status=500, error_scope="all")
    assert sim.request("GET", "/sso/Login").status_code == 500
    assert sim.request("POST", "/v1/api/tickle").status_code == 500


def test_hang_window_holds_proxied_routes_only(sim):
    sim.faults(hang_for_s=1.5)
    with pytest.raises(requests.ReadTimeout):
        sim.request("POST", "/v1/api/tickle", timeout=0.8)
    assert sim.request("GET", "/clear").status_code == 200
    assert sim.request("POST", "/v1/api/iserver/reauthenticate").status_code == 200
    assert sim.state()["sso"] is False
    with pytest.raises(requests.ConnectionError):
        sim.request("GET", "/sso/Login", timeout=5)
    assert sim.request("POST", "/v1/api/tickle").status_code == 401


def test_pacing_answers_429_past_tickle_limit(sim_factory):
    gw = sim_factory(faults={"pacing_burst": 2})
    codes = [gw.request("POST", "/v1/api/tickle").status_code for _ in range(6)]
    assert 429 in codes
    assert codes[0] == 401
    gw.faults(pacing=False)
    codes = [gw.request("POST", "/v1/api/tickle").status_code for _ in range(6)]
    assert set(codes) == {401}


def test_never_authenticate_until_relogin(sim_factory):
    gw = sim_factory(faults={**QUIET, "never_authenticate": "until_relogin"})
    gw.http_login()
    time.sleep(0.6)
    status = gw.request("POST", "/v1/api/iserver/auth/status").json()
    assert (status["authenticated"], status["connected"]) == (False, True)
    assert gw.request("GET", "/v1/api/iserver/accounts").status_code == 401
    assert gw.request("GET", "/v1/api/one/user").status_code == 200
    gw.request("POST", "/v1/api/iserver/reauthenticate")
    time.sleep(0.6)
    assert gw.state()["authenticated"] is False
    gw.request("POST", "/v1/api/logout")
    gw.http_login()
    gw.wait_for(lambda s: s["authenticated"])
    assert gw.faults()["never_authenticate"] == "off"


def test_never_authenticate_always_survives_relogin(sim_factory):
    gw = logged_in(sim_factory)
    gw.faults(never_authenticate="always")
    assert gw.state()["authenticated"] is False
    gw.request("POST", "/v1/api/logout")
    gw.http_login()
    time.sleep(0.6)
    state = gw.state()
    assert (state["sso"], state["authenticated"], state["connected"]) == (
        True,
        False,
        True,
    )


def test_reauth_refused_triggers_nothing(sim_factory):
    gw = logged_in(sim_factory, reauth_refused=True)
    gw.drop()
    reply = gw.request("POST", "/v1/api/iserver/reauthenticate").json()
    assert reply == {"message": "triggered"}
    time.sleep(0.6)
    assert gw.state()["authenticated"] is False


def test_sso_ttl_ends_session(sim_factory):
    gw = logged_in(sim_factory, sso_ttl_s=1.5)
    gw.wait_for(lambda s: not s["sso"], timeout=10)
    assert gw.request("POST", "/v1/api/tickle").status_code == 401


def test_session_lifetime_caps_validate(sim_factory):
    gw = logged_in(
        sim_factory, session_lifetime_s=2.0, sso_ttl_s=60, expire_style="no_session"
    )
    expires = gw.request("GET", "/v1/api/sso/validate").json()["EXPIRES"]
    assert expires <= 2000
    gw.wait_for(lambda s: not s["sso"], timeout=10)
    assert gw.request("POST", "/v1/api/tickle").text == '{"error":"no session"}'


def test_idle_timeout_drops_brokerage_session(sim_factory):
    gw = logged_in(sim_factory, idle_timeout_s=1.0)
    state = gw.wait_for(lambda s: not s["authenticated"], timeout=10)
    assert (state["sso"], state["connected"]) == (True, True)


def test_nightly_reset_drops_brokerage_session(sim_factory):
    gw = logged_in(sim_factory)
    gw.faults(clock_offset_s=offset_to(weekday=1, hour=0, minute=59, second=58))
    assert "T00:59:5" in gw.state()["clock"]
    state = gw.wait_for(lambda s: s["nightly_resets"] == 1, timeout=10)
    assert (state["sso"], state["authenticated"], state["connected"]) == (
        True,
        False,
        True,
    )
    gw.request("POST", "/v1/api/iserver/reauthenticate")
    gw.wait_for(lambda s: s["authenticated"])


def test_sunday_reset_needs_full_login(sim_factory):
    gw = logged_in(sim_factory)
    gw.faults(clock_offset_s=offset_to(weekday=6, hour=0, minute=59, second=58))
    state = gw.wait_for(lambda s: s["sunday_resets"] == 1, timeout=10)
    assert state["sso"] is False
    assert state["reauth_blocked"] is True
    gw.request("POST", "/v1/api/iserver/reauthenticate")
    time.sleep(0.6)
    assert gw.state()["authenticated"] is False
    gw.http_login()
    gw.wait_for(lambda s: s["authenticated"])


def test_spurious_bad_password_does_not_lock(sim_factory):
    gw = sim_factory(faults={**QUIET, "spurious_bad_password": 1, "lockout_after": 1})
    with pytest.raises(SimGatewayError, match="Invalid username password combination"):
        gw.http_login()
    gw.http_login()
    state = gw.state()
    assert (state["login_failures"], state["spurious_failures"]) == (1, 1)
    assert state["locked"] is False


def test_lockout_after_bad_passwords(sim_factory):
    gw = sim_factory(faults={**QUIET, "lockout_after": 3})
    for _ in range(3):
        with pytest.raises(SimGatewayError, match="Invalid username password"):
            gw.http_login(password="wrong")
    with pytest.raises(SimGatewayError, match="locked"):
        gw.http_login()
    state = gw.state()
    assert state["locked"] is True
    assert state["locked_accounts"] == ["demo"]
    assert (state["login_attempts"], state["login_failures"]) == (4, 4)


def test_memory_growth_ends_the_process(sim_factory):
    gw = sim_factory()
    limit = gw.state()["resident_mb"] + 15
    gw.faults(memory_growth_mb_per_min=900, memory_limit_mb=limit)
    assert gw.process.wait(30) == -9
    assert "memory_limit_mb" in gw.console()


def test_crash_exits_at_once(sim):
    assert sim.crash() == 137


def test_reset_clears_session_counters_and_faults(sim_factory):
    gw = logged_in(sim_factory, lockout_after=2)
    state = gw.reset()
    assert (state["sso"], state["login_successes"], state["ever_logged_in"]) == (
        False,
        0,
        False,
    )
    assert gw.faults()["lockout_after"] == 5
    assert gw.request("POST", "/v1/api/iserver/reauthenticate").json() == {
        "error": "not logged in"
    }


def test_faults_reject_unknown_or_bad_knobs(sim):
    with pytest.raises(SimGatewayError, match="no_such_knob is not a fault knob"):
        sim.faults(no_such_knob=1)
    with pytest.raises(SimGatewayError, match="login_page must be one of"):
        sim.faults(login_page="fancy")
    assert sim.faults()["login_page"] == "current"


def test_faults_from_environment_apply_at_start(sim_factory):
    gw = sim_factory(faults={"login_page": "legacy", "lockout_after": 7})
    knobs = gw.faults()
    assert (knobs["login_page"], knobs["lockout_after"]) == ("legacy", 7)
