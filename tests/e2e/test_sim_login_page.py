"""The simulated login page in a real Chromium on a real X display (Xvfb)."""

from __future__ import annotations

import hashlib

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.pages import LOGIN, shown, succeeded, until

pytestmark = pytest.mark.e2e

SUBMIT = ".btn.btn-lg.xyz-button-login"
WRONG_MODE = (
    "You have selected the Live Account Mode, but the specified user is a Paper "
    "Trading user. Please select the correct Login mode."
)
FAST = {"auth_delay_ms": 300}


def open_login(driver: WebDriver, gw) -> None:
    driver.get(gw.base_url + LOGIN)
    shown(driver, "input[name=username], input[name=user_name], .maintenance-notice")


def log_in(driver: WebDriver, user: str, password: str) -> None:
    driver.find_element(By.ID, "xyz-field-username").send_keys(user)
    driver.find_element(By.ID, "xyz-field-password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, SUBMIT).click()


def banner(driver: WebDriver) -> str:
    return shown(driver, ".xyz-errormessage").text


def test_form_is_drawn_by_script_after_load(sim, chromium):
    html = sim.request("GET", LOGIN).text
    assert "<input" not in html
    assert "/sso/lib/xyz.bundle.min.js" in html
    open_login(chromium, sim)
    user = chromium.find_element(By.ID, "xyz-field-username")
    assert user.get_attribute("name") == "username"
    assert user.get_attribute("placeholder") == "Username"
    assert (
        chromium.find_element(By.ID, "xyz-field-password").get_attribute("name")
        == "password"
    )
    button = chromium.find_element(By.CSS_SELECTOR, "button.btn.btn-lg.btn-primary")
    assert "xyz-button-login" in button.get_attribute("class").split()
    assert chromium.find_element(By.CSS_SELECTOR, "label[for=toggle1]").is_displayed()
    assert not chromium.find_element(By.ID, "toggle1").is_selected()
    assert not chromium.find_element(
        By.CSS_SELECTOR, ".xyz-errormessage"
    ).is_displayed()
    assert not chromium.find_element(By.CSS_SELECTOR, "[role=alert]").is_displayed()


def test_demo_login_reaches_client_login_succeeds(sim_factory, chromium):
    gw = sim_factory(faults=FAST)
    open_login(chromium, gw)
    log_in(chromium, "demo", "demo")
    assert succeeded(chromium)
    assert chromium.find_element(By.TAG_NAME, "pre").text == "Client login succeeds"
    assert "/sso/Dispatcher" in chromium.current_url
    state = gw.wait_for(lambda s: s["authenticated"])
    assert (state["login_successes"], state["mode"]) == (1, "live")


def test_bad_passwords_show_banner_then_lock(sim_factory, chromium):
    gw = sim_factory(faults={**FAST, "lockout_after": 2})
    open_login(chromium, gw)
    log_in(chromium, "demo", "nope")
    assert banner(chromium) == "Invalid username password combination"
    assert (
        shown(chromium, "[role=alert]").text == "Invalid username password combination"
    )
    password = chromium.find_element(By.ID, "xyz-field-password")
    password.clear()
    password.send_keys("still-wrong")
    chromium.find_element(By.CSS_SELECTOR, SUBMIT).click()
    until(chromium, lambda d: gw.state()["login_failures"] == 2)
    password.clear()
    password.send_keys("demo")
    chromium.find_element(By.CSS_SELECTOR, SUBMIT).click()
    until(chromium, lambda d: "locked" in banner(d))
    assert gw.state()["locked"] is True


def test_paper_switch_changes_button_and_mode(sim_factory, chromium):
    accounts = [{"user": "paper1", "password": "pw1", "mode": "paper"}]
    gw = sim_factory(accounts=accounts, faults=FAST)
    open_login(chromium, gw)
    log_in(chromium, "paper1", "pw1")
    assert banner(chromium) == WRONG_MODE
    state = gw.state()
    assert (state["login_failures"], state["wrong_mode_errors"]) == (0, 1)
    chromium.find_element(By.CSS_SELECTOR, "label[for=toggle1]").click()
    assert chromium.find_element(By.ID, "toggle1").is_selected()
    button = chromium.find_element(By.CSS_SELECTOR, SUBMIT)
    assert "btn-primary" not in button.get_attribute("class").split()
    assert "paper-trading" in chromium.find_element(By.TAG_NAME, "body").get_attribute(
        "class"
    )
    button.click()
    assert succeeded(chromium)
    assert gw.wait_for(lambda s: s["authenticated"])["mode"] == "paper"


def test_password_is_received_byte_exact(sim_factory, chromium):
    password = "P$w\"d#1\\a&b|c'z"
    gw = sim_factory(accounts=[{"user": "shell", "password": password}], faults=FAST)
    open_login(chromium, gw)
    log_in(chromium, "shell", password)
    assert succeeded(chromium)
    expected = hashlib.sha256(password.encode()).hexdigest()
    assert gw.state()["password_sha256"] == [expected]


def test_ibkey_promo_is_skipped_or_moves_on(sim_factory, chromium):
    gw = sim_factory(
        faults={**FAST, "ibkey_promo": True, "ibkey_promo_auto_continue_s": 2}
    )
    open_login(chromium, gw)
    log_in(chromium, "demo", "demo")
    shown(chromium, ".ibkey-promo-skip").click()
    assert succeeded(chromium)
    open_login(chromium, gw)
    log_in(chromium, "demo", "demo")
    shown(chromium, ".xyzblock-ibkeypromo")
    assert succeeded(chromium)
    state = gw.state()
    assert (
        state["promos_shown"],
        state["promos_skipped"],
        state["login_successes"],
    ) == (
        2,
        1,
        2,
    )


def test_legacy_page_uses_the_old_dom(sim_factory, chromium):
    gw = sim_factory(faults={**FAST, "login_page": "legacy"})
    open_login(chromium, gw)
    assert not chromium.find_elements(By.ID, "xyz-field-username")
    chromium.find_element(By.ID, "user_name").send_keys("demo")
    chromium.find_element(By.ID, "password").send_keys("bad")
    chromium.find_element(By.ID, "submitForm").click()
    error = shown(chromium, "#ERRORMSG")
    assert error.text == "Invalid username password combination"
    assert error.get_attribute("class") == "alert alert-danger margin-top-10"
    chromium.find_element(By.ID, "password").clear()
    chromium.find_element(By.ID, "password").send_keys("demo")
    chromium.find_element(By.ID, "submitForm").click()
    assert succeeded(chromium)


def test_other_page_variants(sim_factory, chromium):
    gw = sim_factory(faults={**FAST, "login_page": "names_only"})
    open_login(chromium, gw)
    user = chromium.find_element(By.NAME, "username")
    assert user.get_attribute("id") == ""
    assert not chromium.find_elements(By.CSS_SELECTOR, ".xyz-button-login")
    user.send_keys("demo")
    chromium.find_element(By.NAME, "password").send_keys("demo")
    chromium.find_element(
        By.CSS_SELECTOR, "form.xyzform-submit button[type=submit]"
    ).click()
    assert succeeded(chromium)

    gw.faults(login_page="two_step")
    open_login(chromium, gw)
    assert not chromium.find_element(By.NAME, "password").is_displayed()
    chromium.find_element(By.NAME, "username").send_keys("demo")
    shown(chromium, ".xyzblock-username-submit button").click()
    shown(chromium, "input[name=password]").send_keys("demo")
    chromium.find_element(By.CSS_SELECTOR, SUBMIT).click()
    assert succeeded(chromium)

    gw.faults(login_page="unrecognised")
    open_login(chromium, gw)
    assert chromium.find_elements(By.TAG_NAME, "input") == []
    assert "maintenance" in chromium.find_element(By.TAG_NAME, "body").text.lower()
