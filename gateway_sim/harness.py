"""Install, start, drive and stop a simulated gateway from Python.

    with SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 200}) as gw:
        gw.expire(style="401")
        assert gw.state()["sso"] is False

Tests, the demo and the benchmark use this; every instance picks free ports
unless told otherwise and runs `bin/run.sh root/conf.yaml` from its directory
in a process group of its own, so `stop()` takes everything with it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import yaml

from .install import ACCOUNTS, CONF, install
from .tls import KeystoreError, read_keystore

DEFAULT_START_TIMEOUT = 20.0
PORT_ATTEMPTS = 4
CONTROL_BUSY = "control API port"


class SimGatewayError(RuntimeError):
    """The simulator did not start, or a control call failed."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 and on ::1 at the moment of the call.

    Clients resolve "localhost" to ::1 first: a port taken there by another
    program (chromedriver binds both) would catch them.
    """
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if _free_on_ipv6_loopback(port):
            return port
    raise SimGatewayError("no TCP port is free on both 127.0.0.1 and ::1")


def _free_on_ipv6_loopback(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", port))
    except OSError as exc:
        return exc.errno != errno.EADDRINUSE
    return True


class SimGateway:
    """One simulated gateway in root_dir, on its own ports."""

    def __init__(
        self,
        root_dir: str | os.PathLike,
        *,
        port: int | None = None,
        control_port: int | None = None,
        accounts: list[dict[str, Any]] | None = None,
        faults: dict[str, Any] | None = None,
        conf_overrides: dict[str, Any] | None = None,
        startup_delay_ms: int = 0,
    ):
        self.root = Path(root_dir).resolve()
        overrides = dict(conf_overrides or {})
        port = port or overrides.pop("listenPort", None)
        # Ports picked here may be taken by someone else before the gateway
        # binds them: start() then moves to other ones.
        self._pick_port = port is None
        self._pick_control_port = control_port is None
        self.port = port or free_port()
        self.control_port = control_port or free_port()
        self.accounts = accounts
        self.initial_faults = dict(faults or {})
        self.conf_overrides = overrides
        self.startup_delay_ms = startup_delay_ms
        self.process: subprocess.Popen | None = None
        self.console_path = self.root / "logs" / "console.log"
        self._http = requests.Session()
        self._gateway_http: requests.Session | None = None

    # ----- layout ----------------------------------------------------------

    def install(self) -> SimGateway:
        """Lay out the gateway directory, then apply port, conf and accounts."""
        install(str(self.root), force=True)
        self._write_conf()
        if self.accounts is not None:
            self.write_accounts(self.accounts)
        return self

    def _write_conf(self) -> None:
        conf = yaml.safe_load(self.conf_path.read_text())
        conf["listenPort"] = self.port
        for key, value in self.conf_overrides.items():
            if value is None:
                conf.pop(key, None)
            else:
                conf[key] = value
        self.conf_path.write_text(yaml.safe_dump(conf, sort_keys=False))

    def write_accounts(self, accounts: list[dict[str, Any]]) -> None:
        """Replace sim/accounts.yaml (read when the gateway starts)."""
        path = self.root / ACCOUNTS
        path.write_text(yaml.safe_dump({"accounts": accounts}, sort_keys=False))
        path.chmod(0o600)

    @property
    def conf_path(self) -> Path:
        return self.root / CONF

    @property
    def tls(self) -> bool:
        conf = yaml.safe_load(self.conf_path.read_text()) or {}
        return conf.get("listenSsl", True) is not False

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://localhost:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def process_match(self) -> str:
        """A command-line substring that matches this simulator and no other."""
        return f"-Dgateway_sim.dir={self.root} "

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def env(self) -> dict[str, str]:
        """The environment bin/run.sh gets from start()."""
        env = dict(os.environ)
        env["GATEWAY_SIM_CONTROL_PORT"] = str(self.control_port)
        env["GATEWAY_SIM_STARTUP_DELAY_MS"] = str(self.startup_delay_ms)
        env.pop("GATEWAY_SIM_ACCOUNTS", None)
        if self.initial_faults:
            env["GATEWAY_SIM_FAULTS"] = json.dumps(self.initial_faults)
        else:
            env.pop("GATEWAY_SIM_FAULTS", None)
        return env

    # ----- process ---------------------------------------------------------

    def start(
        self, timeout: float = DEFAULT_START_TIMEOUT, *, wait: bool = True
    ) -> SimGateway:
        """Run bin/run.sh root/conf.yaml from the directory; wait until it serves."""
        if not (self.root / "bin" / "run.sh").exists():
            self.install()
        if self.running():
            raise SimGatewayError(
                f"simulator in {self.root} is already running (pid {self.pid})"
            )
        for _ in range(PORT_ATTEMPTS - 1):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
            except SimGatewayError:
                if not (self._pick_control_port and CONTROL_BUSY in self.console()):
                    raise
                self.control_port = free_port()
                continue
            if not self._pick_port or self._owns_port():
                return self
            self.stop()
            self.port = free_port()
            self._write_conf()
        self._spawn()
        if wait:
            self.wait_ready(timeout)
        return self

    def _owns_port(self) -> bool:
        """Whether the gateway listens on its port and nobody else holds ::1."""
        return self._listening() and _free_on_ipv6_loopback(self.port)

    def _spawn(self) -> None:
        self.console_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console_path, "ab") as console:
            self.process = subprocess.Popen(
                ["bash", "bin/run.sh", "root/conf.yaml"],
                cwd=self.root,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Block until the control API answers and the gateway port accepts.

        A gateway that could not listen (busy port, bad keystore) stays up
        serving nothing, as the real one does: this returns as soon as the
        control API answers, and state()["listening"] is False.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                status = self.process.returncode
                raise SimGatewayError(
                    f"simulator exited with {status}: {self.console()[-2000:]}"
                )
            if self._control_up() and (_port_open(self.port) or not self._listening()):
                return
            time.sleep(0.05)
        raise SimGatewayError(
            f"simulator not serving after {timeout}s: {self.console()[-2000:]}"
        )

    def _control_up(self) -> bool:
        try:
            self._http.get(self.control_url + "/sim/state", timeout=1)
        except requests.RequestException:
            return False
        return True

    def _listening(self) -> bool:
        try:
            return bool(self.state()["listening"])
        except SimGatewayError:
            return True

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the process group (TERM, then KILL); return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self._http.close()
        if self._gateway_http is not None:
            self._gateway_http.close()
            self._gateway_http = None
        return self.process.returncode

    def console(self) -> str:
        """Everything the process printed (stdout and stderr) so far."""
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> SimGateway:
        if not (self.root / "bin" / "run.sh").exists():
            self.install()
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ----- control API -----------------------------------------------------

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(
                method, self.control_url + route, json=body, timeout=10
            )
        except requests.RequestException as exc:
            raise SimGatewayError(
                f"control API {method} {route} failed: {exc}"
            ) from exc
        payload = response.json()
        if response.status_code >= 400:
            raise SimGatewayError(f"{method} {route}: {payload.get('error', payload)}")
        return payload

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/sim/state")

    def faults(self, **knobs: Any) -> dict[str, Any]:
        """Merge fault knobs (no arguments: read them)."""
        if not knobs:
            return self._call("GET", "/sim/faults")
        return self._call("POST", "/sim/faults", knobs)

    def expire(self, style: str = "no_session") -> dict[str, Any]:
        return self._call("POST", "/sim/session/expire", {"style": style})

    def compete(self) -> dict[str, Any]:
        return self._call("POST", "/sim/session/compete")

    def drop(self) -> dict[str, Any]:
        return self._call("POST", "/sim/session/drop")

    def approve_push(self) -> bool:
        return bool(self._call("POST", "/sim/2fa/approve")["approved"])

    def reset(self) -> dict[str, Any]:
        return self._call("POST", "/sim/reset")

    def set_accounts(self, accounts: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", "/sim/accounts", {"accounts": accounts})

    def last_code(self) -> str:
        return self._call("GET", "/sim/2fa/last_code")["code"]

    def crash(self) -> int | None:
        """Make the gateway process die at once; return its exit status."""
        try:
            self._http.post(self.control_url + "/sim/crash", timeout=5)
        except requests.RequestException:
            pass
        if self.process is None:
            return None
        return self.process.wait(10)

    def gateway_session(self) -> requests.Session:
        """A requests session that trusts this gateway's own certificate.

        The certificate is pinned (read from the keystore in conf.yaml) and its
        name is not checked: IBKR's has none that matches localhost. So there
        is no "unverified request" warning and nothing global is changed,
        which keeps it safe to use from several threads.
        """
        if self._gateway_http is None:
            session = requests.Session()
            session.mount("https://", _PinnedAdapter(self._certificate_pem()))
            self._gateway_http = session
        return self._gateway_http

    def _certificate_pem(self) -> str:
        conf = yaml.safe_load(self.conf_path.read_text()) or {}
        name = str(conf.get("sslCert", "vertx.jks"))
        path = next(
            (p for p in (self.root / name, self.root / "root" / name) if p.is_file()),
            self.root / name,
        )
        try:
            _, chain = read_keystore(str(path), str(conf.get("sslPwd", "mywebapi")))
        except KeystoreError as exc:
            raise SimGatewayError(
                f"cannot read the gateway's keystore {path}: {exc}"
            ) from exc
        return chain.decode()

    def request(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        """One request to the gateway port (its own certificate is trusted)."""
        kwargs.setdefault("timeout", 10)
        kwargs.setdefault("allow_redirects", False)
        return self.gateway_session().request(method, self.base_url + route, **kwargs)

    def http_login(
        self, user: str = "demo", password: str = "demo", **options: Any
    ) -> str:
        """Log in through the page's own requests, without a browser.

        Options: paper (bool, the Live/Paper switch; None skips the check),
        method (picker choice: "IB Key", "Mobile Authenticator App", "SMS"),
        code (TOTP code; SMS codes are read from the control API), approve
        (approve IB Key pushes through the control API, default True).
        Returns the /sso/Dispatcher text ("Client login succeeds").
        """
        return HttpLogin(self).run(user, password, **options)

    def wait_for(
        self, predicate, timeout: float = 15.0, interval: float = 0.1
    ) -> dict[str, Any]:
        """Poll /sim/state until predicate(state) is true; return that state."""
        deadline = time.monotonic() + timeout
        state = self.state()
        while not predicate(state):
            if time.monotonic() > deadline:
                raise SimGatewayError(
                    f"condition not met within {timeout}s; state: {state}"
                )
            time.sleep(interval)
            state = self.state()
        return state


LOGIN_ROUTE = "/sso/Login?forwardTo=22&RL=1&ip2loc=on"


class HttpLogin:
    """The login page's requests, made without a browser (fast tests and demos)."""

    def __init__(self, gateway: SimGateway, timeout: float = 30.0):
        self.gateway = gateway
        self.timeout = timeout
        self.session = requests.Session()
        if gateway.tls:
            self.session.mount("https://", _PinnedAdapter(gateway._certificate_pem()))
        self.steps: list[str] = []

    def run(
        self,
        user: str,
        password: str,
        *,
        paper: bool | None = None,
        method: str | None = None,
        code: str | None = None,
        approve: bool = True,
    ) -> str:
        """Log in; return the Dispatcher page text or raise SimGatewayError."""
        self.session.get(self.gateway.base_url + LOGIN_ROUTE, timeout=self.timeout)
        reply = self._post("login", username=user, password=password, paper=paper)
        deadline = time.monotonic() + self.timeout
        while reply["step"] != "success":
            if time.monotonic() > deadline:
                raise SimGatewayError(f"login stuck at step {reply['step']}")
            reply = self._next(reply, method, code, approve)
        url = self.gateway.base_url + reply["location"]
        page = self.session.get(url, timeout=10)
        return page.text

    def _post(self, action: str, **fields: Any) -> dict[str, Any]:
        url = self.gateway.base_url + "/sso/Authenticator"
        body = {"action": action, **fields}
        response = self.session.post(url, json=body, timeout=30)
        reply = response.json()
        self.steps.append(reply["step"])
        return reply

    def _next(self, reply: dict, method: str | None, code: str | None, approve: bool):
        step = reply["step"]
        if step == "picker":
            if method is None:
                raise SimGatewayError(
                    "the account offers a method picker: pass method="
                )
            return self._post("choose", method=method)
        if step == "code":
            if code is None and reply.get("method") == "totp":
                raise SimGatewayError("the account asks for a TOTP code: pass code=")
            return self._post("code", code=code or self.gateway.last_code())
        if step == "push":
            if approve and self.gateway.state()["push_pending"]:
                self.gateway.approve_push()
            time.sleep(0.2)
            return self._post("push_status")
        if step == "promo":
            return self._post("promo_skip")
        raise SimGatewayError(f"login refused at step {step}: {reply.get('message')}")


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Trust exactly the given certificate, whatever host name it carries."""

    def __init__(self, certificate_pem: str):
        self._certificate_pem = certificate_pem
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        context = ssl.create_default_context(cadata=self._certificate_pem)
        context.check_hostname = False
        kwargs["ssl_context"] = context
        kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
