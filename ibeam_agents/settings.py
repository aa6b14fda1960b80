"""Settings: the environment, read once and checked whole, as a frozen object.

`load_settings` reads every ``IBEAM_*`` variable, checks each one and raises a
one-line `ConfigError` naming the first bad variable, what it accepts and the
value received (never for a secret).  Nothing starts before that.  docs/settings.md
lists every setting; `SETTINGS` below is the same list in code.

The gateway URL is derived from the gateway's own ``root/conf.yaml``
(``listenPort``, ``listenSsl``) when ``IBEAM_GATEWAY_BASE_URL`` is not set, so
the port lives in one place.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ibeam_agents import logs
from ibeam_agents.credentials import read_secret
from ibeam_agents.errors import ConfigError
from ibeam_agents.schedule import DEFAULT_TIMEZONE, RestartSchedule, parse_schedule
from ibeam_agents.selectors import parse_locator

DEFAULT_GATEWAY_DIR = "/srv/clientportal.gw"
DEFAULT_INPUTS_DIR = "/srv/inputs"
DEFAULT_OUTPUTS_DIR = "/srv/outputs"
DEFAULT_PROCESS_MATCH = "ibgroup.web.core.clientportal.gw.GatewayStart"
DEFAULT_SUCCESS_TEXT = "Client login succeeds"
DEFAULT_CUSTOM_HANDLER = "custom_two_fa_handler.CustomTwoFaHandler"
DEFAULT_GATEWAY_PORT = 5000
BUDGET_FILE_NAME = "failure-budget.json"

TWO_FA_HANDLERS = {
    "TOTP": "TOTP",
    "PYOTP": "TOTP",
    "EXTERNAL_REQUEST": "EXTERNAL_REQUEST",
    "COMMAND": "COMMAND",
    "IBKEY_PUSH": "IBKEY_PUSH",
    "NOTIFICATION_RESEND": "IBKEY_PUSH",
    "CUSTOM_HANDLER": "CUSTOM_HANDLER",
}
TRUE_WORDS = ("y", "yes", "t", "true", "on", "1")
FALSE_WORDS = ("n", "no", "f", "false", "off", "0")
HTTP_METHODS = ("GET", "POST", "PUT")
# An X display: [host]:display[.screen], e.g. :99 or localhost:10.0
_DISPLAY_REG = re.compile(r"[\w.-]*(?:/unix)?:\d+(?:\.\d+)?")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_REG = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


def default_outputs_dir() -> Path:
    """/srv/outputs when it is (or can be made) writable, else ~/.local/state/ibeam."""
    preferred = Path(DEFAULT_OUTPUTS_DIR)
    probe = preferred if preferred.exists() else preferred.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return preferred
    return Path.home() / ".local" / "state" / "ibeam"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every agent setting, with the defaults of docs/settings.md."""

    gateway_dir: Path = Path(DEFAULT_GATEWAY_DIR)
    chrome_driver_path: str = "/usr/bin/chromedriver"
    chrome_binary_path: str = "/usr/bin/chromium"
    gateway_startup: float = 20.0
    gateway_base_url: str | None = None
    gateway_process_match: str = DEFAULT_PROCESS_MATCH
    route_auth: str = "/sso/Login?forwardTo=22&RL=1&ip2loc=on"
    route_user: str = "/v1/api/one/user"
    route_validate: str = "/v1/portal/sso/validate"
    route_tickle: str = "/v1/api/tickle"
    route_auth_status: str = "/v1/api/iserver/auth/status"
    route_reauthenticate: str = "/v1/portal/iserver/reauthenticate?force=true"
    route_logout: str = "/v1/api/logout"
    route_initialise: str = "/v1/api/iserver/auth/ssodh/init"
    user_name_el: str | None = None
    password_el: str | None = None
    submit_el: str | None = None
    success_el_text: str = DEFAULT_SUCCESS_TEXT
    maintenance_interval: float = 60.0
    status_interval: float = 2.0
    log_level: str = "INFO"
    inputs_dir: Path = Path(DEFAULT_INPUTS_DIR)
    outputs_dir: Path = field(default_factory=default_outputs_dir)
    health_server_host: str = "127.0.0.1"
    health_server_port: int = 5001
    max_failed_auth: int = 3
    backoff_min: float = 60.0
    backoff_max: float = 3600.0
    trading_mode: str = "live"
    two_fa_handler: str | None = None
    totp_secret: str | None = field(default=None, repr=False)
    two_fa_command: str | None = field(default=None, repr=False)
    external_request_url: str | None = field(default=None, repr=False)
    external_request_method: str = "GET"
    external_request_timeout: float = 300.0
    external_request_headers: dict[str, str] | None = field(default=None, repr=False)
    custom_two_fa_handler: str = DEFAULT_CUSTOM_HANDLER
    two_fa_select_target: str | None = None
    two_fa_timeout: float = 180.0
    request_timeout: float = 10.0
    page_load_timeout: float = 20.0
    oauth_timeout: float = 20.0
    auth_settle_timeout: float = 30.0
    reauthenticate_attempts: int = 2
    transient_grace: float = 600.0
    compete_max_per_hour: int = 3
    start_active: bool = True
    supervisor_url: str | None = None
    supervisor_program: str = "gateway"
    gateway_ca_cert: Path | None = None
    restart_schedule: RestartSchedule = field(
        default_factory=lambda: RestartSchedule(())
    )
    gateway_memory_limit_mb: float | None = None
    display: str | None = None
    ui_scaling: float = 1.0

    def __post_init__(self) -> None:
        if self.gateway_base_url is None:
            derived = derive_base_url(self.gateway_dir)
            object.__setattr__(self, "gateway_base_url", derived)

    @property
    def base_url(self) -> str:
        """The gateway's URL without a trailing slash."""
        return str(self.gateway_base_url).rstrip("/")

    @property
    def gateway_port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def budget_path(self) -> Path:
        return self.outputs_dir / BUDGET_FILE_NAME

    @property
    def under_supervisor(self) -> bool:
        return bool(self.supervisor_url)

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields changed (the library client uses it)."""
        return replace(self, **changes)

    def login_options(self):
        """The browser login's options (ibeam_agents.login.LoginOptions)."""
        from ibeam_agents.login import LoginOptions

        return LoginOptions(
            base_url=self.base_url,
            route_auth=self.route_auth,
            trading_mode=self.trading_mode,
            chrome_driver_path=self.chrome_driver_path,
            chrome_binary_path=self.chrome_binary_path,
            outputs_dir=self.outputs_dir,
            page_load_timeout=self.page_load_timeout,
            step_timeout=self.oauth_timeout,
            success_text=self.success_el_text,
            user_name_el=self.user_name_el,
            password_el=self.password_el,
            submit_el=self.submit_el,
            display=self.display,
            ui_scaling=self.ui_scaling,
        )

    def two_factor_config(self):
        """The second factor's configuration (ibeam_agents.twofa.TwoFactorConfig)."""
        from ibeam_agents.twofa import TwoFactorConfig

        return TwoFactorConfig(
            handler=self.two_fa_handler,
            totp_secret=self.totp_secret,
            command=self.two_fa_command,
            request_url=self.external_request_url,
            request_method=self.external_request_method,
            request_timeout=self.external_request_timeout,
            request_headers=self.external_request_headers,
            custom_handler=self.custom_two_fa_handler,
            inputs_dir=self.inputs_dir,
            outputs_dir=self.outputs_dir,
            select_target=self.two_fa_select_target,
            push_timeout=self.two_fa_timeout,
        )

    def describe(self) -> dict[str, str]:
        """Every setting as text for the start-up log, secrets masked."""
        shown = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if not item.repr and value is not None:
                value = logs.REDACTED
            shown[item.name] = str(value)
        return shown


