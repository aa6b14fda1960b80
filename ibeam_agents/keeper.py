"""`GatewayClient`: the agent as a library class.

It puts the pieces together (HTTP client, gateway control, failure budget,
watcher, health server) from explicit arguments, so a program can embed the
agent without environment variables::

    client = GatewayClient(
        Credentials("user", "password"),
        gateway_dir="/opt/clientportal.gw",
        outputs_dir="/var/lib/ibeam",
    )
    client.start()
    client.authenticate()
    client.maintain()          # blocks until SIGTERM / SIGINT

The command line builds one from the environment with `from_environment`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ibeam_agents import __version__, logs
from ibeam_agents.budget import FailureBudget
from ibeam_agents.client import GatewayApi, Routes, Status
from ibeam_agents.credentials import Credentials, load_credentials
from ibeam_agents.errors import AgentError, BrowserUnavailable
from ibeam_agents.gateway import make_gateway
from ibeam_agents.health import start_health_server
from ibeam_agents.settings import Settings, load_settings
from ibeam_agents.watcher import SESSION_KINDS, State, Watcher

log = logging.getLogger(__name__)

SETTLED_STATES = (State.READY, State.HALTED, State.MISCONFIGURED, State.BACKING_OFF)


def _login_module():
    try:
        from ibeam_agents import login
    except ImportError as exc:
        raise BrowserUnavailable(
            f"the browser login module cannot be loaded ({exc})"
        ) from exc
    return login


def _close_warm_browser() -> None:
    """Close a browser started for a login that did not happen (yet)."""
    browser = sys.modules.get("ibeam_agents.browser")
    if browser is not None:  # never imported: nothing was started
        browser.close_warm_browser()


class GatewayClient:
    """Start, authenticate, maintain and stop one Client Portal Gateway."""

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        gateway_dir: str | Path | None = None,
        outputs_dir: str | Path | None = None,
        inputs_dir: str | Path | None = None,
        base_url: str | None = None,
        settings: Settings | None = None,
        login: Callable[[Callable[[str, str], None]], Any] | None = None,
        **options: Any,
    ) -> None:
        """Build a client; `options` are any other Settings fields by name."""
        changes = dict(options)
        for key, value in (
            ("gateway_dir", gateway_dir),
            ("outputs_dir", outputs_dir),
            ("inputs_dir", inputs_dir),
        ):
            if value is not None:
                changes[key] = Path(value)
        if base_url is not None:
            changes["gateway_base_url"] = base_url
        elif "gateway_dir" in changes:
            changes["gateway_base_url"] = None  # derive again from the new dir
        self.settings = (
            replace(settings, **changes) if settings else Settings(**changes)
        )
        self.credentials = credentials
        if credentials is not None:
            logs.register_secret(credentials.account)
            logs.register_secret(credentials.password)
        self.api = self._make_api()
        self.gateway = make_gateway(
            self.settings, console_log=self.settings.outputs_dir / "gateway-console.log"
        )
        self.budget = FailureBudget(
            self.settings.budget_path, self.settings.max_failed_auth
        )
        self.watcher = Watcher(
            self.settings,
            api=self.api,
            gateway=self.gateway,
            budget=self.budget,
            login=login or self._browser_login,
            preflight=None if login else self._preflight,
        )
        self._health = None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        settings: Settings | None = None,
        with_credentials: bool = True,
        interactive: bool | None = None,
    ) -> GatewayClient:
        """A client configured by IBEAM_* variables (the command line's way)."""
        settings = settings or load_settings(environ)
        credentials = None
        if with_credentials:
            credentials = load_credentials(environ, interactive=interactive)
        return cls(credentials, settings=settings)

    def _make_api(self) -> GatewayApi:
        ca = self.settings.gateway_ca_cert
        return GatewayApi(
            self.settings.base_url,
            timeout=self.settings.request_timeout,
            verify=str(ca) if ca else False,
            routes=Routes.from_settings(self.settings),
        )

    # -- the browser login ----------------------------------------------------

    def _browser_login(self, notify: Callable[[str, str], None]):
        if self.credentials is None:
            raise BrowserUnavailable("no credentials were given to GatewayClient")
        login = _login_module()
        return login.perform_login(
            self.settings.login_options(),
            self.credentials,
            self.settings.two_factor_config(),
            notify=notify,
            gateway_check=self.watcher.gateway_check,
        )

    def _preflight(self) -> str:
        module = _login_module()
        check = getattr(module, "preflight_browser", None)
        if check is None:
            from ibeam_agents import browser

            check = browser.preflight_browser
        options = self.settings.login_options()
        warm, spki = self._warm_pin()
        if not warm:
            return check(options)
        return check(options, warm=True, spki=spki)

    def _warm_pin(self) -> tuple[bool, str | None]:
        """Whether a login surely follows (a gateway just started), and the pin.

        The watcher asks for the preflight right after it starts the gateway.
        A gateway this agent started, or one that does not answer yet, has no
        session, so the browser can start while it boots.  Its certificate is
        pinned at launch, before the gateway can show it: from its keystore.
        """
        try:
            fresh = self.gateway.owned or not self.gateway.answering()
        except AgentError:
            fresh = False
        if not fresh:
            return False, None
        from ibeam_agents import browser

        try:
            spki = browser.keystore_spki_hash(
                self.settings.gateway_dir, self.settings.base_url
            )
        except ValueError as exc:
            log.debug("no warm browser: %s", exc)
            return False, None
        return True, spki

    # -- public methods -------------------------------------------------------

    def describe(self) -> str:
        mode = "supervisord" if self.settings.under_supervisor else "standalone"
        tls = "verified" if self.settings.gateway_ca_cert else "not verified"
        return (
            f"ibeam agent {__version__}: gateway {self.settings.base_url} ({mode}, "
            f"TLS {tls}), {self.settings.trading_mode} mode, check every "
            f"{self.settings.maintenance_interval:g} s, failure budget "
            f"{self.settings.max_failed_auth}"
        )

    def status(self) -> Status:
        """The session state, read once (tickle)."""
        return self.api.tickle()

    def start(self) -> None:
        """Start the gateway unless it runs, and wait until it answers."""
        if not self.gateway.running():
            self.gateway.start()
        self.gateway.wait_ready()

    def check_startable(self) -> None:
        """A standalone gateway that neither runs nor can be started is a
        setting error: ConfigError (exit 2) before anything starts, rather than
        an agent that halts and waits."""
        check = getattr(self.gateway, "check_start_script", None)
        if check is None or self.gateway.running() or self.gateway.answering():
            return
        check()

    def authenticate(self) -> bool:
        """Start if needed, then recover/log in once; True when authenticated."""
        self.watcher.begin()
        self.watcher.run(until=lambda state: state in SETTLED_STATES)
        return self.watcher.state is State.READY

    def maintain(self, *, maintain_only: bool = False, health: bool = True) -> int:
        """Run the watcher (and the health server) until a signal; the exit code."""
        log.info("%s", self.describe())
        log.debug("settings: %s", self.settings.describe())
        if health and self.settings.health_server_port:
            self._health = start_health_server(
                self.settings.health_server_host,
                self.settings.health_server_port,
                self.watcher,
            )
        try:
            self.watcher.begin(maintain_only=maintain_only)
            return self.watcher.run()
        finally:
            self.close()

    def stop(self) -> None:
        """Log out (when there is a session) and stop the gateway."""
        status = self.api.tickle()
        if status.kind in SESSION_KINDS:
            self.api.logout()
        self.gateway.stop()
        _close_warm_browser()

    def close(self) -> None:
        """Stop the health server and release the HTTP session."""
        if self._health is not None:
            server, thread = self._health
            server.shutdown()
            server.server_close()
            thread.join(timeout=2)
            self._health = None
        _close_warm_browser()
        self.api.close()
