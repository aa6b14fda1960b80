"""The gateway's HTTP API as the agent uses it, and the classing of its answers.

`parse_status` is pure: it turns an HTTP status and a body (tickle or
auth/status, any shape the gateway or IBKR has been seen to send) into a
`Status` whose `kind` says what to do next.  It never raises on a body.

`GatewayApi` makes the calls: one `requests.Session`, a timeout on every call,
TLS verification off unless a CA certificate is given (the gateway's own
certificate is self-signed and expired), one DEBUG line per request, and IBKR's
pacing kept on our side: tickle at most once a second, sso/validate at most once
a minute, at most ten requests a second overall, and a 429 answered by holding
further calls back for a while.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from urllib3.exceptions import InsecureRequestWarning

log = logging.getLogger(__name__)

TICKLE_MIN_INTERVAL = 1.0
VALIDATE_MIN_INTERVAL = 60.0
REQUEST_MIN_GAP = 0.1
DEFAULT_RATE_LIMIT_HOLD = 60.0
MAX_RATE_LIMIT_HOLD = 900.0
USER_AGENT = "ibeam-agent"


class StatusKind(enum.Enum):
    """What an answer from the gateway means for the agent."""

    NOT_RUNNING = "nothing listens on the gateway port"
    UNREACHABLE = "the gateway did not answer in time"
    ACCESS_DENIED = "the gateway's IP filter refused us (404 Access Denied)"
    TLS_ERROR = "the gateway's TLS certificate or protocol does not match"
    RATE_LIMITED = "IBKR's pacing limit was hit (429)"
    TRANSIENT = "IBKR answered with a server error"
    NO_SESSION = "no SSO session: a full login is needed"
    NOT_AUTHENTICATED = "SSO session present, brokerage session not authenticated"
    NOT_CONNECTED = "brokerage session authenticated but not connected"
    COMPETING = "another platform holds the brokerage session"
    AUTHENTICATED = "authenticated and connected"


@dataclass(frozen=True)
class Status:
    """The gateway's state as one answer showed it; safe to log (no ids)."""

    kind: StatusKind
    http_status: int | None = None
    authenticated: bool = False
    connected: bool | None = None
    competing: bool = False
    collision: bool = False
    session: bool = False
    sso_expires_ms: int | None = None
    server_name: str | None = None
    message: str = ""
    fail: str = ""
    retry_after: float | None = None

    @property
    def ready(self) -> bool:
        return self.kind is StatusKind.AUTHENTICATED

    def describe(self) -> str:
        """One short line: kind, HTTP status and the gateway's own words."""
        parts = [self.kind.name]
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.message:
            parts.append(self.message)
        if self.fail:
            parts.append(f"fail: {self.fail}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.name,
            "http_status": self.http_status,
            "authenticated": self.authenticated,
            "connected": self.connected,
            "competing": self.competing,
            "collision": self.collision,
            "session": self.session,
            "sso_expires_s": (
                None if self.sso_expires_ms is None else self.sso_expires_ms / 1000
            ),
            "message": self.message,
        }


def transport_status(kind: StatusKind, detail: str) -> Status:
    """A Status for a call that got no HTTP answer at all."""
    return Status(kind=kind, message=detail)