def derive_base_url(gateway_dir: Path) -> str:
    """The gateway URL from gateway_dir/root/conf.yaml (listenPort, listenSsl)."""
    conf = Path(gateway_dir) / "root" / "conf.yaml"
    try:
        text = conf.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"https://localhost:{DEFAULT_GATEWAY_PORT}"
    except OSError as exc:
        raise ConfigError(
            f"{conf} cannot be read ({exc.strerror}); fix its permissions or set "
            "IBEAM_GATEWAY_BASE_URL"
        ) from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{conf} is not valid YAML; fix it or set IBEAM_GATEWAY_BASE_URL"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{conf} is not a YAML mapping; fix it")
    port = data.get("listenPort", DEFAULT_GATEWAY_PORT)
    ssl = data.get("listenSsl", True)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{conf} listenPort must be a port number: got {port!r}")
    scheme = "http" if ssl is False else "https"
    return f"{scheme}://localhost:{port}"


class _Env:
    """Typed reads of IBEAM_* variables; every failure names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def number(
        self,
        name: str,
        default: float | None,
        *,
        minimum: float = 0.0,
        exclusive: bool = True,
        integer: bool = False,
        unit: str = "seconds",
        maximum: float | None = None,
    ):
        value = self.raw(name)
        if value is None:
            return default
        kind = "a whole number" if integer else "a number"
        relation = "greater than" if exclusive else "at least"
        accepted = f"{kind} of {unit} {relation} {minimum:g}"
        if maximum is not None:
            accepted = f"{kind} from {minimum:g} to {maximum:g}"
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            raise ConfigError(f"{name} must be {accepted}: got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"{name} must be {accepted}: got {value!r}")
        if number < minimum or (exclusive and number == minimum):
            raise ConfigError(f"{name} must be {accepted}: got {value!r}")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{name} must be {accepted}: got {value!r}")
        return number

    def boolean(self, name: str, default: bool | None) -> bool | None:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ConfigError(f"{name} must be true or false: got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in [c.lower() for c in choices]:
            listed = ", ".join(choices)
            raise ConfigError(f"{name} must be one of {listed}: got {value!r}")
        return value.lower()

    def route(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value.startswith("/"):
            raise ConfigError(
                f"{name} must be a path starting with '/' (e.g. {default}): "
                f"got {value!r}"
            )
        return value

    def url(self, name: str, schemes: tuple[str, ...], *, secret=False) -> str | None:
        """A URL; a secret one (it may carry a token) also comes from name_FILE."""
        value = read_secret(self.environ, name) if secret else self.raw(name)
        value = value.strip() if value else None
        if not value:
            return None
        parts = urlsplit(value)
        shown = "" if secret else f": got {value!r}"
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            listed = " or ".join(f"{s}://..." for s in schemes)
            raise ConfigError(f"{name} must be a URL of the form {listed}{shown}")
        return value

    def path(self, name: str, default: str | Path | None) -> Path | None:
        value = self.raw(name)
        if value is None:
            return None if default is None else Path(default)
        return Path(value).expanduser()

    def directory(
        self, name: str, default: str | Path | None, *, writable: bool = False
    ) -> Path | None:
        """A directory setting: it may not exist yet, but must not be a file."""
        path = self.path(name, default)
        if path is None or not path.exists():
            return path
        if not path.is_dir():
            raise ConfigError(f"{name} must be a directory: got '{path}', a file")
        if writable and not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{name} must be a directory this user can write: got '{path}'; "
                "fix its owner or mode, or point it elsewhere"
            )
        return path

    def host(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_REG.fullmatch(value) or len(value) > 253:
                raise ConfigError(
                    f"{name} must be an address such as 127.0.0.1 or 0.0.0.0, or a "
                    f"host name: got {value!r}"
                ) from None
        return value


def _locator(env: _Env, name: str) -> str | None:
    """An element setting: `NAME_EL` or IBeam's `NAME_EL_ID`, checked for syntax."""
    long_name, id_name = f"IBEAM_{name}_EL", f"IBEAM_{name}_EL_ID"
    value, legacy = env.raw(long_name), env.raw(id_name)
    if value and legacy and value != legacy:
        raise ConfigError(f"{long_name} and {id_name} are both set; keep only one")
    value = value or legacy
    if value is None:
        return None
    setting = long_name if env.raw(long_name) else id_name
    parse_locator(value, setting)
    return value


