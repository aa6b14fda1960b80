"""Browser lifecycle helpers that need no browser: flags, preflight, X locks, pins."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium.common.exceptions import (
    StaleElementReferenceException,
    WebDriverException,
)

from ibeam_agents import browser
from ibeam_agents.errors import BrowserUnavailable, GatewayNotRunning
from tests.support.ports import free_port
from tests.unit.ibeam_agents.test_login import options


@pytest.fixture(autouse=True)
def driver_not_suspect():
    """Each test starts with no memory of an earlier driver failure."""
    browser._DRIVER_STATE["suspect"] = False
    yield
    browser._DRIVER_STATE["suspect"] = False


def _fake_program(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def _paths(tmp_path, browser_out, driver_out):
    binary = _fake_program(tmp_path, "chromium", browser_out)
    driver = _fake_program(tmp_path, "chromedriver", driver_out)
    return options(chrome_binary_path=binary, chrome_driver_path=driver)


def test_preflight_returns_browser_version(tmp_path):
    opts = _paths(
        tmp_path,
        "echo 'Chromium 156.0.8078.114 built on Debian'",
        "echo 'ChromeDriver 156.0.8078.114 (ea19f9737303)'",
    )
    assert browser.preflight_browser(opts, start_driver=False) == "156.0.8078.114"


FAKE_DRIVER = """\
import http.server, json, sys
if sys.argv[1:] == ["--version"]:
    print("ChromeDriver 156.0.8078.114 (ea19f9737303)")
    sys.exit(0)