def _as_text(body: bytes | str | None) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return body


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _flag(value: Any) -> bool | None:
    """A JSON boolean as IBKR sends it (true, "true", 1), or None when absent."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _number(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def _short(text: Any, limit: int = 120) -> str:
    text = "" if text is None else str(text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _auth_block(data: dict) -> tuple[dict | None, bool]:
    """The authStatus block of a tickle, or the body itself for auth/status.

    Returns (block, tickle_shape).  block is None when a tickle carries no
    usable iserver.authStatus (missing, or an {"error": ...} in its place).
    """
    if "authenticated" in data or "competing" in data or "connected" in data:
        return data, False
    iserver = data.get("iserver")
    if isinstance(iserver, dict) and isinstance(iserver.get("authStatus"), dict):
        return iserver["authStatus"], True
    return None, True


def _classify_flags(authenticated, connected, competing) -> StatusKind:
    if competing:
        return StatusKind.COMPETING
    if not authenticated:
        return StatusKind.NOT_AUTHENTICATED
    if connected is False:
        return StatusKind.NOT_CONNECTED
    return StatusKind.AUTHENTICATED


def _parse_ok(http_status: int, text: str, retry_after: float | None) -> Status:
    """Class a 2xx answer from tickle, auth/status or ssodh/init."""
    data = _load_json(text)
    if not isinstance(data, dict):
        return Status(
            kind=StatusKind.TRANSIENT,
            http_status=http_status,
            message=f"unreadable answer: {_short(text, 60)!r}",
        )
    error = data.get("error")
    if isinstance(error, str) and error.strip().lower() in (
        "no session",
        "not logged in",
    ):
        return Status(
            kind=StatusKind.NO_SESSION, http_status=http_status, message=error
        )
    block, tickle_shape = _auth_block(data)
    if block is None and not any(
        k in data for k in ("session", "ssoExpires", "iserver")
    ):
        detail = _short(error) if error else "no status fields"
        return Status(
            kind=StatusKind.TRANSIENT, http_status=http_status, message=detail
        )
    block = block or {}
    authenticated = _flag(block.get("authenticated")) or False
    connected = _flag(block.get("connected"))
    competing = _flag(block.get("competing")) or False
    iserver = data.get("iserver")
    server = (
        block.get("serverInfo") if isinstance(block.get("serverInfo"), dict) else {}
    )
    message = block.get("message") or ""
    if (
        tickle_shape
        and not block
        and isinstance(iserver, dict)
        and iserver.get("error")
    ):
        message = f"iserver: {_short(iserver.get('error'), 60)}"
    return Status(
        kind=_classify_flags(authenticated, connected, competing),
        http_status=http_status,
        authenticated=authenticated,
        connected=connected,
        competing=competing,
        collision=_flag(data.get("collission", data.get("collision"))) or False,
        session=True,
        sso_expires_ms=_number(data.get("ssoExpires")),
        server_name=_short(server.get("serverName")) or None,
        message=_short(message),
        fail=_short(block.get("fail")),
        retry_after=retry_after,
    )


def parse_status(
    http_status: int, body: bytes | str | None, *, retry_after: float | None = None
) -> Status:
    """Class one answer of tickle or auth/status.  Never raises."""
    try:
        text = _as_text(body)
        if http_status == 404 and text.strip() == "Access Denied":
            return Status(
                kind=StatusKind.ACCESS_DENIED, http_status=404, message="Access Denied"
            )
        if http_status == 401:
            return Status(kind=StatusKind.NO_SESSION, http_status=401)
        if http_status == 429:
            return Status(
                kind=StatusKind.RATE_LIMITED, http_status=429, retry_after=retry_after
            )
        if http_status >= 500:
            return Status(
                kind=StatusKind.TRANSIENT,
                http_status=http_status,
                message=_short(text, 60),
            )
        if 200 <= http_status < 300:
            return _parse_ok(http_status, text, retry_after)
        return Status(
            kind=StatusKind.TRANSIENT,
            http_status=http_status,
            message=f"unexpected answer: {_short(text, 60)!r}",
        )
    except Exception as exc:  # a parser bug must not take the watcher down
        log.debug("status parse failed", exc_info=True)
        return Status(
            kind=StatusKind.TRANSIENT,
            http_status=http_status,
            message=f"unparsable answer ({type(exc).__name__})",
        )


@dataclass(frozen=True)
class ValidateResult:
    """What sso/validate said: whether SSO is valid and for how long."""

    ok: bool
    http_status: int | None = None
    expires_ms: int | None = None
    paper: bool | None = None


@dataclass(frozen=True)
class Routes:
    """Gateway routes (IBEAM_ROUTE_*)."""

    tickle: str = "/v1/api/tickle"
    auth_status: str = "/v1/api/iserver/auth/status"
    validate: str = "/v1/portal/sso/validate"
    reauthenticate: str = "/v1/portal/iserver/reauthenticate?force=true"
    logout: str = "/v1/api/logout"
    initialise: str = "/v1/api/iserver/auth/ssodh/init"
    user: str = "/v1/api/one/user"

    @classmethod
    def from_settings(cls, settings) -> Routes:
        return cls(
            tickle=settings.route_tickle,
            auth_status=settings.route_auth_status,
            validate=settings.route_validate,
            reauthenticate=settings.route_reauthenticate,
            logout=settings.route_logout,
            initialise=settings.route_initialise,
            user=settings.route_user,
        )


@dataclass
class _Reply:
    """One HTTP exchange: an answer (status, body) or a transport failure."""

    http_status: int | None = None
    body: bytes = b""
    failure: Status | None = None
    retry_after: float | None = None
    data: Any = field(default=None)

    def json(self) -> Any:
        if self.data is None and self.body:
            self.data = _load_json(_as_text(self.body))
        return self.data


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), MAX_RATE_LIMIT_HOLD))
    except ValueError:
        return None


def _classify_transport(exc: requests.RequestException) -> Status:
    """Map a requests failure to NOT_RUNNING, UNREACHABLE or TLS_ERROR."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if any(
            word in text
            for word in (
                "CERTIFICATE_VERIFY_FAILED",
                "hostname",
                "WRONG_VERSION_NUMBER",
            )
        ):
            return transport_status(StatusKind.TLS_ERROR, _short(text, 160))
        return transport_status(StatusKind.UNREACHABLE, "TLS handshake did not finish")
    if isinstance(exc, requests.exceptions.Timeout):
        return transport_status(StatusKind.UNREACHABLE, "no answer before the timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        refused = "refused" in text.lower() or "NewConnectionError" in text
        if refused:
            return transport_status(StatusKind.NOT_RUNNING, "connection refused")
        return transport_status(StatusKind.UNREACHABLE, "connection dropped")
    return transport_status(StatusKind.UNREACHABLE, type(exc).__name__)


class GatewayApi:
    """Calls to the gateway's session routes, paced as IBKR asks.

    Meant for one thread at a time (the watcher's); a lock keeps pacing right
    if two threads share it anyway.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        verify: bool | str = False,
        routes: Routes | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.verify = verify
        self.routes = routes or Routes()
        self._clock = clock
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._lock = threading.Lock()
        self._last_request = float("-inf")
        self._last_tickle = float("-inf")
        self._last_validate = float("-inf")
        self._held_until = float("-inf")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GatewayApi:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _wait_gap(self, last: float, gap: float) -> None:
        pause = last + gap - self._clock()
        if pause > 0:
            self._sleep(pause)

    def _send(
        self,
        method: str,
        route: str,
        *,
        payload: Any = None,
        timeout: float | None = None,
        paced: bool = True,
    ) -> _Reply:
        """One request; never raises for network trouble or odd answers."""
        with self._lock:
            now = self._clock()
            if paced and now < self._held_until:
                wait = self._held_until - now
                status = Status(
                    kind=StatusKind.RATE_LIMITED,
                    message=f"holding back {wait:.0f} s after a 429",
                    retry_after=wait,
                )
                return _Reply(failure=status, retry_after=wait)
            self._wait_gap(self._last_request, REQUEST_MIN_GAP)
            self._last_request = self._clock()
            return self._exchange(method, route, payload, timeout or self.timeout)

    def _exchange(self, method, route, payload, timeout) -> _Reply:
        url = self.base_url + route
        started = time.monotonic()
        try:
            with warnings.catch_warnings():
                # Verification is off on purpose (self-signed gateway certificate);
                # the start-up log says so once.
                warnings.simplefilter("ignore", InsecureRequestWarning)
                response = self._session.request(
                    method,
                    url,
                    json=payload,
                    timeout=(timeout, timeout),
                    verify=self.verify,
                    allow_redirects=False,
                )
            with response:
                body = response.content
        except requests.RequestException as exc:
            failure = _classify_transport(exc)
            log.debug(
                "%s %s -> %s (%.0f ms)",
                method,
                route,
                failure.kind.name,
                (time.monotonic() - started) * 1000,
            )
            return _Reply(failure=failure)
        reply = _Reply(
            http_status=response.status_code,
            body=body,
            retry_after=_retry_after(response),
        )
        log.debug(
            "%s %s -> %d (%.0f ms)",
            method,
            route,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        if response.status_code == 429:
            hold = reply.retry_after or DEFAULT_RATE_LIMIT_HOLD
            self._held_until = self._clock() + hold
        return reply

    def _status(self, reply: _Reply) -> Status:
        if reply.failure is not None:
            return reply.failure
        return parse_status(
            reply.http_status, reply.body, retry_after=reply.retry_after
        )

    def tickle(self) -> Status:
        """Keep the session alive and read its state (at most once a second)."""
        self._wait_gap(self._last_tickle, TICKLE_MIN_INTERVAL)
        self._last_tickle = self._clock()
        return self._status(self._send("POST", self.routes.tickle))

    def auth_status(self, *, timeout: float | None = None) -> Status:
        """The brokerage session's state; cheap enough to poll while waiting."""
        return self._status(
            self._send("POST", self.routes.auth_status, timeout=timeout)
        )

    def validate(self) -> ValidateResult | None:
        """Renew the SSO session; None when the last call was under a minute ago."""
        if self._clock() - self._last_validate < VALIDATE_MIN_INTERVAL:
            return None
        self._last_validate = self._clock()
        reply = self._send("GET", self.routes.validate)
        data = reply.json() if reply.failure is None else None
        if reply.http_status != 200 or not isinstance(data, dict):
            return ValidateResult(ok=False, http_status=reply.http_status)
        login_type = _number(data.get("LOGIN_TYPE"))
        return ValidateResult(
            ok=_flag(data.get("RESULT")) is True,
            http_status=200,
            expires_ms=_number(data.get("EXPIRES")),
            paper=None if login_type is None else login_type == 2,
        )

    def reauthenticate(self) -> bool:
        """Ask the gateway to redo its brokerage login; True when it was triggered."""
        reply = self._send("POST", self.routes.reauthenticate)
        data = reply.json() if reply.failure is None else None
        return isinstance(data, dict) and data.get("message") == "triggered"

    def logout(self, *, timeout: float | None = None) -> bool:
        """End the session (the gateway keeps its SSO login); True when confirmed."""
        reply = self._send("POST", self.routes.logout, timeout=timeout, paced=False)
        data = reply.json() if reply.failure is None else None
        return isinstance(data, dict) and _flag(data.get("status")) is True

    def init_session(self, *, compete: bool = True) -> Status:
        """POST ssodh/init: open (or take back) the brokerage session."""
        payload = {"publish": True, "compete": compete}
        return self._status(self._send("POST", self.routes.initialise, payload=payload))

    def user(self) -> dict | None:
        """The user JSON of /one/user, or None without a session."""
        reply = self._send("GET", self.routes.user)
        data = reply.json() if reply.failure is None else None
        return data if reply.http_status == 200 and isinstance(data, dict) else None
