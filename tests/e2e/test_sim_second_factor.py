"""Every second-factor path of the simulated login page, in Chromium under Xvfb."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from tests.support.pages import LOGIN, shown, succeeded, until

pytestmark = pytest.mark.e2e

SECRET = "JBSWY3DPEHPK3PXP"  # base32 of "Hello!\xde\xad\xbe\xef"
SECRET_BYTES = b"Hello!\xde\xad\xbe\xef"
FAST = {"auth_delay_ms": 300}


def start_login(driver: WebDriver, gw, user: str) -> None:
    driver.get(gw.base_url + LOGIN)
    shown(driver, "#xyz-field-username").send_keys(user)
    driver.find_element(By.ID, "xyz-field-password").send_keys("pw")
    driver.find_element(By.CSS_SELECTOR, ".btn.btn-lg.xyz-button-login").click()


def account(user: str, second_factor: str, **extra) -> dict:
    return {"user": user, "password": "pw", "second_factor": second_factor, **extra}


def totp_now() -> str:
    return (
        TOTP(SECRET_BYTES, 6, SHA1(), 30, enforce_key_length=False)
        .generate(time.time())
        .decode()
    )


def test_totp_code_wrong_then_right(sim_factory, chromium):
    gw = sim_factory(
        accounts=[account("tina", "totp", totp_secret=SECRET)], faults=FAST
    )
    start_login(chromium, gw, "tina")
    field = shown(chromium, "#xyz-field-silver-response")
    assert field.get_attribute("name") == "silver-response"
    assert field.get_attribute("placeholder") == "Security Code"
    wrong = f"{(int(totp_now()) + 500000) % 1000000:06d}"
    field.send_keys(wrong + Keys.RETURN)
    assert shown(chromium, ".xyz-errormessage").text == "Incorrect security code"
    assert gw.state()["second_factor_failures"] == 1
    field.clear()
    field.send_keys(totp_now() + Keys.RETURN)
    assert succeeded(chromium)
    state = gw.wait_for(lambda s: s["authenticated"])
    assert state["codes_received"] == 2


def test_sms_code_from_the_control_api(sim_factory, chromium):
    gw = sim_factory(accounts=[account("sam", "sms")], faults=FAST)
    start_login(chromium, gw, "sam")
    field = shown(chromium, "#xyz-field-silver-response")
    assert gw.state()["codes_sent"] == 1
    field.send_keys(gw.last_code())
    chromium.find_element(
        By.CSS_SELECTOR, "form.xyzform-silver button[type=submit]"
    ).click()
    assert succeeded(chromium)


def test_ibkey_push_resend_and_approve(sim_factory, chromium):
    gw = sim_factory(accounts=[account("pat", "ibkey_push")], faults=FAST)
    start_login(chromium, gw, "pat")
    shown(chromium, ".xyzblock-notification .xyz-notificationimg")
    assert shown(chromium, ".xyzblock-loading").is_displayed()
    shown(chromium, ".xyz-resendnotification").click()
    until(chromium, lambda d: gw.state()["pushes_sent"] == 2)
    assert gw.state()["push_pending"] is True
    assert gw.approve_push() is True
    assert succeeded(chromium)


def test_ibkey_push_expires_then_auto_approved(sim_factory, chromium):
    knobs = {
        **FAST,
        "push_expiry_s": 1.5,
        "push_auto_approve": {"on_push": 2, "after_s": 1},
    }
    gw = sim_factory(accounts=[account("pat", "ibkey_push")], faults=knobs)
    start_login(chromium, gw, "pat")
    assert "expired" in shown(chromium, ".xyz-errormessage").text
    assert gw.state()["second_factor_failures"] == 1
    shown(chromium, ".xyz-resendnotification").click()
    assert succeeded(chromium)
    assert gw.state()["pushes_sent"] == 2


def test_ibkey_challenge_response_uses_gold_input(sim_factory, chromium):
    gw = sim_factory(accounts=[account("pat", "ibkey_push")], faults=FAST)
    start_login(chromium, gw, "pat")
    shown(chromium, ".xyz-showchallenge").click()
    assert shown(chromium, ".xyz-goldchallenge").text.isdigit()
    shown(chromium, "#xyz-field-gold-response").send_keys(gw.last_code() + Keys.RETURN)
    assert succeeded(chromium)


def test_method_picker_reveals_chosen_input(sim_factory, chromium):
    methods = ["ibkey_push", "totp", "sms"]
    picker = account("mia", "picker", methods=methods, totp_secret=SECRET)
    gw = sim_factory(accounts=[picker], faults={**FAST, "code_input_variant": "bronze"})
    start_login(chromium, gw, "mia")
    select = Select(shown(chromium, "select.xyz-multipleselect"))
    texts = [option.text for option in select.options]
    assert texts == ["Select Type", "IB Key", "Mobile Authenticator App", "SMS"]
    select.select_by_visible_text("Mobile Authenticator App")
    shown(chromium, "#xyz-field-bronze-response").send_keys(totp_now() + Keys.RETURN)
    assert succeeded(chromium)
    assert gw.state()["codes_sent"] == 0


def test_legacy_page_second_factor(sim_factory, chromium):
    gw = sim_factory(
        accounts=[account("sam", "sms")], faults={**FAST, "login_page": "legacy"}
    )
    chromium.get(gw.base_url + LOGIN)
    shown(chromium, "#user_name").send_keys("sam")
    chromium.find_element(By.ID, "password").send_keys("pw")
    chromium.find_element(By.ID, "submitForm").click()
    shown(chromium, "#twofactbase")
    shown(chromium, "#chlginput").send_keys(gw.last_code())
    chromium.find_element(By.ID, "submitForm").click()
    assert succeeded(chromium)
