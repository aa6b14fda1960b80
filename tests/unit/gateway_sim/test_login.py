"""The login conversation of gateway_sim.login, on a fake clock."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from gateway_sim import login
from gateway_sim.accounts import parse_accounts

SECRET = "JBSWY3DPEHPK3PXP"

SECRET_BYTES = b"Hello!\xde\xad\xbe\xef"


def code_at(now: float) -> str:
    return (
        TOTP(SECRET_BYTES, 6, SHA1(), 30, enforce_key_length=False)
        .generate(now)
        .decode()
    )


def attempt(sim, user="demo", password="demo", paper=None):
    flow = login.new_flow(sim)
    answer = login.handle(
        sim,
        flow,
        {"action": "login", "username": user, "password": password, "paper": paper},
    )
    return flow, answer


def test_good_password_completes_and_dispatcher_logs_in(make_sim):
    sim = make_sim()
    flow, answer = attempt(sim)
    assert answer == {"step": "success", "location": "/sso/Dispatcher"}
    assert login.finish(sim, flow.token) is True
    assert sim.sso is not None
    assert login.finish(sim, flow.token) is False


def test_dispatcher_refuses_unfinished_flows(make_sim):
    sim = make_sim()
    flow, _ = attempt(sim, password="bad")
    assert login.finish(sim, flow.token) is False
    assert login.finish(sim, None) is False
    assert sim.sso is None


def test_passwords_are_recorded_as_sha256(make_sim):
    sim = make_sim()
    attempt(sim, password="bad")
    attempt(sim)
    expected = [hashlib.sha256(p.encode()).hexdigest() for p in ("bad", "demo")]
    assert sim.password_sha256 == expected


def test_lockout_after_consecutive_bad_passwords(make_sim):
    sim = make_sim()
    sim.set_faults({"lockout_after": 2})
    attempt(sim, password="bad")
    _, answer = attempt(sim, password="bad")
    assert answer["message"] == login.BAD_CREDENTIALS
    _, answer = attempt(sim)
    assert answer == {"step": "locked", "message": login.LOCKED}
    assert sim.counters["login_failures"] == 3


def test_good_password_resets_the_streak(make_sim):
    sim = make_sim()
    sim.set_faults({"lockout_after": 2})
    attempt(sim, password="bad")
    attempt(sim)
    attempt(sim, password="bad")
    assert sim.locked == set()


def test_spurious_failures_do_not_count_toward_lockout(make_sim):
    sim = make_sim()
    sim.set_faults({"spurious_bad_password": 2, "lockout_after": 1})
    assert attempt(sim)[1]["message"] == login.BAD_CREDENTIALS
    assert attempt(sim)[1]["message"] == login.BAD_CREDENTIALS
    assert attempt(sim)[1]["step"] == "success"
    assert (sim.counters["spurious_failures"], sim.locked) == (2, set())


def test_wrong_mode_is_its_own_error(make_sim):
    sim = make_sim(
        {"user": "pp", "password": "pw", "mode": "paper"},
        {"user": "ll", "password": "pw"},
    )
    assert attempt(sim, "pp", "pw", paper=False)[1] == {
        "step": "wrong_mode",
        "message": login.WRONG_MODE_LIVE,
    }
    assert attempt(sim, "ll", "pw", paper=True)[1]["message"] == login.WRONG_MODE_PAPER
    assert attempt(sim, "pp", "pw", paper=True)[1]["step"] == "success"
    assert attempt(sim, "pp", "pw", paper=None)[1]["step"] == "success"
    assert (sim.counters["wrong_mode_errors"], sim.counters["login_failures"]) == (2, 0)


def test_totp_accepts_the_window_and_counts_failures(make_sim, clock):
    sim = make_sim(
        {"user": "t", "password": "pw", "second_factor": "totp", "totp_secret": SECRET}
    )
    sim.set_faults({"totp_window_steps": 0, "totp_latency_ms": 1500})
    flow, answer = attempt(sim, "t", "pw")
    assert answer == {"step": "code", "method": "totp", "variant": "silver"}
    stale = code_at(clock.wall_time - 30)
    assert (
        login.handle(sim, flow, {"action": "code", "code": stale})["step"]
        == "code_error"
    )
    assert clock.slept == [1.5]
    good = login.handle(sim, flow, {"action": "code", "code": code_at(clock.wall_time)})
    assert good["step"] == "success"
    assert (sim.counters["codes_received"], sim.counters["second_factor_failures"]) == (
        2,
        1,
    )


def test_totp_matches_neighbour_steps_within_window():
    account = parse_accounts(
        [{"user": "t", "password": "p", "second_factor": "totp", "totp_secret": SECRET}]
    )[0]
    now = 1_700_000_000.0
    assert login.totp_matches(account, code_at(now - 30), now, window=1)
    assert not login.totp_matches(account, code_at(now - 60), now, window=1)
    assert not login.totp_matches(account, "12345", now, window=1)


def test_sms_code_is_sent_and_checked(make_sim):
    sim = make_sim({"user": "s", "password": "pw", "second_factor": "sms"})
    flow, answer = attempt(sim, "s", "pw")
    assert answer["method"] == "sms"
    assert sim.counters["codes_sent"] == 1
    assert (
        login.handle(sim, flow, {"action": "code", "code": sim.last_code})["step"]
        == "success"
    )


def test_picker_offers_methods_and_starts_the_chosen_one(make_sim):
    picker = {
        "user": "p",
        "password": "pw",
        "second_factor": "picker",
        "methods": ["ibkey_push", "sms"],
    }
    sim = make_sim(picker)
    flow, answer = attempt(sim, "p", "pw")
    assert answer == {
        "step": "picker",
        "options": [{"value": "5.2a", "text": "IB Key"}, {"value": "1", "text": "SMS"}],
    }
    bad = login.handle(sim, flow, {"action": "choose", "method": "4"})
    assert bad["step"] == "choose_error"
    assert login.handle(sim, flow, {"action": "choose", "method": "IB Key"}) == {
        "step": "push"
    }
    assert sim.counters["pushes_sent"] == 1


def test_push_waits_expires_resends_and_completes(make_sim, clock):
    sim = make_sim({"user": "k", "password": "pw", "second_factor": "ibkey_push"})
    sim.set_faults({"push_expiry_s": 5})
    flow, _ = attempt(sim, "k", "pw")
    assert login.handle(sim, flow, {"action": "push_status"}) == {"step": "push"}
    clock.advance(6)
    expired = login.handle(sim, flow, {"action": "push_status"})
    assert (expired["step"], expired["message"]) == ("push_error", login.PUSH_EXPIRED)
    login.handle(sim, flow, {"action": "push_resend"})
    assert sim.approve_push() is True
    assert login.handle(sim, flow, {"action": "push_status"})["step"] == "success"


def test_challenge_response_replaces_the_push(make_sim):
    sim = make_sim({"user": "k", "password": "pw", "second_factor": "ibkey_push"})
    flow, _ = attempt(sim, "k", "pw")
    answer = login.handle(sim, flow, {"action": "challenge"})
    assert (answer["variant"], answer["method"]) == ("gold", "ibkey_challenge")
    assert len(sim.last_code) == 8
    assert (
        login.handle(sim, flow, {"action": "code", "code": sim.last_code})["step"]
        == "success"
    )


def test_promo_comes_after_all_factors(make_sim):
    sim = make_sim()
    sim.set_faults({"ibkey_promo": True, "ibkey_promo_auto_continue_s": 7})
    flow, answer = attempt(sim)
    assert answer == {"step": "promo", "auto_continue_s": 7}
    assert login.handle(sim, flow, {"action": "promo_skip"})["step"] == "success"
    assert (sim.counters["promos_shown"], sim.counters["promos_skipped"]) == (1, 1)


def test_lost_flow_and_unknown_action(make_sim):
    sim = make_sim()
    assert login.handle(sim, None, {"action": "login"})["message"] == login.FLOW_LOST
    flow = login.new_flow(sim)
    assert login.handle(sim, flow, {"action": "dance"})["step"] == "error"
    assert (
        login.handle(sim, flow, {"action": "code", "code": "1"})["message"]
        == login.FLOW_LOST
    )
