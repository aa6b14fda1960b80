"""Log format and redaction of secrets, ids and MAC addresses."""

from __future__ import annotations

import io
import logging
import os

import pytest

from ibeam_agents import logs


@pytest.fixture(autouse=True)
def _clean():
    logs.forget_secrets()
    yield
    logs.forget_secrets()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logs._FlushingHandler):
            root.removeHandler(handler)


def test_redact_registered_secrets_longest_first():
    logs.register_secret("abc")
    logs.register_secret("abcdef")
    assert logs.redact("x abcdef y abc") == "x *** y ***"


def test_redact_ignores_too_short_secrets():
    logs.register_secret("ab")
    logs.register_secret(None)
    assert logs.redact("about") == "about"


@pytest.mark.parametrize(
    "text",
    [
        "MAC 98:F2:B3:23:BF:A0 seen",
        "account U1234567 selected",
        "paper DU7654321 here",
        "session bb665d0f55b6289d70bc7380089fc96f",
        '{"userId": 123456789, "x": 1}',
        '"USER_NAME":"user1234"',
        "sessionId=1234a5b.12345678",
    ],
)
def test_redact_ids_and_macs(text):
    cleaned = logs.redact(text)
    for secret in ("98:F2", "1234567", "7654321", "bb665d0f", "123456789", "user1234"):
        assert secret not in cleaned


def test_redact_leaves_ordinary_text():
    text = "READY -> DEGRADED: TRANSIENT, HTTP 503, Service Unavailable"
    assert logs.redact(text) == text


def test_configured_lines_carry_time_pid_level_and_are_redacted():
    stream = io.StringIO()
    logs.configure_logging("INFO", stream)
    logs.register_secret("hunter22")
    logging.getLogger("ibeam_agents.test").info("password %s typed", "hunter22")
    line = stream.getvalue().strip()
    assert f"[{os.getpid()}] [INFO] ibeam_agents.test: password *** typed" in line
    assert line[:4].isdigit()


def test_tracebacks_are_redacted_too():
    stream = io.StringIO()
    logs.configure_logging("INFO", stream)
    logs.register_secret("topsecret")
    try:
        raise ValueError("bad topsecret")
    except ValueError:
        logging.getLogger("x").exception("failed")
    assert "topsecret" not in stream.getvalue()
    assert "ValueError: bad ***" in stream.getvalue()


def test_configure_twice_keeps_one_handler():
    stream = io.StringIO()
    logs.configure_logging("INFO", stream)
    logs.configure_logging("DEBUG", stream)
    logging.getLogger("y").debug("once")
    assert stream.getvalue().count("once") == 1


def test_parse_level_accepts_any_case():
    assert logs.parse_level("debug") == logging.DEBUG
    assert logs.parse_level("Warn") == logging.WARNING
    with pytest.raises(ValueError):
        logs.parse_level("chatty")
