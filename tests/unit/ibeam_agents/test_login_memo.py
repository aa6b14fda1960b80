"""The second-factor memo: an account that needs a code with no source
configured is refused before the browser starts, after the first time."""

from __future__ import annotations

import pytest

from ibeam_agents import login
from ibeam_agents.credentials import Credentials
from ibeam_agents.errors import SecondFactorUnavailable
from ibeam_agents.login import LoginOptions, SecondFactorMemo, perform_login
from ibeam_agents.twofa import TwoFactorConfig

ACCOUNT = "demo_user"


def options(tmp_path) -> LoginOptions:
    return LoginOptions(
        base_url="https://localhost:5000",
        route_auth="/sso/Login",
        trading_mode="live",
        chrome_driver_path="/nonexistent/chromedriver",
        chrome_binary_path="/nonexistent/chromium",
        outputs_dir=tmp_path,
        page_load_timeout=5,
        step_timeout=5,
    )


def test_memo_remembers_and_forgets_per_account(tmp_path):
    memo = SecondFactorMemo(tmp_path)
    assert memo.needed(ACCOUNT) is None
    memo.remember(ACCOUNT, "a security code")
    assert memo.needed(ACCOUNT)["asked"] == "a security code"
    assert memo.needed("someone_else") is None
    assert memo.path.stat().st_mode & 0o777 == 0o600
    assert ACCOUNT not in memo.path.read_text()
    memo.forget(ACCOUNT)
    assert memo.needed(ACCOUNT) is None and not memo.path.exists()


def test_memo_ignores_an_unreadable_file(tmp_path):
    memo = SecondFactorMemo(tmp_path)
    memo.path.write_text("not json")
    assert memo.needed(ACCOUNT) is None
    memo.refuse_if_needed(ACCOUNT)


def test_memo_refusal_names_the_setting_and_the_file(tmp_path):
    memo = SecondFactorMemo(tmp_path)
    memo.remember(ACCOUNT, "a security code")
    with pytest.raises(SecondFactorUnavailable) as info:
        memo.refuse_if_needed(ACCOUNT)
    message = str(info.value)
    assert "IBEAM_TWO_FA_HANDLER" in message and str(memo.path) in message
    assert ACCOUNT not in message


def _no_browser(*_args, **_kwargs):
    raise AssertionError("the browser must not be checked or started")


def test_perform_login_refuses_before_any_browser(tmp_path, monkeypatch):
    monkeypatch.setattr(login, "preflight_browser", _no_browser)
    monkeypatch.setattr(login, "open_browser", _no_browser)
    SecondFactorMemo(tmp_path).remember(ACCOUNT, "a security code")
    with pytest.raises(SecondFactorUnavailable, match="still not set"):
        perform_login(options(tmp_path), Credentials(ACCOUNT, "pw"), None)
    with pytest.raises(SecondFactorUnavailable):
        perform_login(
            options(tmp_path), Credentials(ACCOUNT, "pw"), TwoFactorConfig(None)
        )


def test_perform_login_with_a_source_ignores_the_memo(tmp_path, monkeypatch):
    # Past the memo, the first step is reading the gateway's certificate.
    monkeypatch.setattr(login, "preflight_browser", _no_browser)
    monkeypatch.setattr(login, "gateway_spki_hash", _stop_here)
    SecondFactorMemo(tmp_path).remember(ACCOUNT, "a security code")
    config = TwoFactorConfig("COMMAND", command="echo 123456")
    with pytest.raises(_Stop):
        perform_login(options(tmp_path), Credentials(ACCOUNT, "pw"), config)


class _Stop(Exception):
    pass


def _stop_here(*_args):
    raise _Stop
