"""The health server: liveness, readiness, status, metrics, and two commands.

A stdlib `ThreadingHTTPServer` on a daemon thread.  It answers from a snapshot
of what the watcher last knew and never calls the gateway itself, so a probe
stays fast while the gateway hangs or a login runs.  Access logs are silenced:
an orchestrator probing every few seconds must not flood the log.

    GET  /livez       200 while the loop is alive and may still recover; else 503
    GET  /readyz      200 while authenticated, connected and not competing; else 503
    GET  /status      JSON: state, last check, last login, failures, next action
    GET  /metrics     Prometheus text (prometheus-client's own generate_latest)
    POST /activate    resume maintenance with an immediate check
    POST /deactivate  pause maintenance and log out

A GET on a POST route (or the reverse) answers 405; anything else 404.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from ibeam_agents.errors import ConfigError
from ibeam_agents.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

GET_ROUTES = ("/livez", "/readyz", "/status", "/metrics")
POST_ROUTES = ("/activate", "/deactivate")
REQUEST_TIMEOUT = 5.0
MAX_BODY = 64 * 1024


class HealthSource(Protocol):
    """What the health server reads and where its commands go (the watcher)."""

    def snapshot(self) -> dict[str, Any]: ...
    def command(self, name: str) -> None: ...
    def metrics_text(self) -> bytes: ...


class _HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, source: HealthSource) -> None:
        self.source = source
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        log.debug("health request from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HealthServer
    timeout = REQUEST_TIMEOUT
    server_version = "ibeam-health"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logs."""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, head: bool = False) -> None:
        body = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        self._send(status, body, "application/json", head=head)

    def _guarded(self, method: str) -> None:
        try:
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("health server failed on %s %s", method, self.path)
            try:
                self._send(500, b"internal error\n")
            except OSError:
                pass

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        head = method == "HEAD"
        if path in GET_ROUTES:
            if method not in ("GET", "HEAD"):
                self._send(405, b"use GET\n", headers={"Allow": "GET, HEAD"})
                return
            getattr(self, "_get_" + path[1:])(head)
        elif path in POST_ROUTES:
            if method != "POST":
                self._send(405, b"use POST\n", headers={"Allow": "POST"}, head=head)
                return
            self._drain_body()
            self.server.source.command(path[1:])
            self._json(HTTPStatus.ACCEPTED, {"accepted": path[1:]})
        else:
            self._send(404, b"not found\n", head=head)

    def _drain_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)

    def _probe(self, key: str, head: bool) -> None:
        snap = self.server.source.snapshot()
        ok = bool(snap.get(key))
        reason = snap.get(f"{key}_reason") or ("ok" if ok else "not " + key)
        self._send(200 if ok else 503, f"{reason}\n".encode(), head=head)

    def _get_livez(self, head: bool) -> None:
        self._probe("live", head)

    def _get_readyz(self, head: bool) -> None:
        self._probe("ready", head)

    def _get_status(self, head: bool) -> None:
        self._json(200, self.server.source.snapshot(), head=head)

    def _get_metrics(self, head: bool) -> None:
        self._send(
            200, self.server.source.metrics_text(), METRICS_CONTENT_TYPE, head=head
        )

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._guarded("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._guarded("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._guarded("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._guarded("DELETE")


def start_health_server(
    host: str, port: int, source: HealthSource
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve health routes on a daemon thread; returns (server, thread).

    Stop with ``server.shutdown(); server.server_close()``.  Port 0 picks a free
    port (``server.server_address[1]``).
    """
    try:
        server = _HealthServer((host, port), _Handler, source)
    except OSError as exc:
        raise ConfigError(
            f"the health server cannot listen on {host}:{port} ({exc.strerror}); "
            "set IBEAM_HEALTH_SERVER_PORT to a free port, or 0 to disable it"
        ) from exc
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="health-server",
        daemon=True,
    )
    thread.start()
    log.info("health server on http://%s:%d", host, server.server_address[1])
    return server, thread
