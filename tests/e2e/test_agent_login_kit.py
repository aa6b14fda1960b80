"""Shared pieces of the browser login e2e tests (no tests here).

Every login goes through ``login()``: a real ``perform_login`` against a real
simulator, under a process-tracking token, followed by the checks that no
browser, driver or display of this login is left and that its temporary
profile is gone, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway_sim.harness import SimGateway
from ibeam_agents.credentials import Credentials
from ibeam_agents.login import LoginOptions, LoginResult, perform_login
from ibeam_agents.twofa import TwoFactorConfig
from tests.support.needs import require_binaries
from tests.support.procs import assert_none_left, tracking

ROUTE_AUTH = "/sso/Login?forwardTo=22&RL=1&ip2loc=on"
TOTP_SECRET = "JBSWY3DPEHPK3PXP"
HOSTILE = "P$w\"d#1\\a&b|c'z"


def _account(user: str, mode: str, factor: str, **extra: Any) -> dict[str, Any]:
    account = {
        "user": user,
        "password": extra.pop("password", f"{user}-pw"),
        "mode": mode,
        "second_factor": factor,
        "methods": extra.pop("methods", []),
        "totp_secret": extra.pop("totp_secret", None),
        "account_id": extra.pop("account_id", "U1234567"),
    }
    return account


ACCOUNTS = [
    _account("liveuser", "live", "none"),
    _account("paperuser", "paper", "none", account_id="DU1234567"),
    _account("hostileuser", "live", "none", password=HOSTILE),
    _account("totpuser", "live", "totp", totp_secret=TOTP_SECRET),
    _account("smsuser", "live", "sms"),
    _account("pushuser", "live", "ibkey_push"),
    _account(
        "pickeruser",
        "live",
        "picker",
        methods=["ibkey_push", "totp", "sms"],
        totp_secret=TOTP_SECRET,
    ),
]
PASSWORDS = {account["user"]: account["password"] for account in ACCOUNTS}


def start_sim(tmp_path: Path, **faults: Any) -> SimGateway:
    """A simulator with the test accounts, started on free ports."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    sim = SimGateway(tmp_path / "gw", accounts=ACCOUNTS, faults=faults)
    return sim.install().start()


def login_sim(tmp_path: Path, monkeypatch) -> Iterator[SimGateway]:
    """A test module's ``sim`` fixture (``sim = pytest.fixture(login_sim)``): a
    simulator with the login accounts, stopped after the test; DISPLAY is unset
    so that every login starts (and stops) its own Xvfb."""
    monkeypatch.delenv("DISPLAY", raising=False)
    gateway = start_sim(tmp_path)
    yield gateway
    gateway.stop()


def options_for(sim: SimGateway, tmp_path: Path, **changes: Any) -> LoginOptions:
    settings = {
        "base_url": sim.base_url,
        "route_auth": ROUTE_AUTH,
        "trading_mode": "live",
        "chrome_driver_path": "/usr/bin/chromedriver",
        "chrome_binary_path": "/usr/bin/chromium",
        "outputs_dir": tmp_path / "outputs",
        "page_load_timeout": 20.0,
        "step_timeout": 15.0,
    }
    settings.update(changes)
    return LoginOptions(**settings)


@contextlib.contextmanager
def _private_tempdir(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    previous = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = previous


def login(
    sim: SimGateway,
    tmp_path: Path,
    user: str,
    *,
    password: str | None = None,
    two_factor: TwoFactorConfig | None = None,
    notify: Any = None,
    **changes: Any,
) -> LoginResult:
    """One perform_login; afterwards nothing of it may be left running or on disk."""
    options = options_for(sim, tmp_path, **changes)
    credentials = Credentials(
        user, PASSWORDS.get(user, "") if password is None else password
    )
    with tracking() as snap, _private_tempdir(tmp_path / "tmp") as scratch:
        try:
            return perform_login(options, credentials, two_factor, notify=notify)
        finally:
            assert_none_left(snap, grace=0)
            assert list(scratch.iterdir()) == [], "temporary profile left behind"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
