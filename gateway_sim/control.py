"""The simulator's control API: JSON over plain HTTP on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .accounts import AccountsError, parse_accounts
from .faults import EXPIRE_STYLES, FaultError

if TYPE_CHECKING:
    from .server import GatewayApp

CRASH_EXIT = 137


class ControlHandler(BaseHTTPRequestHandler):
    """Routes of docs/architecture.md "Control API"."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    server: ControlServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence per-request lines: tests poll this API often."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_GET

    def _handle(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._json_body()
        except ValueError as exc:
            return self._send(400, {"error": f"body must be a JSON object: {exc}"})
        routes = {
            ("GET", "/sim/state"): self._state,
            ("GET", "/sim/faults"): lambda: (200, dict(app.sim.faults)),
            ("POST", "/sim/faults"): lambda: self._faults(body),
            ("POST", "/sim/reset"): self._reset,
            ("GET", "/sim/accounts"): self._accounts,
            ("POST", "/sim/accounts"): lambda: self._set_accounts(body),
            ("POST", "/sim/session/expire"): lambda: self._expire(body),
            ("POST", "/sim/session/compete"): lambda: self._ok(
                app.sim.compete(), "compete"
            ),
            ("POST", "/sim/session/drop"): lambda: self._ok(app.sim.drop(), "drop"),
            ("POST", "/sim/2fa/approve"): self._approve,
            ("GET", "/sim/2fa/last_code"): self._last_code,
            ("POST", "/sim/crash"): self._crash,
        }
        handler = routes.get((self.command, path))
        if handler is None:
            known = any(route == path for _, route in routes)
            status = 405 if known else 404
            return self._send(
                status, {"error": f"{self.command} {path} is not a control route"}
            )
        status, payload = handler()
        self._send(status, payload)
        if path == "/sim/crash":
            sys.stdout.flush()
            os._exit(CRASH_EXIT)

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _state(self) -> tuple[int, Any]:
        app = self.server.app
        state = app.sim.state()
        state.update(listening=app.listening, port=app.port, tls=app.tls)
        return 200, state

    def _faults(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            merged = self.server.app.sim.set_faults(body)
        except FaultError as exc:
            return 400, {"error": str(exc)}
        self.server.app.log.event(f"fault knobs set: {', '.join(sorted(body))}")
        return 200, merged

    def _reset(self) -> tuple[int, Any]:
        app = self.server.app
        app.sim.reset()
        app.pacer.buckets.clear()
        app.log.event("simulator reset by the control API")
        return self._state()

    def _accounts(self) -> tuple[int, Any]:
        accounts = self.server.app.sim.accounts.values()
        return 200, {"accounts": [account.to_json() for account in accounts]}

    def _set_accounts(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            accounts = parse_accounts(body, "accounts")
        except AccountsError as exc:
            return 400, {"error": str(exc)}
        self.server.app.sim.set_accounts(accounts)
        return self._accounts()

    def _expire(self, body: dict[str, Any]) -> tuple[int, Any]:
        style = body.get("style", "no_session")
        if style not in EXPIRE_STYLES:
            choices = " or ".join(EXPIRE_STYLES)
            return 400, {"error": f"style must be {choices}: got {style!r}"}
        self.server.app.sim.expire(style)
        return self._state()

    def _ok(self, done: bool, what: str) -> tuple[int, Any]:
        if not done:
            return 409, {"error": f"no SSO session to {what}: log in first"}
        return self._state()

    def _approve(self) -> tuple[int, Any]:
        if self.server.app.sim.approve_push():
            return 200, {"approved": True}
        return 409, {"approved": False, "error": "no IB Key notification is pending"}

    def _last_code(self) -> tuple[int, Any]:
        code = self.server.app.sim.last_code
        if code is None:
            return 404, {"error": "no code has been sent yet"}
        return 200, {"code": code}

    def _crash(self) -> tuple[int, Any]:
        self.server.app.log.event("crash requested by the control API")
        return 200, {"crashing": True, "exit_code": CRASH_EXIT}


class ControlServer(ThreadingHTTPServer):
    """Plain HTTP on 127.0.0.1, one thread per connection."""

    daemon_threads = True

    def __init__(self, port: int, app: GatewayApp):
        self.app = app
        super().__init__(("127.0.0.1", port), ControlHandler)


def serve(app: GatewayApp, port: int) -> ControlServer:
    """Bind the control API (OSError if the port is taken) and serve it in a thread."""
    server = ControlServer(port, app)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server
