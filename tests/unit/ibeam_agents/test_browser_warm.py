"""The warm browser, with fakes for everything that would start a process:
its pin from the keystore on disk, and the one-slot take / expire / mismatch logic."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import jks
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ibeam_agents import browser
from ibeam_agents.errors import BrowserUnavailable
from tests.support.tls import self_signed_der
from tests.unit.ibeam_agents.test_browser import _paths
from tests.unit.ibeam_agents.test_login import options

PIN = "pinned-key-hash="
OTHER_PIN = "another-key-hash="

# --- the pin from the keystore on disk ------------------------------------------


def _pair() -> tuple[x509.Certificate, bytes]:
    _, cert, key_der = self_signed_der()
    return cert, key_der


def _expected(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _write_jks(path, password: str) -> x509.Certificate:
    cert, key_der = _pair()
    entry = jks.PrivateKeyEntry.new(
        "gw", [cert.public_bytes(serialization.Encoding.DER)], key_der, "pkcs8"
    )
    jks.KeyStore.new("jks", [entry]).save(str(path), password)
    return cert


def _write_pkcs12(path, password: str) -> x509.Certificate:
    cert, key_der = _pair()
    key = serialization.load_der_private_key(key_der, password=None)
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"gw",
            key,
            cert,
            None,
            serialization.BestAvailableEncryption(password.encode()),
        )
    )
    return cert


def _gateway(tmp_path, conf: str):
    (tmp_path / "root").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root" / "conf.yaml").write_text(conf)
    return tmp_path


def test_keystore_pin_from_the_default_jks(tmp_path):
    gateway = _gateway(tmp_path, "listenPort: 5000\n")
    cert = _write_jks(gateway / "root" / "vertx.jks", "mywebapi")
    pin = browser.keystore_spki_hash(gateway, "https://localhost:5000")
    assert pin == _expected(cert)


def test_keystore_pin_from_a_pkcs12_named_in_conf(tmp_path):
    gateway = _gateway(
        tmp_path, 'sslCert: "ibeam-keystore.p12"\nsslPwd: "s3cret"\nlistenPort: 1\n'
    )
    cert = _write_pkcs12(gateway / "root" / "ibeam-keystore.p12", "s3cret")
    assert browser.keystore_spki_hash(gateway, "https://x:1") == _expected(cert)


def test_keystore_pin_looks_in_the_gateway_dir_first(tmp_path):
    gateway = _gateway(tmp_path, 'sslCert: "keys/gw.jks"\nsslPwd: "pw123456"\n')
    (gateway / "keys").mkdir()
    cert = _write_jks(gateway / "keys" / "gw.jks", "pw123456")
    assert browser.keystore_spki_hash(gateway, "https://x:1") == _expected(cert)


def test_keystore_pin_none_without_tls(tmp_path):
    gateway = _gateway(tmp_path, "listenSsl: false\n")
    assert browser.keystore_spki_hash(gateway, "https://localhost:5000") is None
    assert browser.keystore_spki_hash(tmp_path / "none", "http://localhost:5") is None


@pytest.mark.parametrize(
    "problem", ["wrong password", "no keystore", "no conf", "garbage"]
)
def test_keystore_pin_unreadable_is_a_value_error(tmp_path, problem):
    gateway = _gateway(tmp_path, 'sslPwd: "right-one"\n')
    _write_jks(gateway / "root" / "vertx.jks", "right-one")
    if problem == "wrong password":
        (gateway / "root" / "conf.yaml").write_text('sslPwd: "wrong-one"\n')
    elif problem == "no keystore":
        (gateway / "root" / "vertx.jks").unlink()
    elif problem == "no conf":
        (gateway / "root" / "conf.yaml").unlink()
    else:
        (gateway / "root" / "vertx.jks").write_bytes(b"\xfe\xed\xfe\xed" + b"x" * 40)
    with pytest.raises(ValueError, match="cannot be read"):
        browser.keystore_spki_hash(gateway, "https://localhost:5000")


# --- the warm slot ----------------------------------------------------------------


class FakeDriver:
    def __init__(self) -> None:
        self.pages: list[str] = []
        self.page_load_timeout: float | None = None

    def get(self, url: str) -> None:
        self.pages.append(url)

    def set_page_load_timeout(self, seconds: float) -> None:
        self.page_load_timeout = seconds


class Fakes:
    """Stand-ins for the display, chromedriver, Chromium and the clean-up."""

    def __init__(self, monkeypatch) -> None:
        self.closed: list[browser.BrowserSession] = []
        self.driver_error: Exception | None = None
        self.chromium_error: Exception | None = None
        self.trouble: str | None = None
        self.chromium_gate = threading.Event()
        self.chromium_gate.set()
        monkeypatch.setattr(browser, "acquire_display", self.display)
        monkeypatch.setattr(browser, "_start_service", self.service)
        monkeypatch.setattr(browser, "_start_driver", self.chromium)
        monkeypatch.setattr(browser, "close_session", self.close)
        monkeypatch.setattr(browser, "session_trouble", lambda _s: self.trouble)

    def display(self, _wanted):
        return browser._Display(":99")

    def service(self, session, _options):
        if self.driver_error is not None:
            raise self.driver_error
        session.driver_pid = 4242

    def chromium(self, session, _options, spki):
        self.chromium_gate.wait(10)
        if self.chromium_error is not None:
            raise self.chromium_error
        session.driver = FakeDriver()
        session.pinned = spki
        return session.driver

    def close(self, session):
        self.closed.append(session)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    browser.close_warm_browser()
    profiles = iter(range(1000))
    monkeypatch.setattr(
        browser, "_new_profile", lambda: str(tmp_path / f"profile-{next(profiles)}")
    )
    yield Fakes(monkeypatch)
    browser.close_warm_browser()


def _wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_warm_browser_is_taken_once_and_parked_on_a_blank_page(fakes):
    assert browser.start_warm_browser(options(), PIN)
    session = browser.take_warm_browser(options(page_load_timeout=7), PIN)
    assert session is not None
    assert session.pinned == PIN
    assert session.driver.pages == [browser.WARM_PAGE]
    assert session.driver.page_load_timeout == 7
    assert browser.take_warm_browser(options(), PIN) is None
    assert fakes.closed == []  # the login closes it, with open_browser


def test_warm_browser_with_another_pin_is_closed(fakes, caplog):
    caplog.set_level("INFO", logger="ibeam_agents.browser")
    assert browser.start_warm_browser(options(), PIN)
    assert browser.take_warm_browser(options(), OTHER_PIN) is None
    assert len(fakes.closed) == 1
    assert "pinned certificate is not the one the gateway shows" in caplog.text


def test_warm_browser_without_pin_fits_a_plain_http_gateway(fakes):
    assert browser.start_warm_browser(options(), None)
    assert browser.take_warm_browser(options(), PIN) is None
    assert browser.start_warm_browser(options(), None)
    assert browser.take_warm_browser(options(), None) is not None


def test_warm_browser_with_other_settings_is_closed(fakes):
    assert browser.start_warm_browser(options(), PIN)
    assert browser.take_warm_browser(options(ui_scaling=2.0), PIN) is None
    assert len(fakes.closed) == 1


def test_warm_browser_that_died_is_closed(fakes, caplog):
    caplog.set_level("INFO", logger="ibeam_agents.browser")
    assert browser.start_warm_browser(options(), PIN)
    fakes.trouble = "its chromedriver is gone"
    assert browser.take_warm_browser(options(), PIN) is None
    assert len(fakes.closed) == 1
    assert "its chromedriver is gone" in caplog.text


def test_warm_browser_expires_when_no_login_takes_it(fakes, monkeypatch):
    monkeypatch.setattr(browser, "WARM_TTL", 0.2)
    assert browser.start_warm_browser(options(), PIN)
    _wait_until(lambda: fakes.closed)
    assert browser.take_warm_browser(options(), PIN) is None
    assert len(fakes.closed) == 1


def test_take_waits_for_a_warm_browser_still_starting(fakes):
    fakes.chromium_gate.clear()
    assert browser.start_warm_browser(options(), PIN)
    threading.Timer(0.2, fakes.chromium_gate.set).start()
    assert browser.take_warm_browser(options(), PIN) is not None


def test_take_gives_up_on_a_start_that_hangs(fakes):
    fakes.chromium_gate.clear()
    assert browser.start_warm_browser(options(), PIN)
    assert browser.take_warm_browser(options(), PIN, wait=0.1) is None
    assert fakes.closed == []
    fakes.chromium_gate.set()  # the start ends at last: its thread closes it
    _wait_until(lambda: fakes.closed)


def test_warm_driver_failure_reports_false_and_cleans_up(fakes, caplog):
    caplog.set_level("DEBUG", logger="ibeam_agents.browser")
    fakes.driver_error = BrowserUnavailable("chromedriver did not start: boom")
    assert browser.start_warm_browser(options(), PIN) is False
    assert len(fakes.closed) == 1
    assert browser.take_warm_browser(options(), PIN) is None
    assert "did not start" in caplog.text


def test_warm_chromium_failure_leaves_the_login_a_fresh_start(fakes):
    fakes.chromium_error = BrowserUnavailable("Chromium did not start")
    assert browser.start_warm_browser(options(), PIN)  # the driver ran
    assert browser.take_warm_browser(options(), PIN) is None
    assert len(fakes.closed) == 1


def test_close_warm_browser_closes_a_parked_one(fakes):
    assert browser.start_warm_browser(options(), PIN)
    _wait_until(lambda: browser._SLOT.warm and browser._SLOT.warm.done.is_set())
    browser.close_warm_browser()
    assert len(fakes.closed) == 1
    assert browser.take_warm_browser(options(), PIN) is None


def test_close_warm_browser_waits_for_one_still_starting(fakes):
    fakes.chromium_gate.clear()
    assert browser.start_warm_browser(options(), PIN)
    threading.Timer(0.2, fakes.chromium_gate.set).start()
    browser.close_warm_browser(wait=5)
    assert len(fakes.closed) == 1


def test_a_new_warm_start_replaces_the_old_one(fakes):
    assert browser.start_warm_browser(options(), PIN)
    first = browser._SLOT.warm
    first.done.wait(5)
    assert browser.start_warm_browser(options(), OTHER_PIN)
    assert fakes.closed == [first.session]
    assert browser.take_warm_browser(options(), OTHER_PIN) is not None


# --- the preflight with a warm start ------------------------------------------------

VERSIONS = (
    "echo 'Chromium 156.0.8078.114 built on Debian'",
    "echo 'ChromeDriver 156.0.8078.114 (ea19f9737303)'",
)


def test_preflight_warm_start_replaces_the_lone_driver_check(
    fakes, tmp_path, monkeypatch
):
    opts = _paths(tmp_path, *VERSIONS)
    monkeypatch.setattr(browser, "check_driver_starts", _must_not_run)
    assert browser.preflight_browser(opts, warm=True, spki=PIN) == "156.0.8078.114"
    assert browser.take_warm_browser(opts, PIN) is not None


def test_preflight_warm_failure_reports_as_the_driver_check(
    fakes, tmp_path, monkeypatch
):
    opts = _paths(tmp_path, *VERSIONS)
    fakes.driver_error = BrowserUnavailable("chromedriver did not start: boom")
    checked = []

    def lone_check(driver, timeout=10.0):
        checked.append(driver)
        raise BrowserUnavailable("chromedriver at X exited at once with status 1")

    monkeypatch.setattr(browser, "check_driver_starts", lone_check)
    with pytest.raises(BrowserUnavailable, match="exited at once"):
        browser.preflight_browser(opts, warm=True, spki=PIN)
    assert checked == [opts.chrome_driver_path]
    assert browser._DRIVER_STATE["suspect"] is True
    browser._DRIVER_STATE["suspect"] = False


def test_preflight_version_mismatch_starts_no_warm_browser(fakes, tmp_path):
    opts = _paths(
        tmp_path,
        "echo 'Chromium 156.0.8078.114'",
        "echo 'ChromeDriver 155.0.1.2 (x)'",
    )
    with pytest.raises(BrowserUnavailable, match="does not match"):
        browser.preflight_browser(opts, warm=True, spki=PIN)
    assert browser._SLOT.warm is None


def _must_not_run(*_args, **_kwargs):
    raise AssertionError("the lone driver check must not run")
