"""Fault knob defaults and validation in gateway_sim.faults."""

from __future__ import annotations

import pytest

from gateway_sim.faults import FaultError, defaults, validate


def test_defaults_match_the_documented_table():
    knobs = defaults()
    assert knobs["login_page"] == "current"
    assert knobs["lockout_after"] == 5
    assert knobs["sso_ttl_s"] == 600
    assert knobs["push_auto_approve"] is None
    assert knobs["pacing"] is True
    assert knobs["auth_delay_ms"] is None


def test_defaults_are_fresh_copies():
    first = defaults()
    first["login_page"] = "legacy"
    assert defaults()["login_page"] == "current"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nope": 1}, "nope is not a fault knob"),
        ({"login_page": "shiny"}, "login_page must be one of"),
        ({"ibkey_promo": "yes"}, "ibkey_promo must be true or false"),
        ({"lockout_after": 0}, "lockout_after must be at least 1"),
        ({"lockout_after": 2.5}, "lockout_after must be an integer"),
        ({"sso_ttl_s": 0}, "sso_ttl_s must be greater than 0"),
        ({"error_status": 200}, "error_status must be at least 400"),
        ({"push_auto_approve": {"on_push": 1}}, "push_auto_approve must be null or"),
        (
            {"push_auto_approve": {"on_push": 0, "after_s": 1}},
            "on_push must be at least 1",
        ),
        (
            {"success_content_type": "plain"},
            "success_content_type must be a media type",
        ),
    ],
)
def test_bad_knobs_are_refused(changes, message):
    with pytest.raises(FaultError, match=message):
        validate(changes)


def test_good_knobs_pass_through():
    changes = {
        "clock_offset_s": -3600.5,
        "auth_delay_ms": None,
        "push_auto_approve": {"on_push": 2, "after_s": 0},
        "never_authenticate": "until_relogin",
    }
    assert validate(changes) == changes