def _success_text(env: _Env) -> str:
    value = env.text("IBEAM_SUCCESS_EL_TEXT", DEFAULT_SUCCESS_TEXT)
    kind, sep, text = value.partition("@@")
    if sep and kind.upper() == "TAG_NAME" and text:
        return text
    if sep:
        raise ConfigError(
            "IBEAM_SUCCESS_EL_TEXT must be the success text, optionally as "
            f"TAG_NAME@@text: got {value!r}"
        )
    return value


def _trading_mode(env: _Env) -> str:
    mode = env.choice("IBEAM_TRADING_MODE", "", ("live", "paper"))
    paper = env.boolean("IBEAM_USE_PAPER_ACCOUNT", None)
    if mode and paper is not None and (mode == "paper") != paper:
        raise ConfigError(
            f"IBEAM_TRADING_MODE={mode} contradicts IBEAM_USE_PAPER_ACCOUNT="
            f"{str(paper).lower()}; keep only one of them"
        )
    if mode:
        return mode
    return "paper" if paper else "live"


def _two_fa_handler(env: _Env) -> str | None:
    value = env.raw("IBEAM_TWO_FA_HANDLER")
    if value is None or value.upper() == "NONE":
        return None
    handler = TWO_FA_HANDLERS.get(value.upper())
    if handler is None:
        if value.upper() == "GOOGLE_MSG":
            raise ConfigError(
                "IBEAM_TWO_FA_HANDLER=GOOGLE_MSG is not supported; use COMMAND or "
                "EXTERNAL_REQUEST with a program or service that reads the SMS"
            )
        listed = "TOTP, EXTERNAL_REQUEST, COMMAND, IBKEY_PUSH, CUSTOM_HANDLER"
        raise ConfigError(
            f"IBEAM_TWO_FA_HANDLER must be one of {listed}: got {value!r}"
        )
    return handler


