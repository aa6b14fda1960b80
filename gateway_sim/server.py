"""The simulated gateway process (`python -m gateway_sim.server ... GatewayStart`).

bin/run.sh starts this module with the same arguments the real script gives
the JVM, so the process command line carries the real main class name. It
prints the real banner, then serves the gateway's HTTP surface on listenPort
and the simulator's control API on 127.0.0.1 (docs/simulator.md).
"""

from __future__ import annotations

import datetime
import errno
import http.cookies
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from . import conf as gateway_conf
from . import control, login
from .accounts import AccountsError, default_accounts, load_accounts
from .bodies import Reply, json_reply
from .faults import FaultError
from .pacing import Pacer
from .session import Simulator
from .tls import KeystoreError, server_context

MAIN_CLASS = "ibgroup.web.core.clientportal.gw.GatewayStart"
VERSION = "a27ed42161ad96c53e715ca5c5e3e3fa4cff5262 Mon, 24 Apr 2023 15:41:53 -0400"
JAVA_VERSION = "17.0.15"
STARS = "*" * 52
DEFAULT_CONTROL_PORT = 5099
FLOW_COOKIE = "SIMFLOW"
TICK_S = 0.2
USAGE = """usage: java -jar gw.jar GatewayStart
 -c,--conf <arg>              configuration file
    --control-port <arg>      control API port (simulator only)
 -h,--help                    print this message
    --nossl                   disable SSL
    --port <arg>              listen port
    --remoteProxyHost <arg>   remote proxy host"""

