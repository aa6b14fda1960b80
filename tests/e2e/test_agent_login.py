"""Browser login against the simulator with real Chromium under Xvfb.

Each test starts its own simulator; every login is checked to leave no
chromium, chromedriver or Xvfb process and no temporary profile behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time

import pytest

from ibeam_agents import browser
from ibeam_agents.browser import SeleniumPage
from ibeam_agents.errors import (
    AccountLocked,
    BrowserUnavailable,
    CredentialsRejected,
    GatewayNotRunning,
    PageNotRecognised,
    WrongTradingMode,
)
from tests.e2e.test_agent_login_kit import (
    HOSTILE,
    PASSWORDS,
    login,
    login_sim,
    sha256,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e

sim = pytest.fixture(login_sim)


def test_login_live_form_succeeds(sim, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    result = login(sim, tmp_path, "liveuser")
    took = time.monotonic() - started
    print(
        f"one login with no second factor took {took:.1f} s "
        f"({result.duration_s:.1f} s on the page)"
    )

    assert result.page_variant == "current"
    assert result.second_factor is None
    assert result.steps[-1] == "success"
    state = sim.state()
    assert state["login_successes"] == 1 and state["login_attempts"] == 1
    assert state["mode"] == "live"
    assert "liveuser" not in caplog.text
    assert PASSWORDS["liveuser"] not in caplog.text
    assert "login page: form ->" in caplog.text


def test_login_paper_mode_sets_switch(sim, tmp_path):
    result = login(sim, tmp_path, "paperuser", trading_mode="paper")
    assert result.steps[-1] == "success"
    state = sim.state()
    assert state["mode"] == "paper" and state["wrong_mode_errors"] == 0


def test_login_wrong_mode_stops_without_budget(sim, tmp_path):
    with pytest.raises(WrongTradingMode, match="IBEAM_TRADING_MODE=paper") as info:
        login(sim, tmp_path, "paperuser", trading_mode="live")
    assert not info.value.spends_budget
    state = sim.state()
    assert state["login_attempts"] == 1  # never retried in the other mode
    assert state["wrong_mode_errors"] == 1 and state["login_successes"] == 0


def test_login_wrong_mode_corrected_when_switch_dropped(sim, tmp_path, monkeypatch):
    original = SeleniumPage.click
    dropped = []

    def click(self, element):
        if not dropped and element.get_attribute("type") == "submit":
            # The page loses the switch as the form goes out (a racy SPA).
            self.driver.execute_script(
                "const t = document.getElementById('toggle1');"
                "if (t.checked) { t.click(); }"
            )
            dropped.append(True)
        original(self, element)

    monkeypatch.setattr(SeleniumPage, "click", click)
    result = login(sim, tmp_path, "paperuser", trading_mode="paper")
    assert "wrong_mode" in result.steps and result.steps[-1] == "success"
    state = sim.state()
    assert state["wrong_mode_errors"] == 1
    assert state["login_attempts"] == 2 and state["mode"] == "paper"


@pytest.mark.parametrize(
    ("page", "variant"),
    [("legacy", "legacy"), ("names_only", "names_only"), ("two_step", "current")],
)
def test_login_page_variants(sim, tmp_path, page, variant):
    sim.faults(login_page=page)
    result = login(sim, tmp_path, "liveuser")
    assert result.page_variant == variant
    assert sim.state()["login_successes"] == 1


def test_login_operator_override_comes_first(sim, tmp_path):
    result = login(
        sim,
        tmp_path,
        "liveuser",
        user_name_el="NAME@@username",
        password_el="CSS_SELECTOR@@input[name=password]",
        submit_el="CSS_SELECTOR@@form.xyzform-submit button",
    )
    assert result.page_variant == "operator"


def test_login_unrecognised_page_saves_redacted_dump(sim, tmp_path):
    sim.faults(login_page="unrecognised")
    with pytest.raises(PageNotRecognised) as info:
        login(sim, tmp_path, "hostileuser", page_load_timeout=4.0)
    assert not info.value.spends_budget
    files = sorted((tmp_path / "outputs").iterdir())
    assert [f.suffix for f in files] == [".html", ".png"]
    for path in files:
        data = path.read_bytes()
        assert HOSTILE.encode() not in data and b"hostileuser" not in data
        assert str(path) in str(info.value)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert b"Scheduled maintenance" in files[0].read_bytes()
    assert sim.state()["login_attempts"] == 0


def test_login_bad_password_rejected_once(sim, tmp_path):
    with pytest.raises(CredentialsRejected) as info:
        login(sim, tmp_path, "liveuser", password="not-the-password")
    assert info.value.spends_budget
    assert "not-the-password" not in str(info.value)
    state = sim.state()
    assert state["login_attempts"] == 1 and state["login_failures"] == 1


def test_login_locked_account_is_its_own_class(sim, tmp_path):
    sim.faults(lockout_after=1)
    with pytest.raises(CredentialsRejected):
        login(sim, tmp_path, "liveuser", password="wrong")
    with pytest.raises(AccountLocked) as info:
        login(sim, tmp_path, "liveuser")
    assert not info.value.spends_budget
    assert sim.state()["locked"]


def test_login_promo_skipped_at_once(sim, tmp_path):
    sim.faults(ibkey_promo=True, ibkey_promo_auto_continue_s=120)
    result = login(sim, tmp_path, "liveuser")
    assert "promo" in result.steps
    assert result.duration_s < 60  # skipped, not waited out (auto-continue is 120 s)
    assert sim.state()["promos_skipped"] == 1


def test_login_hostile_password_typed_byte_exact(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    result = login(sim, tmp_path, "hostileuser")
    assert result.steps[-1] == "success"
    assert sim.state()["password_sha256"] == [sha256(HOSTILE)]
    for form in (HOSTILE, json.dumps(HOSTILE)[1:-1], "d#1"):
        assert form not in caplog.text


def _free_display_number() -> int:
    for number in range(150, 250):
        if not os.path.exists(f"/tmp/.X{number}-lock") and not os.path.exists(
            f"/tmp/.X11-unix/X{number}"
        ):
            return number
    raise AssertionError("no free X display number")


@pytest.mark.parametrize("owner", ["dead", "reused"])
def test_login_clears_stale_x_lock(sim, tmp_path, owner, caplog):
    caplog.set_level(logging.INFO)
    number = _free_display_number()
    lock = f"/tmp/.X{number}-lock"
    holder = subprocess.Popen(["sleep", "60"])
    if owner == "dead":
        holder.kill()
        holder.wait()
    try:
        with open(lock, "w") as handle:
            handle.write(f"{holder.pid:>10}\n")
        result = login(sim, tmp_path, "liveuser", display=f":{number}")
    finally:
        holder.kill()
        holder.wait()
        if os.path.exists(lock):
            os.unlink(lock)
            pytest.fail("the stale X lock was not cleared")
    assert result.steps[-1] == "success"
    assert f"cleared stale X lock {lock}" in caplog.text


def test_login_uses_a_running_display_and_leaves_it(sim, tmp_path):
    from pyvirtualdisplay import Display

    display = Display(backend="xvfb", size=(1280, 1024), manage_global_env=False)
    display.start()
    try:
        result = login(sim, tmp_path, "liveuser", display=display.new_display_var)
        assert result.steps[-1] == "success"
        assert display.is_alive()
        assert browser.display_answers(display.new_display_var)
    finally:
        display.stop()


def _fake_driver(tmp_path, body):
    path = tmp_path / "chromedriver"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_login_driver_version_mismatch_stops_before_browser(sim, tmp_path):
    driver = _fake_driver(tmp_path, "echo 'ChromeDriver 99.0.4844.51 (abc)'")
    with pytest.raises(BrowserUnavailable, match="does not match") as info:
        login(sim, tmp_path, "liveuser", chrome_driver_path=driver)
    assert "99.0.4844.51" in str(info.value)
    assert sim.state()["login_attempts"] == 0


def test_login_driver_exiting_at_once_stops(sim, tmp_path):
    driver = _fake_driver(tmp_path, "exit 1")
    with pytest.raises(BrowserUnavailable):
        login(sim, tmp_path, "liveuser", chrome_driver_path=driver)
    assert sim.state()["login_attempts"] == 0


def test_login_driver_dying_after_version_check(sim, tmp_path):
    version = subprocess.run(
        ["/usr/bin/chromedriver", "--version"], capture_output=True, text=True
    ).stdout.strip()
    driver = _fake_driver(
        tmp_path, f'[ "$1" = "--version" ] && {{ echo "{version}"; exit 0; }}; exit 3'
    )
    with pytest.raises(BrowserUnavailable, match="did not start"):
        login(sim, tmp_path, "liveuser", chrome_driver_path=driver)


def test_login_gateway_down_starts_no_browser(sim, tmp_path):
    port = free_port()
    with pytest.raises(GatewayNotRunning):
        login(sim, tmp_path, "liveuser", base_url=f"https://localhost:{port}")


def test_login_gateway_dying_mid_login(sim, tmp_path, monkeypatch):
    original = SeleniumPage.click

    def click(self, element):
        if element.get_attribute("type") == "submit":
            os.killpg(sim.pid, signal.SIGKILL)
            sim.process.wait(10)
        original(self, element)

    monkeypatch.setattr(SeleniumPage, "click", click)
    with pytest.raises(GatewayNotRunning):
        login(sim, tmp_path, "liveuser", step_timeout=5.0)