def _totp_secret(environ: Mapping[str, str]) -> str | None:
    secret = read_secret(environ, "IBEAM_TOTP_SECRET")
    alias = read_secret(environ, "IBEAM_PYOTP_SECRET")
    if secret and alias and secret != alias:
        raise ConfigError(
            "IBEAM_TOTP_SECRET and IBEAM_PYOTP_SECRET are both set; keep only one"
        )
    name = "IBEAM_TOTP_SECRET" if secret else "IBEAM_PYOTP_SECRET"
    secret = secret or alias
    if secret is None:
        return None
    compact = secret.replace(" ", "").upper()
    if not compact or not re.fullmatch(r"[A-Z2-7]+=*", compact):
        raise ConfigError(
            f"{name} must be the base32 secret shown when the authenticator was "
            "set up (letters A-Z and digits 2-7)"
        )
    return compact


def _headers(environ: Mapping[str, str]) -> dict[str, str] | None:
    value = read_secret(environ, "IBEAM_EXTERNAL_REQUEST_HEADERS")
    if value is None:
        return None
    try:
        headers = json.loads(value)
    except json.JSONDecodeError:
        headers = None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(
            "IBEAM_EXTERNAL_REQUEST_HEADERS must be a JSON object of strings, "
            'e.g. {"Authorization": "Bearer ..."}'
        )
    return headers


def _custom_handler(env: _Env) -> str:
    value = env.text("IBEAM_CUSTOM_TWO_FA_HANDLER", DEFAULT_CUSTOM_HANDLER)
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value):
        raise ConfigError(
            "IBEAM_CUSTOM_TWO_FA_HANDLER must be module.Class (a module file in the "
            f"inputs dir): got {value!r}"
        )
    return value


def _two_fa_pieces(env: _Env, handler: str | None, fields_: dict) -> None:
    """Check that the chosen second factor has what it needs."""
    needs = {
        "TOTP": ("totp_secret", "IBEAM_TOTP_SECRET"),
        "COMMAND": ("two_fa_command", "IBEAM_TWO_FA_COMMAND"),
        "EXTERNAL_REQUEST": ("external_request_url", "IBEAM_EXTERNAL_REQUEST_URL"),
    }
    if handler in needs:
        key, variable = needs[handler]
        if not fields_.get(key):
            raise ConfigError(
                f"IBEAM_TWO_FA_HANDLER={handler} needs {variable}; set it "
                f"(or {variable}_FILE where it is a secret)"
            )
    if handler == "CUSTOM_HANDLER":
        module = fields_["custom_two_fa_handler"].rpartition(".")[0]
        path = Path(fields_["inputs_dir"]) / (module.replace(".", "/") + ".py")
        if not path.is_file():
            raise ConfigError(
                f"IBEAM_CUSTOM_TWO_FA_HANDLER names {module}, but {path} does not "
                "exist; put the module in IBEAM_INPUTS_DIR or fix the setting"
            )


def _supervisor_url(env: _Env) -> str | None:
    value = env.url("IBEAM_SUPERVISOR_URL", ("unix", "http"))
    if value and value.startswith("unix://") and len(value) <= len("unix://"):
        raise ConfigError(
            "IBEAM_SUPERVISOR_URL must name the socket, e.g. "
            f"unix:///run/ibeam/supervisor.sock: got {value!r}"
        )
    return value