REAUTH_PATH = re.compile(r"/v1/(portal|api)/iserver/reauthenticate")
SERVICE_PATH = re.compile(r"/(v1|qa|ci|alpha|local)/(portal|am|api|tws)/(.*)")
UPSTREAM_STATIC = re.compile(
    r"/(css|scripts|stylesheet|images|fonts).*|/en/includes/general/gdpr-am\.php"
    r"|/sso/(lib|images)/.*|/portal\.proxy/(v1|qa|ci|alpha|local)/gstat/bulletins"
)
ASSET_TYPES = {
    "/sso/lib/xyz.bundle.min.js": ("xyz.bundle.min.js", "application/javascript"),
    "/sso/lib/xyz.css": ("xyz.css", "text/css"),
}
STATIC_TYPES = {
    ".html": "text/html",
    ".js": "application/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class UsageError(Exception):
    """Bad command line: print usage and exit 1, like commons-cli."""


@dataclass
class Command:
    """What GatewayStart was asked to do."""

    classpath: list[str]
    conf: str = "conf.yaml"
    port: int | None = None
    nossl: bool = False
    control_port: int | None = None
    help: bool = False


def parse_command(argv: list[str]) -> Command:
    """Parse JVM-style options, the main class, then GatewayStart's options."""
    classpath: list[str] = []
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        if argv[index] in ("-cp", "-classpath", "--class-path") and index + 1 < len(
            argv
        ):
            classpath = argv[index + 1].split(":")
            index += 2
        else:
            index += 1
    if index >= len(argv) or argv[index] != MAIN_CLASS:
        found = argv[index] if index < len(argv) else "(none)"
        raise UsageError(f"Error: Could not find or load main class {found}")
    command = Command(classpath=classpath)
    options = argv[index + 1 :]
    while options:
        option = options.pop(0)
        if option in ("-h", "--help"):
            command.help = True
        elif option == "--nossl":
            command.nossl = True
        elif option in (
            "-c",
            "--conf",
            "--port",
            "--remoteProxyHost",
            "--control-port",
        ):
            if not options:
                raise UsageError(f"Missing argument for option: {option.lstrip('-')}")
            _set_option(command, option, options.pop(0))
        else:
            raise UsageError(f"Unrecognized option: {option}")
    return command


def _set_option(command: Command, option: str, value: str) -> None:
    if option in ("-c", "--conf"):
        command.conf = value
    elif option in ("--port", "--control-port"):
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise UsageError(f"{option} must be a port number: got {value!r}")
        if option == "--port":
            command.port = int(value)
        else:
            command.control_port = int(value)


class GatewayLog:
    """logs/gw.DATE.log and logs/gw.message.DATE.log, like the real gateway."""

    def __init__(self, directory: str):
        self.lock = threading.Lock()
        day = datetime.date.today().isoformat()
        try:
            os.makedirs(directory, exist_ok=True)
            self.events = open(
                os.path.join(directory, f"gw.{day}.log"), "a", buffering=1
            )
            self.messages = open(
                os.path.join(directory, f"gw.message.{day}.log"), "a", buffering=1
            )
        except OSError as exc:
            print(
                f"gateway_sim: cannot write logs in {directory}: {exc}", file=sys.stderr
            )
            self.events = self.messages = None

    def event(self, line: str) -> None:
        self._write(self.events, line)

    def message(self, line: str) -> None:
        self._write(self.messages, line)

    def _write(self, stream: Any, line: str) -> None:
        if stream is None:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        with self.lock:
            stream.write(f"{stamp} {line}\n")


@dataclass
class GatewayApp:
    """Everything the request handlers share."""

    conf: gateway_conf.GatewayConf
    sim: Simulator
    log: GatewayLog
    gateway_dir: str
    port: int
    tls: bool
    pacer: Pacer = field(default_factory=Pacer)
    stopping: threading.Event = field(default_factory=threading.Event)
    listening: bool = False
    assets: dict[str, bytes] = field(default_factory=dict)
    classpath: list[str] = field(default_factory=list)

    def asset(self, name: str) -> bytes:
        if name not in self.assets:
            self.assets[name] = (
                resources.files("gateway_sim.assets").joinpath(name).read_bytes()
            )
        return self.assets[name]


class GatewayHandler(BaseHTTPRequestHandler):
    """One connection to the gateway port."""

    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are closed after this
    server: GatewayServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Access lines go to logs/gw.message.*.log instead of stderr."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    @property
    def app(self) -> GatewayApp:
        return self.server.app

    def _handle(self) -> None:
        self._path = urlsplit(self.path).path or "/"
        self._cors = False
        body = self._read_body()
        self.app.log.message(f"-> {self.command} {self._path}")
        self.app.sim.count_request(self._path)
        verdict = self.app.conf.ip_filter.decide(self.client_address[0])
        if verdict == "error":
            return self._reply(Reply(500, b"Internal Server Error"))
        if verdict == "deny":
            self.app.log.event(f"ipv4 address {self.client_address[0]} is forbidden")
            return self._reply(Reply(404, b"Access Denied"))
        self._cors = "Origin" in self.headers
        if self._cors and self.command == "OPTIONS":
            if "Access-Control-Request-Method" in self.headers:
                return self._preflight()
        self._route(body)

    def _route(self, body: bytes) -> None:
        path = self._path
        if path == "/":
            ip2loc = self.app.conf["ip2loc"]
            location = f"/sso/Login?forwardTo=22&RL=1&ip2loc={ip2loc}"
            return self._reply(
                Reply(302), chunked=True, headers=[("Location", location)]
            )
        if path == "/status":
            return self._hold(None)
        if path == "/clear":
            return self._reply(Reply(200, b"cleared"))
        if REAUTH_PATH.fullmatch(path):
            return self._reply(self.app.sim.reauthenticate())
        if self._web_app(path):
            return None
        service = SERVICE_PATH.fullmatch(path)
        if service and service.group(2) in ("am", "tws"):
            return self._reply(
                Reply(200, f"Unknown service {service.group(2)}"), chunked=True
            )
        if service or path.startswith("/sso/") or UPSTREAM_STATIC.fullmatch(path):
            return self._proxied(path, body, service)
        location = str(self.app.conf["proxyRemoteHost"]) + path
        return self._reply(Reply(302), chunked=True, headers=[("Location", location)])

    # ----- proxied routes: the answers that would come from IBKR ----------

    def _proxied(self, path: str, body: bytes, service: re.Match | None) -> None:
        sim = self.app.sim
        knobs = sim.faults
        now = time.monotonic()
        if now < sim.hang_until:
            return self._hold(sim.hang_until)
        is_api = service is not None
        if now < sim.error_until and (is_api or knobs["error_scope"] == "all"):
            return self._reply(_error_reply(knobs["error_status"]), chunked=True)
        if not is_api:
            return self._sso(path, body)
        if service.group(1) != "v1":
            return self._reply(Reply(404, b"Not Found", "text/plain"), chunked=True)
        api_path = "/v1/api/" + service.group(3).rstrip("/")
        sim.note_api()
        address = self.client_address[0]
        if knobs["pacing"] and not self.app.pacer.allow(
            address, api_path, knobs["pacing_burst"]
        ):
            return self._reply(
                Reply(429, b"Too Many Requests", "text/plain"), chunked=True
            )
        return self._reply(self._api(api_path, body), chunked=True)

    def _api(self, api_path: str, body: bytes) -> Reply:
        sim = self.app.sim
        routes = {
            "/v1/api/tickle": sim.tickle,
            "/v1/api/iserver/auth/status": sim.auth_status,
            "/v1/api/sso/validate": lambda: sim.validate(self.client_address[0]),
            "/v1/api/iserver/auth/ssodh/init": lambda: sim.ssodh_init(body),
            "/v1/api/logout": sim.logout,
            "/v1/api/one/user": sim.one_user,
            "/v1/api/iserver/accounts": sim.iserver_accounts,
            "/v1/api/portfolio/accounts": sim.portfolio_accounts,
        }
        if api_path in routes:
            return routes[api_path]()
        if api_path.startswith("/v1/api/iserver/"):
            return sim.iserver_other()
        return sim.other_api()

    def _sso(self, path: str, body: bytes) -> None:
        if path in ASSET_TYPES:
            name, media = ASSET_TYPES[path]
            return self._reply(Reply(200, self.app.asset(name), media), chunked=True)
        if path.startswith("/sso/Login"):
            return self._login_page()
        if path == "/sso/Authenticator" and self.command == "POST":
            return self._authenticator(body)
        if path.startswith("/sso/Dispatcher"):
            return self._dispatcher()
        return self._reply(Reply(404, b"Not Found", "text/plain"), chunked=True)

    def _login_page(self) -> None:
        sim = self.app.sim
        flow = login.new_flow(sim)
        html = self.app.asset("login.html").decode()
        html = html.replace("{page}", sim.faults["login_page"])
        html = html.replace("{code_variant}", sim.faults["code_input_variant"])
        cookie = f"{FLOW_COOKIE}={flow.token}; Path=/; HttpOnly; SameSite=Lax"
        if self.app.tls:
            cookie += "; Secure"
        headers = [("Set-Cookie", cookie), ("Cache-Control", "no-store")]
        reply = Reply(200, html, "text/html;charset=utf-8")
        return self._reply(reply, chunked=True, headers=headers)

    def _flow_token(self) -> str | None:
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return None
        morsel = jar.get(FLOW_COOKIE)
        return morsel.value if morsel else None

    def _authenticator(self, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        if not isinstance(request, dict):
            request = {}
        flow = login.find_flow(self.app.sim, self._flow_token())
        answer = login.handle(self.app.sim, flow, request)
        if answer.get("step") == "success":
            self.app.log.event("login form completed; redirecting to /sso/Dispatcher")
        return self._reply(json_reply(answer), chunked=True)

    def _dispatcher(self) -> None:
        if login.finish(self.app.sim, self._flow_token()):
            self.app.log.event("Client login succeeds")
            media = self.app.sim.faults["success_content_type"]
            return self._reply(
                Reply(200, b"Client login succeeds", media), chunked=True
            )
        page = (
            "<html><body><p>The login has not completed.</p>"
            '<p><a href="/sso/Login?forwardTo=22&amp;RL=1&amp;ip2loc=on">Log in</a></p>'
            "</body></html>"
        )
        return self._reply(Reply(200, page, "text/html;charset=utf-8"), chunked=True)

    # ----- local routes ----------------------------------------------------

    def _web_app(self, path: str) -> bool:
        for app in self.app.conf.web_apps:
            name = str(app["name"])
            prefix = f"/{name}"
            if path != prefix and not path.startswith(prefix + "/"):
                continue
            base = os.path.realpath(
                os.path.join(self.app.gateway_dir, "root", "webapps", name)
            )
            relative = path[len(prefix) :].lstrip("/") or str(
                app.get("index", "index.html")
            )
            target = os.path.realpath(os.path.join(base, relative))
            if not target.startswith(base + os.sep) or not os.path.isfile(target):
                self._reply(Reply(404, b"Not Found", "text/plain"))
                return True
            with open(target, "rb") as handle:
                data = handle.read()
            media = STATIC_TYPES.get(
                os.path.splitext(target)[1], "application/octet-stream"
            )
            headers = [("Cache-Control", "public, max-age=86400")]
            self._reply(Reply(200, data, media), headers=headers)
            return True
        return False

    def _preflight(self) -> None:
        headers = [
            ("Access-Control-Allow-Methods", "POST,GET,OPTIONS,DELETE,PUT"),
            ("Access-Control-Allow-Headers", "Content-Type,portal,Cookie"),
        ]
        self._reply(Reply(204), headers=headers)

    # ----- plumbing --------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _reply(self, reply: Reply, *, chunked: bool = False, headers=()) -> None:
        payload = reply.payload()
        # send_response_only: no Server or Date header, as Vert.x sends none.
        self.send_response_only(reply.status)
        for name, value in headers:
            self.send_header(name, value)
        media = reply.media_type()
        if media:
            self.send_header("Content-Type", media)
        if self._cors:
            self.send_header("Access-Control-Allow-Origin", self.app.conf.cors_origin)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            if chunked:
                if payload:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(payload)
        self.app.log.message(f"<- {reply.status} {self.command} {self._path}")

    def _hold(self, until: float | None) -> None:
        """Accept the request and never answer it (reference §2.2 and §5)."""
        self.close_connection = True
        sock = self.connection
        sock.settimeout(0.25)
        while not self.app.stopping.is_set():
            if until is not None and time.monotonic() >= until:
                return
            try:
                if not sock.recv(4096):
                    return
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return


def _error_reply(status: int) -> Reply:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Reply(status, phrase, "text/plain")


class GatewayServer(ThreadingHTTPServer):
    """Threaded HTTP(S) server; TLS handshakes happen in the connection's thread."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, app: GatewayApp, context: ssl.SSLContext | None):
        self.app = app
        self.context = context
        super().__init__(address, GatewayHandler)

    def process_request_thread(self, request, client_address) -> None:
        if self.context is not None:
            request.settimeout(10)
            request = self.context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError):
                _close_quietly(request)
                return
        super().process_request_thread(request, client_address)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


def _close_quietly(connection: ssl.SSLSocket) -> None:
    """End a failed handshake the way the real gateway does: FIN, no reply.

    Closing with the client's bytes still unread would send a reset; shut the
    write side, drain what is left, then close.
    """
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(1)
        while connection.recv(4096):
            pass
    except (OSError, ValueError):
        pass
    finally:
        connection.close()


def banner(conf: gateway_conf.GatewayConf, port: int, tls: bool) -> list[str]:
    """The console lines the real GatewayStart prints (reference §1.4)."""
    scheme = "https" if tls else "http"
    lines = [f" -> mount {app['name']} on /{app['name']}" for app in conf.web_apps]
    lines += [
        f"Java Version: {JAVA_VERSION}",
        STARS,
        f"version: {VERSION}",
        STARS,
        "This is the Client Portal Gateway",
        "for any issues, please contact api@ibkr.com",
        "and include a copy of your logs",
        STARS,
        "https://www.interactivebrokers.com/api/doc.html",
        STARS,
        f"Open {scheme}://localhost:{port} to login",
    ]
    lines += [
        f"App {app['name']} is available after you login under: "
        f"{scheme}://localhost:{port}/{app['name']}#/"
        for app in conf.web_apps
    ]
    return lines


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    if not value.isdigit():
        raise SetupError(f"{name} must be a whole number: got {value!r}")
    return int(value)


class SetupError(Exception):
    """A simulator setting is wrong: one line, exit 2."""


def _simulator(conf: gateway_conf.GatewayConf, log: GatewayLog) -> Simulator:
    path = os.environ.get("GATEWAY_SIM_ACCOUNTS") or os.path.join(
        "sim", "accounts.yaml"
    )
    try:
        if os.environ.get("GATEWAY_SIM_ACCOUNTS") or os.path.exists(path):
            accounts = load_accounts(path)
        else:
            accounts = default_accounts()
    except AccountsError as exc:
        raise SetupError(f"GATEWAY_SIM_ACCOUNTS: {exc}") from exc
    sim = Simulator(accounts, auth_delay_ms=int(conf["authDelay"] or 0), log=log.event)
    raw = os.environ.get("GATEWAY_SIM_FAULTS", "")
    if raw.strip():
        try:
            sim.set_faults(json.loads(raw))
        except ValueError as exc:
            raise SetupError(
                f"GATEWAY_SIM_FAULTS must be a JSON object of knobs: {exc}"
            ) from exc
    return sim


def _ticker(app: GatewayApp) -> None:
    while not app.stopping.wait(TICK_S):
        app.sim.tick()


def run(command: Command) -> int:
    """Start the gateway; returns only on a startup failure."""
    try:
        conf = gateway_conf.load(command.conf, command.classpath)
    except gateway_conf.ConfError as exc:
        print("\n".join(exc.lines), flush=True)
        return 1
    port = command.port or int(conf["listenPort"])
    tls = bool(conf["listenSsl"]) and not command.nossl
    log = GatewayLog("logs")
    try:
        sim = _simulator(conf, log)
        control_port = command.control_port or _env_int(
            "GATEWAY_SIM_CONTROL_PORT", DEFAULT_CONTROL_PORT
        )
        delay_ms = _env_int("GATEWAY_SIM_STARTUP_DELAY_MS", 0)
    except (SetupError, FaultError) as exc:
        print(f"gateway_sim: {exc}", file=sys.stderr, flush=True)
        return 2
    app = GatewayApp(
        conf=conf,
        sim=sim,
        log=log,
        gateway_dir=os.getcwd(),
        port=port,
        tls=tls,
        classpath=command.classpath,
    )

    # The JVM takes a while before it prints anything of its own.
    time.sleep(delay_ms / 1000.0)
    print("\n".join(banner(conf, port, tls)), flush=True)

    # Listen first: once the control API answers, the outcome is known.
    _listen(app, port, tls)
    try:
        control.serve(app, control_port)
    except OSError as exc:
        print(
            f"gateway_sim: control API port {control_port} is not free "
            f"({exc.strerror}): set GATEWAY_SIM_CONTROL_PORT to a free port",
            file=sys.stderr,
            flush=True,
        )
        return 1
    threading.Thread(target=_ticker, args=(app,), name="ticker", daemon=True).start()
    app.stopping.wait()
    return 0


def _listen(app: GatewayApp, port: int, tls: bool) -> None:
    """Listen like Vert.x: a failure is printed and the process stays up."""
    try:
        keystore = _keystore_path(str(app.conf["sslCert"]), app.classpath)
        context = server_context(keystore, str(app.conf["sslPwd"])) if tls else None
        server = GatewayServer(("0.0.0.0", port), app, context)
    except KeystoreError as exc:
        _listen_failed(app, str(exc))
        return
    except OSError as exc:
        reason = (
            "Address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        )
        _listen_failed(app, str(reason))
        return
    app.listening = True
    app.log.event(f"gateway listening on port {port}")
    threading.Thread(target=server.serve_forever, name="gateway", daemon=True).start()


def _keystore_path(name: str, classpath: list[str]) -> str:
    """sslCert is read relative to the working directory, then the class path."""
    if os.path.isabs(name) or os.path.isfile(name):
        return name
    return gateway_conf.resolve(name, classpath) or name


def _listen_failed(app: GatewayApp, reason: str) -> None:
    print(f"Server listen failed {reason}", file=sys.stderr, flush=True)
    app.log.event(f"Server listen failed {reason}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m gateway_sim.server`."""
    args = sys.argv[1:] if argv is None else argv
    try:
        command = parse_command(args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        print(USAGE, flush=True)
        return 1
    if command.help:
        print(USAGE, flush=True)
        return 0
    socket.setdefaulttimeout(None)
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
