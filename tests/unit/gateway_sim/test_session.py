"""Session states A-E and the timed behaviour of gateway_sim.session."""

from __future__ import annotations

import datetime
import json
from zoneinfo import ZoneInfo

from gateway_sim.bodies import MAC
from gateway_sim.session import last_reset_boundary

NEW_YORK = ZoneInfo("America/New_York")


def body(reply):
    return json.loads(reply.payload())


def logged_in(make_sim, clock, **faults):
    sim = make_sim()
    if faults:
        sim.set_faults(faults)
    sim.complete_login(sim.accounts["demo"])
    clock.advance(3.1)
    sim.tick()
    return sim


def test_state_a_answers_401_and_not_logged_in(make_sim):
    sim = make_sim()
    assert sim.tickle().status == 401
    assert sim.auth_status().status == 401
    assert sim.logout().status == 401
    assert body(sim.reauthenticate()) == {"error": "not logged in"}


def test_login_is_state_c_until_auth_delay(make_sim, clock):
    sim = make_sim()
    sim.complete_login(sim.accounts["demo"])
    status = body(sim.tickle())["iserver"]["authStatus"]
    assert status == {
        "authenticated": False,
        "competing": False,
        "connected": False,
        "MAC": MAC,
    }
    clock.advance(2.9)
    sim.tick()
    assert sim.authenticated is False
    clock.advance(0.2)
    sim.tick()
    assert (sim.authenticated, sim.connected, sim.competing) == (True, True, False)


def test_tickle_shape_in_state_b(make_sim, clock):
    sim = logged_in(make_sim, clock)
    tickle = body(sim.tickle())
    assert tickle["collission"] is False
    assert tickle["hmds"] == {"error": "no bridge"}
    assert tickle["ssoExpires"] == 600000 - 3100
    auth = tickle["iserver"]["authStatus"]
    assert auth["serverInfo"]["serverName"] == "JifN19053"
    assert "hardware_info" not in auth
    assert body(sim.auth_status())["hardware_info"]


def test_sso_ttl_expires_and_validate_renews(make_sim, clock):
    sim = logged_in(make_sim, clock, sso_ttl_s=10)
    clock.advance(5)
    assert body(sim.validate("127.0.0.1"))["EXPIRES"] == 10000
    clock.advance(9.9)
    sim.tick()
    assert sim.sso is not None
    clock.advance(0.2)
    sim.tick()
    assert sim.sso is None
    assert sim.tickle().status == 401


def test_expire_style_no_session_keeps_tickle_200(make_sim, clock):
    sim = logged_in(make_sim, clock)
    sim.expire("no_session")
    reply = sim.tickle()
    assert (reply.status, reply.payload()) == (200, b'{"error":"no session"}')
    assert sim.auth_status().status == 401
    assert body(sim.reauthenticate()) == {"message": "triggered"}
    assert sim.pending_auth_at is None


def test_session_lifetime_caps_renewal(make_sim, clock):
    sim = logged_in(make_sim, clock, session_lifetime_s=20)
    assert abs(body(sim.validate("127.0.0.1"))["EXPIRES"] - 16900) <= 1
    clock.advance(17)
    sim.tick()
    assert sim.sso is None


def test_idle_timeout_drops_brokerage_only(make_sim, clock):
    sim = logged_in(make_sim, clock, idle_timeout_s=30)
    clock.advance(20)
    sim.note_api()
    clock.advance(20)
    sim.tick()
    assert sim.authenticated is True
    clock.advance(11)
    sim.tick()
    assert (sim.sso is not None, sim.authenticated, sim.connected) == (
        True,
        False,
        True,
    )


def test_logout_reauthenticate_cycle(make_sim, clock):
    sim = logged_in(make_sim, clock)
    assert sim.logout().payload() == b'{"status":true}'
    assert (sim.authenticated, sim.connected) == (False, False)
    assert sim.iserver_accounts().status == 400
    assert body(sim.reauthenticate()) == {"message": "triggered"}
    clock.advance(3.1)
    sim.tick()
    assert sim.authenticated is True


def test_competing_then_ssodh_init_with_compete(make_sim, clock):
    sim = logged_in(make_sim, clock)
    assert sim.compete() is True
    assert body(sim.iserver_accounts()) == {}
    assert body(sim.ssodh_init(b""))["competing"] is True
    taken = body(sim.ssodh_init(b'{"publish":true,"compete":true}'))
    assert (taken["authenticated"], taken["competing"]) == (True, False)
    assert sim.ssodh_init(b'{"publish":false}').status == 500