port = int(sys.argv[1].split("=")[1])
class Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"value": {"ready": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Status).serve_forever()
"""


def _python_driver(tmp_path, source: str) -> str:
    script = tmp_path / "fake_driver.py"
    script.write_text(source)
    return _fake_program(
        tmp_path, "chromedriver", f'exec {sys.executable} {script} "$@"'
    )


def test_preflight_starts_the_driver_and_stops_it(tmp_path):
    binary = _fake_program(tmp_path, "chromium", "echo 'Chromium 156.0.8078.114'")
    driver = _python_driver(tmp_path, FAKE_DRIVER)
    opts = options(chrome_binary_path=binary, chrome_driver_path=driver)
    assert browser.preflight_browser(opts) == "156.0.8078.114"
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or ())
    ]


def test_preflight_driver_dying_when_started(tmp_path):
    opts = _paths(
        tmp_path,
        "echo 'Chromium 156.0.8078.114'",
        '[ "$1" = --version ] && { echo "ChromeDriver 156.0.8078.114"; exit 0; }; '
        "exit 3",
    )
    with pytest.raises(BrowserUnavailable, match="exited at once with status 3"):
        browser.preflight_browser(opts)


def test_preflight_after_a_driver_failure_starts_it_again(tmp_path):
    opts = _paths(
        tmp_path,
        "echo 'Chromium 156.0.8078.114'",
        '[ "$1" = --version ] && { echo "ChromeDriver 156.0.8078.114"; exit 0; }; '
        "exit 3",
    )
    with pytest.raises(BrowserUnavailable):
        browser.preflight_browser(opts)
    # A login's own check is versions only, but not while the driver is suspect.
    with pytest.raises(BrowserUnavailable, match="exited at once"):
        browser.preflight_browser(opts, start_driver=False)
    fixed = _python_driver(tmp_path, FAKE_DRIVER)
    good = options(chrome_binary_path=opts.chrome_binary_path, chrome_driver_path=fixed)
    browser.preflight_browser(good, start_driver=False)
    assert browser._DRIVER_STATE["suspect"] is False


def test_preflight_driver_never_ready(tmp_path):
    source = FAKE_DRIVER.replace(
        "http.server.HTTPServer", "import time; time.sleep(60)#"
    )
    driver = _python_driver(tmp_path, source)
    with pytest.raises(BrowserUnavailable, match="did not become ready within 1 s"):
        browser.check_driver_starts(driver, timeout=1.0)


def test_preflight_major_mismatch_is_explained(tmp_path):
    opts = _paths(
        tmp_path,
        "echo 'Chromium 156.0.8078.114'",
        "echo 'ChromeDriver 120.0.6099.71 (abc)'",
    )
    with pytest.raises(BrowserUnavailable) as info:
        browser.preflight_browser(opts)
    message = str(info.value)
    assert "120.0.6099.71" in message and "156.0.8078.114" in message
    assert "IBEAM_CHROME_DRIVER_PATH" in message


def test_preflight_driver_exiting_at_once(tmp_path):
    opts = _paths(tmp_path, "echo 'Chromium 156.0.8078.114'", "exit 1")
    with pytest.raises(BrowserUnavailable, match="printed no version"):
        browser.preflight_browser(opts)


def test_preflight_missing_binary(tmp_path):
    opts = options(chrome_binary_path=str(tmp_path / "nope"))
    with pytest.raises(BrowserUnavailable, match="IBEAM_CHROME_BINARY_PATH"):
        browser.preflight_browser(opts)


def test_preflight_driver_not_executable(tmp_path):
    opts = _paths(tmp_path, "echo 'Chromium 156.0.8078.114'", "echo x")
    os.chmod(opts.chrome_driver_path, 0o644)
    with pytest.raises(BrowserUnavailable, match="not executable"):
        browser.preflight_browser(opts)


def test_chrome_options_are_container_and_network_safe(tmp_path):
    opts = options(ui_scaling=1.5)
    args = browser.chrome_options(opts, str(tmp_path), "SPKIHASH=").arguments
    for flag in (
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--remote-debugging-pipe",
        f"--user-data-dir={tmp_path}",
        "--force-device-scale-factor=1.5",
        "--ignore-certificate-errors-spki-list=SPKIHASH=",
    ):
        assert flag in args
    assert not [a for a in args if a.startswith("--remote-debugging-port")]
    assert "--ignore-certificate-errors" not in args
    assert "--headless" not in args


def test_chrome_options_without_pin_ignore_nothing(tmp_path):
    args = browser.chrome_options(options(), str(tmp_path), None).arguments
    assert not [a for a in args if "ignore-certificate" in a]


def test_browser_env_keeps_home_inside_profile(tmp_path):
    env = browser._browser_env(":7", str(tmp_path))
    assert env["DISPLAY"] == ":7"
    assert env["HOME"] == str(tmp_path)
    assert env["SE_OFFLINE"] == "true"
    assert env["TMPDIR"] == str(tmp_path / browser.BROWSER_TMP)
    assert (tmp_path / browser.BROWSER_TMP).is_dir()


def test_profile_base_avoids_a_temp_dir_too_long_for_sockets(monkeypatch):
    monkeypatch.setattr(browser.tempfile, "gettempdir", lambda: "/tmp/short")
    assert browser._temp_base() == "/tmp/short"
    long_dir = "/tmp/" + "x" * 60
    monkeypatch.setattr(browser.tempfile, "gettempdir", lambda: long_dir)
    assert browser._temp_base() == "/tmp"
    # Chromium's socket path must fit the 108 bytes of a Unix socket address.
    socket_path = (
        "/tmp"
        + "/ibeam-chrome-xxxxxxxx/"
        + browser.BROWSER_TMP
        + "/.org.chromium.Chromium.XXXXXX/SingletonSocket"
    )
    assert len(socket_path) - len("/tmp") + browser.MAX_TEMP_BASE < 108


# --- X display ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [(":99", ("", 99)), (":0.0", ("", 0)), ("localhost:10.1", ("localhost", 10))],
)
def test_parse_display(text, parsed):
    assert browser.parse_display(text) == parsed


def test_parse_display_rejects_garbage():
    with pytest.raises(BrowserUnavailable, match="IBEAM_DISPLAY"):
        browser.parse_display("nodisplay")


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_clear_stale_x_locks_removes_dead_and_foreign_owners(tmp_path):
    (tmp_path / ".X11-unix").mkdir()
    (tmp_path / ".X97-lock").write_text(f"{_dead_pid():>10}\n")
    (tmp_path / ".X11-unix" / "X97").write_text("")
    (tmp_path / ".X98-lock").write_text(f"{os.getpid():>10}\n")  # pid reused
    (tmp_path / ".X99-lock").write_text("garbage")
    cleared = browser.clear_stale_x_locks(tmp_path)
    assert cleared == [97, 98, 99]
    assert not list(tmp_path.glob(".X*-lock"))
    assert not (tmp_path / ".X11-unix" / "X97").exists()


def test_clear_stale_x_locks_keeps_live_x_server(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "_is_x_server", lambda pid: True)
    (tmp_path / ".X5-lock").write_text(f"{os.getpid():>10}\n")
    assert browser.clear_stale_x_locks(tmp_path) == []
    assert (tmp_path / ".X5-lock").exists()


def _x_server_stub(path: Path, reply: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        connection, _ = server.accept()
        connection.recv(12)
        connection.sendall(reply + b"\x00" * 7)
        connection.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_display_answers_x_handshake(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "X_SOCKET_DIR", tmp_path)
    thread = _x_server_stub(tmp_path / "X42", b"\x01")
    assert browser.display_answers(":42")
    thread.join(5)


def test_display_without_server_does_not_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "X_SOCKET_DIR", tmp_path)
    assert not browser.display_answers(":43")
    assert not browser.display_answers("garbage")


# --- certificate pin ------------------------------------------------------------


def _self_signed() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_spki_hash_of_local_tls_server(tmp_path):
    cert_pem, key_pem = _self_signed()
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        connection, _ = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    got = browser.gateway_spki_hash(f"https://localhost:{port}")
    thread.join(5)

    spki = (
        x509.load_pem_x509_certificate(cert_pem)
        .public_key()
        .public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert got == base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_spki_hash_refused_is_gateway_not_running():
    with pytest.raises(GatewayNotRunning, match="IBEAM_GATEWAY_BASE_URL"):
        browser.gateway_spki_hash(f"https://127.0.0.1:{free_port()}")


def test_spki_hash_skipped_for_plain_http():
    assert browser.gateway_spki_hash("http://localhost:5000") is None


# --- redaction ------------------------------------------------------------------


def test_redact_covers_encoded_forms():
    secret = "P$w\"d#1\\a&b|c'z"
    text = " | ".join(
        [
            secret,
            "P$w&quot;d#1\\a&amp;b|c&#x27;z",
            "P%24w%22d%231%5Ca%26b%7Cc%27z",
            "P$w\\\"d#1\\\\a&b|c'z",
        ]
    )
    out = browser.redact(text, [secret])
    assert out.count("[redacted]") == 4
    assert "d#1" not in out


def test_redact_ignores_empty_secrets():
    assert browser.redact("abc", ["", "b"]) == "a[redacted]c"


def test_prune_dumps_keeps_the_newest_pairs(tmp_path):
    for minute in range(25):
        for suffix in (".png", ".html"):
            label = "unknown" if minute % 2 else "error_other"
            (tmp_path / f"login-{label}-20260501-10{minute:02d}00{suffix}").touch()
    (tmp_path / "failure-budget.json").touch()
    browser.prune_dumps(tmp_path, keep=20)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 41 and "failure-budget.json" in left
    assert not any("-100400" in name for name in left)
    assert any("-102400" in name for name in left)


@pytest.mark.parametrize(
    ("message", "changed"),
    [
        (
            'unknown error: unhandled inspector error: {"code":-32000,'
            '"message":"Node with given id does not belong to the document"}',
            True,
        ),
        ("unknown error: No node with given id found", True),
        ("javascript error: Execution context was destroyed.", True),
        ("invalid session id", False),
        ("unknown error: net::ERR_CONNECTION_REFUSED", False),
    ],
)
def test_page_changed_under(message, changed):
    assert browser.page_changed_under(WebDriverException(message)) is changed


def test_page_changed_under_stale_element():
    assert browser.page_changed_under(StaleElementReferenceException("stale"))


class _ScriptRaises:
    def __init__(self, err: Exception) -> None:
        self.err = err

    def execute_script(self, *args):
        raise self.err


def test_read_during_a_page_change_is_loading():
    gone = WebDriverException(
        "unknown error: unhandled inspector error: Node with given id does not "
        "belong to the document"
    )
    page = browser.SeleniumPage(_ScriptRaises(gone))
    assert page.read({}).ready_state == "loading"


def test_read_with_a_dead_browser_raises():
    page = browser.SeleniumPage(_ScriptRaises(WebDriverException("invalid session id")))
    with pytest.raises(WebDriverException, match="invalid session id"):
        page.read({})