def _ca_cert(env: _Env) -> Path | None:
    path = env.path("IBEAM_GATEWAY_CA_CERT", None)
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(
            f"IBEAM_GATEWAY_CA_CERT must name a PEM certificate file: got '{path}', "
            "which does not exist"
        )
    from cryptography import x509  # only with a CA certificate: saves memory

    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"IBEAM_GATEWAY_CA_CERT names '{path}', which cannot be read "
            f"({exc.strerror}); fix its mode or owner"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"IBEAM_GATEWAY_CA_CERT must name a PEM certificate file: '{path}' "
            "holds no certificate (-----BEGIN CERTIFICATE-----)"
        ) from exc
    return path


def _display(env: _Env) -> str | None:
    value = env.text("IBEAM_DISPLAY")
    if value is not None and not _DISPLAY_REG.fullmatch(value):
        raise ConfigError(
            f"IBEAM_DISPLAY must be an X display such as :99: got {value!r}"
        )
    return value


def _two_fa_command(env: _Env) -> str | None:
    """The command's words are split as the login will split them (no shell)."""
    value = env.text("IBEAM_TWO_FA_COMMAND")
    if value is None:
        return None
    try:
        shlex.split(value)
    except ValueError as exc:
        raise ConfigError(
            f"IBEAM_TWO_FA_COMMAND cannot be split into words ({exc}); check its quotes"
        ) from None
    return value


def _base_url(env: _Env) -> str | None:
    value = env.url("IBEAM_GATEWAY_BASE_URL", ("https", "http"))
    if value and not urlsplit(value).hostname:
        raise ConfigError(
            f"IBEAM_GATEWAY_BASE_URL must be like https://localhost:5000: got {value!r}"
        )
    return value.rstrip("/") if value else None


def _log_level(env: _Env) -> str:
    value = env.text("IBEAM_LOG_LEVEL", "INFO")
    try:
        logs.parse_level(value)
    except ValueError:
        raise ConfigError(
            "IBEAM_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
            f"(any case): got {value!r}"
        ) from None
    name = value.upper()
    return "WARNING" if name == "WARN" else name


