"""Accounts file validation in gateway_sim.accounts."""

from __future__ import annotations

import pytest

from gateway_sim.accounts import (
    AccountsError,
    default_accounts,
    load_accounts,
    parse_accounts,
)


def test_default_accounts_are_the_demo_user():
    (demo,) = default_accounts()
    assert (demo.user, demo.password, demo.mode, demo.second_factor) == (
        "demo",
        "demo",
        "live",
        "none",
    )


def test_defaults_fill_in_mode_and_account_ids():
    live, paper = parse_accounts(
        {
            "accounts": [
                {"user": "a", "password": "x"},
                {"user": "b", "password": "y", "mode": "paper"},
            ]
        }
    )
    assert (live.mode, live.account_id) == ("live", "U1234567")
    assert paper.account_id == "DU1234568"
    assert paper.paper is True


def test_picker_and_totp_accounts():
    (account,) = parse_accounts(
        [
            {
                "user": "p",
                "password": "x",
                "second_factor": "picker",
                "methods": ["ibkey_push", "totp"],
                "totp_secret": "JBSWY3DPEHPK3PXP",
            }
        ]
    )
    assert account.offered_methods() == ("ibkey_push", "totp")
    assert account.totp_key() == b"Hello!\xde\xad\xbe\xef"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"user": "a"}, r"accounts\[0\]\.password must be a non-empty string"),
        ({"user": "a", "password": 1234}, "password must be a non-empty string"),
        ({"user": "a", "password": "x", "mode": "demo"}, "mode must be live or paper"),
        (
            {"user": "a", "password": "x", "second_factor": "fax"},
            "second_factor must be one of",
        ),
        (
            {"user": "a", "password": "x", "second_factor": "picker"},
            "must list at least one",
        ),
        (
            {"user": "a", "password": "x", "second_factor": "totp"},
            "totp_secret is required",
        ),
        (
            {
                "user": "a",
                "password": "x",
                "second_factor": "totp",
                "totp_secret": "not base32!",
            },
            "totp_secret must be base32",
        ),
        (
            {"user": "a", "password": "x", "colour": "red"},
            "colour is not a known field",
        ),
    ],
)
def test_bad_entries_name_the_field(entry, message):
    with pytest.raises(AccountsError, match=message):
        parse_accounts([entry])


def test_duplicate_users_and_empty_lists_are_refused():
    with pytest.raises(AccountsError, match="appears more than once"):
        parse_accounts([{"user": "a", "password": "x"}, {"user": "a", "password": "y"}])
    with pytest.raises(AccountsError, match="non-empty list"):
        parse_accounts({"accounts": []})


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(AccountsError, match="cannot be read"):
        load_accounts(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("accounts: [\n")
    with pytest.raises(AccountsError, match="not valid YAML"):
        load_accounts(str(broken))


def test_json_view_masks_secrets():
    (account,) = parse_accounts(
        [
            {
                "user": "a",
                "password": "x",
                "second_factor": "totp",
                "totp_secret": "JBSWY3DPEHPK3PXP",
            }
        ]
    )
    view = account.to_json()
    assert (view["password"], view["totp_secret"]) == ("***", "***")
    assert "x" not in repr(account)
