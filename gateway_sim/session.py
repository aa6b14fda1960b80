"""The simulated gateway's session: SSO, brokerage session, counters and timers.

States follow shared/reference/gateway.md §3: A (nobody logged in), B
(authenticated), C (SSO present, brokerage not authenticated), D (competing),
E (SSO gone). One lock guards everything; a ticker thread calls `tick()` a few
times a second so that timed behaviour happens even when nobody asks.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from . import bodies
from . import faults as fault_knobs
from .accounts import Account
from .bodies import (
    HARDWARE_INFO,
    INIT_FIRST,
    MAC,
    NO_SESSION_BODY,
    SERVER_INFO,
    UNAUTHORIZED,
    Reply,
    json_reply,
)

NEW_YORK = ZoneInfo("America/New_York")
MAX_ROUTE_KEYS = 256


@dataclass
class Sso:
    """The SSO session created by a completed browser login."""

    account: Account
    session_id: str
    started: float
    expires: float
    auth_time_ms: int


@dataclass
class Push:
    """One IB Key notification sent to the user's phone."""

    number: int
    flow: str
    sent: float
    expires: float
    approved: bool = False
    auto_at: float | None = None


class Simulator:
    """All mutable state of one simulated gateway."""

    def __init__(
        self,
        accounts: list[Account],
        *,
        auth_delay_ms: int = 3000,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ):
        self.lock = threading.RLock()
        self.wall, self.mono, self.sleep = wall, mono, sleep
        self.log = log or (lambda line: None)
        self.conf_auth_delay_ms = auth_delay_ms
        self.accounts: dict[str, Account] = {a.user: a for a in accounts}
        self.reset()

    # ----- lifecycle -------------------------------------------------------

    def reset(self) -> None:
        """Back to a freshly started gateway; accounts are kept."""
        with self.lock:
            self.faults = fault_knobs.defaults()
            self.sso: Sso | None = None
            self.gone_style: str | None = None
            self.ever_logged_in = False
            self.authenticated = self.connected = self.competing = False
            self.pending_auth_at: float | None = None
            self.reauth_blocked = False
            self.relogin_cures = False
            self.last_api = self.mono()
            self.reset_mark = self.now()
            self.error_until = 0.0
            self.hang_until = 0.0
            self.counters: Counter[str] = Counter()
            self.password_sha256: list[str] = []
            self.session_ids: list[str] = []
            self.requests: Counter[str] = Counter()
            self.streaks: dict[str, int] = {}
            self.locked: set[str] = set()
            self.push: Push | None = None
            self.last_code: str | None = None
            self.flows: OrderedDict[str, Any] = OrderedDict()
            self.ballast: list[bytearray] = []
            self.growth_started = self.mono()

    def now(self) -> float:
        """The simulated wall clock: real time shifted by clock_offset_s."""
        return self.wall() + float(self.faults["clock_offset_s"])

    def auth_delay_s(self) -> float:
        delay = self.faults["auth_delay_ms"]
        if delay is None:
            delay = self.conf_auth_delay_ms
        return delay / 1000.0

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate and merge knobs; time windows start now."""
        checked = fault_knobs.validate(changes)
        with self.lock:
            self.faults.update(checked)
            self._apply_fault_side_effects(checked)
            return dict(self.faults)

    def _apply_fault_side_effects(self, checked: dict[str, Any]) -> None:
        m = self.mono()
        if "error_for_s" in checked:
            self.error_until = m + checked["error_for_s"]
        if "hang_for_s" in checked:
            self.hang_until = m + checked["hang_for_s"]
        if "clock_offset_s" in checked:
            self.reset_mark = self.now()
        if "sso_ttl_s" in checked and self.sso is not None:
            self.sso.expires = self._capped(m + checked["sso_ttl_s"])
        if "memory_growth_mb_per_min" in checked:
            self.growth_started = m
            self.ballast = []
        if checked.get("never_authenticate", "off") != "off" and self.authenticated:
            self._drop_brokerage()
        if "push_auto_approve" in checked:
            self._arm_auto_approve(self.push)

    def set_accounts(self, accounts: list[Account]) -> None:
        with self.lock:
            self.accounts = {a.user: a for a in accounts}
            self.locked &= set(self.accounts)

    # ----- timers ----------------------------------------------------------

    def tick(self) -> None:
        """Run every timed behaviour that is due."""
        with self.lock:
            m = self.mono()
            if self.pending_auth_at is not None and m >= self.pending_auth_at:
                self.pending_auth_at = None
                self._complete_auth()
            if self.sso is not None and m >= self._sso_deadline():
                self._end_sso(self.faults["expire_style"], "SSO session expired")
            idle = m - self.last_api > self.faults["idle_timeout_s"]
            if self.sso is not None and self.authenticated and idle:
                self.log("brokerage session ended: idle timeout")
                self._drop_brokerage()
            self._check_resets()
            self._check_push(m)
        self._grow_memory()

    def _sso_deadline(self) -> float:
        assert self.sso is not None
        return self.sso.expires

    def _capped(self, deadline: float) -> float:
        lifetime = self.faults["session_lifetime_s"]
        if lifetime is None or self.sso is None:
            return deadline
        return min(deadline, self.sso.started + lifetime)

    def _check_resets(self) -> None:
        now = self.now()
        last, self.reset_mark = self.reset_mark, now
        if not self.faults["nightly_reset"] or now <= last:
            return
        boundary = last_reset_boundary(now)
        if boundary <= last:
            return
        day = datetime.datetime.fromtimestamp(boundary, NEW_YORK)
        if day.weekday() == 6:
            self.counters["sunday_resets"] += 1
            self.reauth_blocked = True
            if self.sso is not None:
                self._end_sso(self.faults["expire_style"], "Sunday reset")
            return
        self.counters["nightly_resets"] += 1
        if self.sso is not None and (self.authenticated or self.pending_auth_at):
            self.log("brokerage session ended: nightly reset")
            self._drop_brokerage()

    def _check_push(self, m: float) -> None:
        push = self.push
        if push is None or push.approved or push.auto_at is None:
            return
        if push.auto_at <= m < push.expires:
            push.approved = True
            self.log(f"IB Key push {push.number} approved automatically")

    def _grow_memory(self) -> None:
        rate = self.faults["memory_growth_mb_per_min"]
        if rate <= 0:
            return
        target = int(rate * (self.mono() - self.growth_started) / 60.0)
        while len(self.ballast) < target:
            # Written bytes, not calloc'd ones, so that resident memory grows.
            self.ballast.append(bytearray(b"\x5a") * (1 << 20))
        limit = self.faults["memory_limit_mb"]
        if limit is not None and resident_mb() > limit:
            print(
                f"gateway_sim: resident memory above memory_limit_mb={limit}: "
                "killed as the kernel's OOM killer would",
                file=sys.stderr,
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGKILL)

    # ----- transitions -----------------------------------------------------

    def _stuck(self) -> bool:
        return self.faults["never_authenticate"] != "off"

    def _complete_auth(self) -> None:
        if self.sso is None:
            return
        if self._stuck():
            self.authenticated, self.connected, self.competing = False, True, False
            return
        self.authenticated, self.connected, self.competing = True, True, False
        self.log("brokerage session authenticated")

    def _drop_brokerage(self) -> None:
        self.authenticated, self.connected, self.competing = False, True, False
        self.pending_auth_at = None

    def _end_sso(self, style: str, reason: str) -> None:
        self.sso = None
        self.gone_style = style
        self.authenticated = self.connected = self.competing = False
        self.pending_auth_at = None
        self.counters["sso_ends"] += 1
        self.log(f"SSO session ended: {reason}")

    def note_api(self) -> None:
        with self.lock:
            self.last_api = self.mono()

    def count_request(self, path: str) -> None:
        with self.lock:
            key = (
                path
                if path in self.requests or len(self.requests) < MAX_ROUTE_KEYS
                else "other"
            )
            self.requests[key] += 1

    def record_password(self, password: str) -> None:
        digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
        with self.lock:
            self.password_sha256.append(digest)

    def complete_login(self, account: Account) -> None:
        """A browser reached /sso/Dispatcher after a full login."""
        with self.lock:
            m = self.mono()
            if (
                self.faults["never_authenticate"] == "until_relogin"
                and self.relogin_cures
            ):
                self.faults["never_authenticate"] = "off"
                self.relogin_cures = False
            self.sso = Sso(
                account=account,
                session_id=secrets.token_hex(16),
                started=m,
                expires=m,
                auth_time_ms=int(self.now() * 1000),
            )
            self.sso.expires = self._capped(m + self.faults["sso_ttl_s"])
            # Kept so that a test can search its captured output for every id
            # the gateway handed out (the security sweep); bounded.
            self.session_ids = [*self.session_ids, self.sso.session_id][-64:]
            self.gone_style = None
            self.ever_logged_in = True
            self.reauth_blocked = False
            self.authenticated = self.connected = self.competing = False
            self.pending_auth_at = m + self.auth_delay_s()
            self.last_api = m
            self.push = None
            self.counters["login_successes"] += 1
            self.log(f"Client login succeeds (mode {account.mode})")

    # ----- JSON of the session routes --------------------------------------

    def _status_object(self, full: bool) -> dict[str, Any]:
        if not self.connected:
            return {
                "authenticated": False,
                "competing": False,
                "connected": False,
                "MAC": MAC,
            }
        status = {
            "authenticated": self.authenticated,
            "competing": self.competing if self.authenticated else False,
            "connected": True,
            "message": "",
            "MAC": MAC,
            "serverInfo": dict(SERVER_INFO),
        }
        if full:
            status["hardware_info"] = HARDWARE_INFO
            status["fail"] = ""
        return status

    def _sso_left_ms(self) -> int:
        assert self.sso is not None
        return max(0, int((self.sso.expires - self.mono()) * 1000))

    def _no_sso(self, tickle: bool = False) -> Reply:
        if tickle and self.gone_style == "no_session":
            return Reply(200, NO_SESSION_BODY, "application/json;charset=utf-8")
        return UNAUTHORIZED

    def tickle(self) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso(tickle=True)
            return json_reply(
                {
                    "session": self.sso.session_id,
                    "ssoExpires": self._sso_left_ms(),
                    "collission": self.faults["collission"],
                    "userId": self.sso.account.user_id,
                    "hmds": {"error": "no bridge"},
                    "iserver": {"authStatus": self._status_object(full=False)},
                }
            )

    def auth_status(self) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            return json_reply(self._status_object(full=True))

    def validate(self, client_ip: str) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            self.counters["validations"] += 1
            self.sso.expires = self._capped(self.mono() + self.faults["sso_ttl_s"])
            account = self.sso.account
            now_ms = int(self.now() * 1000)
            return json_reply(
                {
                    "USER_ID": account.user_id,
                    "USER_NAME": account.user,
                    "RESULT": True,
                    "AUTH_TIME": self.sso.auth_time_ms,
                    "SF_ENABLED": account.second_factor != "none",
                    "IS_FREE_TRIAL": False,
                    "CREDENTIAL": account.user,
                    "IP": client_ip,
                    "EXPIRES": self._sso_left_ms(),
                    "QUALIFIED_FOR_MOBILE_AUTH": None,
                    "LANDING_APP": "UNIVERSAL",
                    "IS_MASTER": False,
                    "lastAccessed": now_ms,
                    "LOGIN_TYPE": 2 if account.paper else 1,
                    "PAPER_USER_NAME": account.user,
                    "features": bodies.features(),
                    "region": "NJ",
                }
            )

    def reauthenticate(self) -> Reply:
        """Answered by the gateway itself, never by IBKR (reference §2.2)."""
        with self.lock:
            if not self.ever_logged_in:
                return Reply(
                    200, {"error": "not logged in"}, "application/json; charset=utf-8"
                )
            self.counters["reauthentications"] += 1
            refused = self.reauth_blocked or self.faults["reauth_refused"]
            if self.sso is not None and not refused:
                self.pending_auth_at = self.mono() + self.auth_delay_s()
            return Reply(
                200, {"message": "triggered"}, "application/json; charset=utf-8"
            )

    def ssodh_init(self, body: bytes) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            options = _json_object(body)
            if options.get("publish", True) is False:
                return json_reply(
                    {"error": "publish must be true", "statusCode": 500}, 500
                )
            self.counters["ssodh_inits"] += 1
            refused = (
                self.reauth_blocked or self.faults["reauth_refused"] or self._stuck()
            )
            take_over = bool(options.get("compete", False))
            if not refused and (not self.competing or take_over):
                self.authenticated, self.connected, self.competing = True, True, False
                self.pending_auth_at = None
            elif self._stuck():
                self.connected = True
            return json_reply(self._status_object(full=True))

    def logout(self) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            self.counters["logouts"] += 1
            self.authenticated = self.connected = self.competing = False
            self.pending_auth_at = None
            if self.faults["never_authenticate"] == "until_relogin":
                self.relogin_cures = True
            return json_reply({"status": True})

    def one_user(self) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            account = self.sso.account
            return json_reply(
                {
                    "active": True,
                    "username": account.user,
                    "userid": account.user_id,
                    "ispaper": account.paper,
                    "has2fa": account.second_factor != "none",
                    "islite": False,
                    "ismaster": False,
                    "accounts": [account.account_id],
                    "features": bodies.features(),
                }
            )

    def _iserver_gate(self) -> Reply | None:
        if self.sso is None:
            return self._no_sso()
        if self._stuck():
            return UNAUTHORIZED
        if not self.authenticated:
            return json_reply(INIT_FIRST, 400)
        return None

    def iserver_accounts(self) -> Reply:
        with self.lock:
            gate = self._iserver_gate()
            if gate is not None:
                return gate
            if self.competing:
                return json_reply({})
            assert self.sso is not None
            return json_reply(
                bodies.iserver_accounts(self.sso.account, self.sso.session_id)
            )

    def iserver_other(self) -> Reply:
        with self.lock:
            gate = self._iserver_gate()
            if gate is not None:
                return gate
            return json_reply({"error": "route not simulated", "statusCode": 404}, 404)

    def portfolio_accounts(self) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            return json_reply([bodies.portfolio_account(self.sso.account)])

    def other_api(self) -> Reply:
        with self.lock:
            if self.sso is None:
                return self._no_sso()
            return json_reply({"error": "route not simulated", "statusCode": 404}, 404)

    # ----- control API -----------------------------------------------------

    def expire(self, style: str) -> None:
        with self.lock:
            self._end_sso(style, f"expired by the control API ({style})")
            self.counters["expirations"] += 1

    def compete(self) -> bool:
        with self.lock:
            if self.sso is None:
                return False
            self.authenticated, self.connected, self.competing = True, True, True
            self.pending_auth_at = None
            self.log("brokerage session taken by another platform")
            return True

    def drop(self) -> bool:
        with self.lock:
            if self.sso is None:
                return False
            self._drop_brokerage()
            self.log("brokerage session dropped by the control API")
            return True

    def send_push(self, flow: str) -> Push:
        with self.lock:
            self.counters["pushes_sent"] += 1
            m = self.mono()
            push = Push(
                number=self.counters["pushes_sent"],
                flow=flow,
                sent=m,
                expires=m + self.faults["push_expiry_s"],
            )
            self._arm_auto_approve(push)
            self.push = push
            return push

    def _arm_auto_approve(self, push: Push | None) -> None:
        rule = self.faults["push_auto_approve"]
        if push is None:
            return
        if rule and rule["on_push"] == push.number:
            push.auto_at = push.sent + rule["after_s"]
        else:
            push.auto_at = None

    def push_pending(self) -> bool:
        with self.lock:
            push = self.push
            return bool(push and not push.approved and self.mono() < push.expires)

    def approve_push(self) -> bool:
        with self.lock:
            if not self.push_pending():
                return False
            assert self.push is not None
            self.push.approved = True
            self.log(f"IB Key push {self.push.number} approved by the control API")
            return True

    def state(self) -> dict[str, Any]:
        with self.lock:
            c = self.counters
            account = self.sso.account if self.sso else None
            return {
                "authenticated": self.authenticated,
                "competing": self.competing,
                "connected": self.connected,
                "locked": bool(self.locked),
                "locked_accounts": sorted(self.locked),
                "sso": self.sso is not None,
                "sso_expires_ms": self._sso_left_ms() if self.sso else None,
                "gone_style": self.gone_style,
                "ever_logged_in": self.ever_logged_in,
                "auth_pending": self.pending_auth_at is not None,
                "reauth_blocked": self.reauth_blocked,
                "user": account.user if account else None,
                "mode": account.mode if account else None,
                "login_attempts": c["login_attempts"],
                "login_successes": c["login_successes"],
                "login_failures": c["login_failures"],
                "spurious_failures": c["spurious_failures"],
                "wrong_mode_errors": c["wrong_mode_errors"],
                "second_factor_failures": c["second_factor_failures"],
                "pushes_sent": c["pushes_sent"],
                "push_pending": self.push_pending(),
                "codes_sent": c["codes_sent"],
                "codes_received": c["codes_received"],
                "password_sha256": list(self.password_sha256),
                "session_ids": list(self.session_ids),
                "logouts": c["logouts"],
                "reauthentications": c["reauthentications"],
                "ssodh_inits": c["ssodh_inits"],
                "validations": c["validations"],
                "promos_shown": c["promos_shown"],
                "promos_skipped": c["promos_skipped"],
                "nightly_resets": c["nightly_resets"],
                "sunday_resets": c["sunday_resets"],
                "sso_ends": c["sso_ends"],
                "requests": dict(self.requests),
                "clock": datetime.datetime.fromtimestamp(
                    self.now(), NEW_YORK
                ).isoformat(),
                "pid": os.getpid(),
                "resident_mb": round(resident_mb(), 1),
            }


def last_reset_boundary(now: float) -> float:
    """The latest 01:00 America/New_York at or before the epoch time now."""
    local = datetime.datetime.fromtimestamp(now, NEW_YORK)
    day = local.date()
    if local.hour < 1:
        day -= datetime.timedelta(days=1)
    boundary = datetime.datetime(day.year, day.month, day.day, 1, 0, tzinfo=NEW_YORK)
    return boundary.timestamp()


def resident_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