def _secrets_source(env: _Env) -> None:
    value = env.text("IBEAM_SECRETS_SOURCE", "env")
    if value.lower() not in ("env", "fs"):
        raise ConfigError(
            "IBEAM_SECRETS_SOURCE must be env or fs (use the _FILE variables for "
            f"secret files): got {value!r}"
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every IBEAM_* variable; raise ConfigError on the first bad one."""
    environ = os.environ if environ is None else environ
    env = _Env(environ)
    _secrets_source(env)
    handler = _two_fa_handler(env)
    values: dict[str, Any] = dict(
        gateway_dir=env.directory("IBEAM_GATEWAY_DIR", DEFAULT_GATEWAY_DIR),
        chrome_driver_path=env.text(
            "IBEAM_CHROME_DRIVER_PATH", "/usr/bin/chromedriver"
        ),
        chrome_binary_path=env.text("IBEAM_CHROME_BINARY_PATH", "/usr/bin/chromium"),
        gateway_startup=env.number("IBEAM_GATEWAY_STARTUP", 20.0),
        gateway_base_url=_base_url(env),
        gateway_process_match=env.text(
            "IBEAM_GATEWAY_PROCESS_MATCH", DEFAULT_PROCESS_MATCH
        ),
        route_auth=env.route("IBEAM_ROUTE_AUTH", Settings.route_auth),
        route_user=env.route("IBEAM_ROUTE_USER", Settings.route_user),
        route_validate=env.route("IBEAM_ROUTE_VALIDATE", Settings.route_validate),
        route_tickle=env.route("IBEAM_ROUTE_TICKLE", Settings.route_tickle),
        route_auth_status=env.route(
            "IBEAM_ROUTE_AUTH_STATUS", Settings.route_auth_status
        ),
        route_reauthenticate=env.route(
            "IBEAM_ROUTE_REAUTHENTICATE", Settings.route_reauthenticate
        ),
        route_logout=env.route("IBEAM_ROUTE_LOGOUT", Settings.route_logout),
        route_initialise=env.route("IBEAM_ROUTE_INITIALISE", Settings.route_initialise),
        user_name_el=_locator(env, "USER_NAME"),
        password_el=_locator(env, "PASSWORD"),
        submit_el=_locator(env, "SUBMIT"),
        success_el_text=_success_text(env),
        maintenance_interval=env.number("IBEAM_MAINTENANCE_INTERVAL", 60.0),
        status_interval=env.number("IBEAM_STATUS_INTERVAL", 2.0, exclusive=False),
        log_level=_log_level(env),
        inputs_dir=env.directory("IBEAM_INPUTS_DIR", DEFAULT_INPUTS_DIR),
        health_server_host=env.host("IBEAM_HEALTH_SERVER_HOST", "127.0.0.1"),
        health_server_port=env.number(
            "IBEAM_HEALTH_SERVER_PORT",
            5001,
            minimum=0,
            exclusive=False,
            integer=True,
            unit="port",
            maximum=65535,
        ),
        max_failed_auth=env.number(
            "IBEAM_MAX_FAILED_AUTH",
            3,
            minimum=1,
            exclusive=False,
            integer=True,
            unit="attempts",
        ),
        backoff_min=env.number("IBEAM_BACKOFF_MIN", 60.0),
        backoff_max=env.number("IBEAM_BACKOFF_MAX", 3600.0),
        trading_mode=_trading_mode(env),
        two_fa_handler=handler,
        totp_secret=_totp_secret(environ),
        two_fa_command=_two_fa_command(env),
        external_request_url=env.url(
            "IBEAM_EXTERNAL_REQUEST_URL", ("http", "https"), secret=True
        ),
        external_request_method=env.choice(
            "IBEAM_EXTERNAL_REQUEST_METHOD", "GET", HTTP_METHODS
        ).upper(),
        external_request_timeout=env.number("IBEAM_EXTERNAL_REQUEST_TIMEOUT", 300.0),
        external_request_headers=_headers(environ),
        custom_two_fa_handler=_custom_handler(env),
        two_fa_select_target=env.text("IBEAM_TWO_FA_SELECT_TARGET"),
        two_fa_timeout=env.number("IBEAM_TWO_FA_TIMEOUT", 180.0),
        request_timeout=env.number("IBEAM_REQUEST_TIMEOUT", 10.0),
        page_load_timeout=env.number("IBEAM_PAGE_LOAD_TIMEOUT", 20.0),
        oauth_timeout=env.number("IBEAM_OAUTH_TIMEOUT", 20.0),
        auth_settle_timeout=env.number("IBEAM_AUTH_SETTLE_TIMEOUT", 30.0),
        reauthenticate_attempts=env.number(
            "IBEAM_REAUTHENTICATE_ATTEMPTS",
            2,
            exclusive=False,
            integer=True,
            unit="rounds",
        ),
        transient_grace=env.number("IBEAM_TRANSIENT_GRACE", 600.0, exclusive=False),
        compete_max_per_hour=env.number(
            "IBEAM_COMPETE_MAX_PER_HOUR",
            3,
            exclusive=False,
            integer=True,
            unit="take-backs",
        ),
        start_active=env.boolean("IBEAM_START_ACTIVE", True),
        supervisor_url=_supervisor_url(env),
        supervisor_program=env.text("IBEAM_SUPERVISOR_PROGRAM", "gateway"),
        gateway_ca_cert=_ca_cert(env),
        restart_schedule=parse_schedule(
            env.raw("IBEAM_RESTART_SCHEDULE"),
            env.text("IBEAM_RESTART_TIMEZONE", DEFAULT_TIMEZONE),
        ),
        gateway_memory_limit_mb=env.number(
            "IBEAM_GATEWAY_MEMORY_LIMIT_MB", None, unit="MiB"
        ),
        display=_display(env),
        ui_scaling=env.number("IBEAM_UI_SCALING", 1.0, unit="times"),
    )
    outputs = env.directory("IBEAM_OUTPUTS_DIR", None, writable=True)
    if outputs is not None:
        values["outputs_dir"] = outputs
    if values["backoff_min"] > values["backoff_max"]:
        raise ConfigError(
            f"IBEAM_BACKOFF_MIN ({values['backoff_min']:g}) must not exceed "
            f"IBEAM_BACKOFF_MAX ({values['backoff_max']:g})"
        )
    _two_fa_pieces(env, handler, values)
    return Settings(**values)
