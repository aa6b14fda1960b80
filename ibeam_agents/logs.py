"""Log set-up: one format for every line, and a filter that hides secrets.

Every line carries time, pid and level and goes to stdout, flushed at once, so
supervisord and container runtimes see it as it happens.  A redaction filter sits
on the handler, not on a logger, so lines from libraries (urllib3, selenium) are
cleaned as well: it removes every secret registered with `register_secret`,
gateway session ids, IBKR account and user ids, and MAC addresses.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import TextIO

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDACTED = "***"

#: shortest secret worth redacting: shorter ones would blank ordinary words
MIN_SECRET_LENGTH = 3

_MAC_REG = re.compile(r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b")
# IBKR account ids: U1234567 (live), DU1234567 (paper), F/DF/I/DI for advisors.
_ACCOUNT_REG = re.compile(r"\b(?:DU|DF|DI|U|F|I)\d{5,10}\b")
# Gateway session ids are 32 hex digits; a sessionId of iserver/accounts is dotted.
_SESSION_REG = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{6,8}\.[0-9]{6,10}\b")
# Values of JSON keys that identify the user, whatever their shape.
_KEYED_REG = re.compile(
    r"(?P<key>[\"']?(?:userId|USER_ID|USER_NAME|CREDENTIAL|PAPER_USER_NAME|"
    r"session|sessionId|accountId|selectedAccount|username|user_name)[\"']?"
    r"\s*[:=]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,}\]]+)"
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a value that must never appear in a log line."""
    if value is None or len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.add(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests and a fresh library client use it)."""
    with _secrets_lock:
        _secrets.clear()


def redact(text: str) -> str:
    """Return text with secrets, ids and MAC addresses replaced by ***."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _KEYED_REG.sub(lambda m: m.group("key") + REDACTED, text)
    text = _MAC_REG.sub(REDACTED, text)
    text = _ACCOUNT_REG.sub(REDACTED, text)
    return _SESSION_REG.sub(REDACTED, text)


class RedactionFilter(logging.Filter):
    """Rewrite each record so that its message and traceback are redacted."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _FlushingHandler(logging.StreamHandler):
    """A stream handler bound to the stream current at emit time (tests swap it)."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream)
        self._follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stdout:
            self.stream = sys.stdout
        super().emit(record)


def parse_level(value: str) -> int:
    """Map a level name in any case to its number; ValueError when unknown."""
    name = value.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(value)
    return getattr(logging, name)


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None):
    """Send every log line to stdout (or stream), formatted and redacted.

    Replaces handlers this function installed before, so calling it twice is
    harmless.  Returns the handler.
    """
    if isinstance(level, str):
        level = parse_level(level)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _FlushingHandler)]:
        root.removeHandler(old)
    handler = _FlushingHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactionFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # Wire-level chatter of the libraries stays out unless we debug them.
    for noisy in ("urllib3", "selenium", "websocket"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
    return handler