def test_never_authenticate_until_relogin_cured_by_logout(make_sim, clock):
    sim = logged_in(make_sim, clock, never_authenticate="until_relogin")
    assert (sim.authenticated, sim.connected) == (False, True)
    assert sim.iserver_accounts().status == 401
    sim.logout()
    sim.complete_login(sim.accounts["demo"])
    clock.advance(3.1)
    sim.tick()
    assert sim.authenticated is True
    assert sim.faults["never_authenticate"] == "off"


def test_reauth_refused_keeps_session_down(make_sim, clock):
    sim = logged_in(make_sim, clock, reauth_refused=True)
    sim.drop()
    sim.reauthenticate()
    clock.advance(5)
    sim.tick()
    assert sim.authenticated is False


def test_nightly_reset_at_one_new_york(make_sim, clock):
    sim = logged_in(make_sim, clock)
    # From Tuesday 12:00:03 to Wednesday 00:59:59, then across 01:00.
    sim.set_faults({"clock_offset_s": 12 * 3600 + 59 * 60 + 56 - 3.1})
    sim.tick()
    assert sim.counters["nightly_resets"] == 0
    clock.advance(5)
    sim.tick()
    assert sim.counters["nightly_resets"] == 1
    assert (sim.sso is not None, sim.authenticated, sim.connected) == (
        True,
        False,
        True,
    )


def test_sunday_reset_ends_sso_and_blocks_reauth(make_sim, clock):
    sim = logged_in(make_sim, clock)
    sim.set_faults({"clock_offset_s": 4 * 86400 + 12 * 3600 + 59 * 60 + 58 - 3.1})
    clock.advance(2)
    sim.tick()
    assert sim.counters["sunday_resets"] == 1
    assert (sim.sso, sim.reauth_blocked) == (None, True)
    sim.complete_login(sim.accounts["demo"])
    assert sim.reauth_blocked is False


def test_nightly_reset_switch_off(make_sim, clock):
    sim = logged_in(make_sim, clock, nightly_reset=False)
    sim.set_faults({"clock_offset_s": 12 * 3600 + 59 * 60 + 56 - 3.1})
    clock.advance(10)
    sim.tick()
    assert sim.authenticated is True


def test_last_reset_boundary_across_dst():
    summer = datetime.datetime(2026, 7, 1, 0, 30, tzinfo=NEW_YORK).timestamp()
    boundary = datetime.datetime.fromtimestamp(last_reset_boundary(summer), NEW_YORK)
    assert (boundary.day, boundary.hour, boundary.minute) == (30, 1, 0)
    spring = datetime.datetime(2026, 3, 8, 4, 0, tzinfo=NEW_YORK).timestamp()
    boundary = datetime.datetime.fromtimestamp(last_reset_boundary(spring), NEW_YORK)
    assert (boundary.day, boundary.hour) == (8, 1)


def test_push_expires_and_auto_approves(make_sim, clock):
    sim = make_sim()
    sim.set_faults(
        {"push_expiry_s": 10, "push_auto_approve": {"on_push": 2, "after_s": 4}}
    )
    sim.send_push("flow")
    clock.advance(10)
    assert sim.push_pending() is False
    sim.send_push("flow")
    clock.advance(3)
    sim.tick()
    assert sim.push.approved is False
    clock.advance(1)
    sim.tick()
    assert sim.push.approved is True
    assert sim.counters["pushes_sent"] == 2


def test_approve_needs_a_pending_push(make_sim):
    sim = make_sim()
    assert sim.approve_push() is False
    sim.send_push("flow")
    assert sim.approve_push() is True
    assert sim.push_pending() is False


def test_state_reports_counters_and_clock(make_sim, clock):
    sim = logged_in(make_sim, clock)
    state = sim.state()
    assert state["clock"].startswith("2026-03-03T12:00:03")
    assert (state["sso"], state["user"], state["mode"]) == (True, "demo", "live")
    assert state["login_successes"] == 1
    sim.count_request("/v1/api/tickle")
    assert sim.state()["requests"] == {"/v1/api/tickle": 1}


def test_reset_keeps_accounts(make_sim, clock):
    sim = logged_in(make_sim, clock, lockout_after=2)
    sim.reset()
    assert (sim.sso, sim.ever_logged_in, sim.faults["lockout_after"]) == (
        None,
        False,
        5,
    )
    assert "demo" in sim.accounts


def test_state_lists_every_session_id_handed_out(make_sim, clock):
    sim = logged_in(make_sim, clock)
    first = body(sim.tickle())["session"]
    sim.complete_login(sim.accounts["demo"])
    second = sim.sso.session_id
    assert sim.state()["session_ids"] == [first, second]
    sim.reset()
    assert sim.state()["session_ids"] == []
