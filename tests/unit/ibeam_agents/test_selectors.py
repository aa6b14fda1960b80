"""Element setting syntax, the built-in fallback chains, and snapshot parsing."""

from __future__ import annotations

import pytest

from ibeam_agents.errors import ConfigError
from ibeam_agents.selectors import (
    BUILT_IN,
    HIDDEN_OK,
    TEXT_NEEDED,
    How,
    Locator,
    build_chains,
    parse_locator,
    parse_snapshot,
    script_spec,
    success_chain,
)


@pytest.mark.parametrize(
    ("text", "how", "value"),
    [
        ("ID@@user_name", How.ID, "user_name"),
        ("NAME@@username", How.NAME, "username"),
        (
            "CSS_SELECTOR@@.btn.btn-lg.xyz-button-login",
            How.CSS_SELECTOR,
            ".btn.btn-lg.xyz-button-login",
        ),
        (
            "CLASS_NAME@@login-step-notification",
            How.CLASS_NAME,
            "login-step-notification",
        ),
        ("XPATH@@//input[@name='u']", How.XPATH, "//input[@name='u']"),
        ("TAG_NAME@@Client login succeeds", How.TAG_NAME, "Client login succeeds"),
        ("FOR@@label[for=toggle1]", How.FOR, "label[for=toggle1]"),
        ("name@@username", How.NAME, "username"),
        ("  NAME@@ username  ", How.NAME, "username"),
    ],
)
def test_parse_locator_reads_every_type(text, how, value):
    locator = parse_locator(text, "IBEAM_USER_NAME_EL")
    assert (locator.how, locator.value, locator.origin) == (how, value, "operator")


def test_parse_locator_bare_value_is_an_id():
    assert parse_locator("submitForm", "IBEAM_SUBMIT_EL_ID") == Locator(
        How.ID, "submitForm"
    )


def test_parse_locator_keeps_separator_inside_value():
    locator = parse_locator("XPATH@@//a[@x='a@@b']", "S")
    assert locator.value == "//a[@x='a@@b']"


def test_parse_locator_unknown_type_names_setting():
    with pytest.raises(ConfigError) as info:
        parse_locator("LINK@@x", "IBEAM_SUBMIT_EL")
    message = str(info.value)
    assert "IBEAM_SUBMIT_EL" in message and "'LINK'" in message
    assert "CSS_SELECTOR" in message


@pytest.mark.parametrize("text", ["", "   ", "NAME@@", "ID@@   "])
def test_parse_locator_empty_parts_rejected(text):
    with pytest.raises(ConfigError, match="IBEAM_PASSWORD_EL"):
        parse_locator(text, "IBEAM_PASSWORD_EL")


def test_success_chain_bare_value_is_text():
    (locator,) = success_chain("Client login succeeds")
    assert locator.how is How.TAG_NAME
    assert locator.value == "Client login succeeds"


def test_success_chain_accepts_ibeam_syntax():
    (locator,) = success_chain("TAG_NAME@@Client login succeeds")
    assert (locator.how, locator.value) == (How.TAG_NAME, "Client login succeeds")


def test_build_chains_puts_operator_override_first():
    chains = build_chains({"user_name": "NAME@@login", "password": None}, "ok")
    first = chains["user_name"][0]
    assert (first.how, first.value, first.origin) == (How.NAME, "login", "operator")
    assert chains["user_name"][1:] == BUILT_IN["user_name"]
    assert chains["password"] == BUILT_IN["password"]


def test_build_chains_bad_override_names_its_setting():
    with pytest.raises(ConfigError, match="IBEAM_SUBMIT_EL"):
        build_chains({"submit": "BOGUS@@x"}, "ok")


def _values(name):
    return [(loc.how, loc.value, loc.origin) for loc in BUILT_IN[name]]


def test_user_name_chain_knows_current_legacy_and_generic():
    values = _values("user_name")
    assert values[0] == (How.ID, "xyz-field-username", "current")
    assert (How.NAME, "username", "names_only") in values
    assert (How.ID, "user_name", "legacy") in values
    assert values[-1][2] == "generic"


def test_chains_order_current_before_legacy_before_generic():
    rank = {"current": 0, "names_only": 1, "legacy": 2, "generic": 3}
    for name, chain in BUILT_IN.items():
        ranks = [rank[loc.origin] for loc in chain]
        assert ranks == sorted(ranks), name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("password", (How.ID, "xyz-field-password")),
        ("password", (How.CSS_SELECTOR, "input[type=password]")),
        ("submit", (How.ID, "submitForm")),
        ("submit", (How.CSS_SELECTOR, ".btn.btn-lg.xyz-button-login")),
        ("error", (How.CSS_SELECTOR, ".xyz-errormessage")),
        ("error", (How.ID, "ERRORMSG")),
        ("error", (How.CSS_SELECTOR, ".alert-danger")),
        ("mode_switch", (How.FOR, "toggle1")),
        ("method_picker", (How.ID, "sf_select")),
        ("code_input", (How.ID, "xyz-field-silver-response")),
        ("code_input", (How.ID, "xyz-field-bronze-response")),
        ("code_input", (How.ID, "xyz-field-gold-response")),
        ("code_input", (How.ID, "xyz-field-temp-response")),
        ("code_input", (How.ID, "chlginput")),
        ("code_input", (How.CSS_SELECTOR, "input[placeholder='Security Code' i]")),
        ("push_block", (How.CLASS_NAME, "login-step-notification")),
        ("resend", (How.CSS_SELECTOR, ".xyz-resendnotification")),
        ("promo_skip", (How.CSS_SELECTOR, "a.ibkey-promo-skip")),
    ],
)
def test_chain_contains_reference_locator(name, expected):
    assert expected in [(loc.how, loc.value) for loc in BUILT_IN[name]]


def test_script_spec_flags_hidden_and_text_chains():
    chains = build_chains({}, "Client login succeeds")
    spec = {entry[0]: entry for entry in script_spec(chains)}
    assert spec["mode_checkbox"][1] is False  # may be hidden
    assert spec["password"][1] is True
    assert spec["error"][2] is True  # an empty banner is no error
    assert spec["success"][3] == [["TAG_NAME", "Client login succeeds"]]
    assert HIDDEN_OK == {"mode_checkbox"} and TEXT_NEEDED == {"error"}


def test_parse_snapshot_maps_index_to_locator():
    chains = build_chains({}, "ok")
    raw = {
        "found": {
            "user_name": {"i": 2, "el": "E1", "text": "", "len": 4, "ident": "#u"},
            "method_picker": {
                "i": 0,
                "el": "E2",
                "text": "Select Type",
                "value": "",
                "options": [["Select Type", ""], ["IB Key", "5.2a"]],
            },
            "mode_checkbox": {"i": 0, "el": "E3", "text": "", "checked": True},
        },
        "url": "https://localhost:5000/sso/Login",
        "ready": "complete",
        "doc": "123",
        "mutations": 7,
        "invalid": ["submit: CSS_SELECTOR@@[["],
    }
    snap = parse_snapshot(raw, chains)
    assert snap.get("user_name").locator == chains["user_name"][2]
    assert snap.get("user_name").value_len == 4
    assert snap.get("user_name").ident == "#u"
    assert snap.get("mode_checkbox").ident == ""
    assert snap.get("method_picker").options == (
        ("Select Type", ""),
        ("IB Key", "5.2a"),
    )
    assert snap.get("mode_checkbox").checked is True
    assert (snap.document, snap.mutations) == ("123", 7)
    assert snap.invalid == ("submit: CSS_SELECTOR@@[[",)
    assert not snap.has("password")
