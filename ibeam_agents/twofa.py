"""Second-factor sources: where the code for the login page comes from.

``make_second_factor(config)`` turns a ``TwoFactorConfig`` into a ``SecondFactor``:

- ``TOTP``: a time-based code from a base32 secret (cryptography's TOTP);
- ``COMMAND``: the standard output of a command, run without a shell;
- ``EXTERNAL_REQUEST``: the body of an HTTP answer;
- ``IBKEY_PUSH``: no code; the login waits for the phone to approve the push;
- ``CUSTOM_HANDLER``: a class in a module of the inputs dir, with IBeam's
  interface (``Class(outputs_dir=...)`` and ``get_two_fa_code(driver)``) or the
  simpler ``code(context)``.

Codes and secrets are never logged and never appear in error messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import logging
import shlex
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibeam_agents.errors import ConfigError, SecondFactorUnavailable

log = logging.getLogger(__name__)

DEFAULT_PUSH_TIMEOUT = 180.0
DEFAULT_CUSTOM_HANDLER = "custom_two_fa_handler.CustomTwoFaHandler"
TOTP_STEP = 30
TOTP_DIGITS = 6
# Fewer seconds than this left in the step: wait for the next code, so that
# typing, submitting and the gateway's own latency fit inside the step.
TOTP_MIN_REMAINING = 10.0
CODE_MIN_DIGITS = 4
CODE_MAX_DIGITS = 10

# The last TOTP step whose code was typed, per secret (by digest), in this process.
# A verifier accepts each code once (RFC 6238 section 5.2), so a new attempt in
# the same step waits for the next code rather than sending one already seen.
USED_TOTP_STEPS: dict[str, int] = {}

HANDLER_ALIASES = {
    "TOTP": "TOTP",
    "PYOTP": "TOTP",
    "COMMAND": "COMMAND",
    "EXTERNAL_REQUEST": "EXTERNAL_REQUEST",
    "IBKEY_PUSH": "IBKEY_PUSH",
    "NOTIFICATION_RESEND": "IBKEY_PUSH",
    "CUSTOM_HANDLER": "CUSTOM_HANDLER",
}


@dataclass(frozen=True)
class TwoFactorConfig:
    """Second-factor settings, as ``settings`` reads them from the environment."""

    handler: str | None
    totp_secret: str | None = field(default=None, repr=False)
    command: str | None = None
    request_url: str | None = None
    request_method: str = "GET"
    request_timeout: float = 300.0
    request_headers: dict[str, str] | None = field(default=None, repr=False)
    custom_handler: str = DEFAULT_CUSTOM_HANDLER
    inputs_dir: Path | None = None
    outputs_dir: Path | None = None
    select_target: str | None = None
    push_timeout: float = DEFAULT_PUSH_TIMEOUT


@dataclass(frozen=True)
class CodeContext:
    """What a source may use to produce a code for one code page."""

    driver: Any = None
    attempt: int = 1
    rejected: frozenset[str] = frozenset()
    page_variant: str | None = None


class SecondFactor:
    """A source of second-factor answers for the login page."""

    kind = "NONE"
    #: whether the login page needs a typed code from this source
    needs_code = True
    #: method picker option texts this source answers, best first
    picker_targets: tuple[str, ...] = ()

    def code(self, context: CodeContext) -> str:
        """Return the code to type on the page."""
        raise NotImplementedError


def validate_code(raw: str | None, source: str) -> str:
    """Return the code stripped, or raise if it is not a plain numeric code."""
    code = (raw or "").strip()
    if not code:
        raise SecondFactorUnavailable(f"{source} gave no second-factor code")
    if not code.isascii() or not code.isdigit():
        raise SecondFactorUnavailable(
            f"{source} gave something that is not a numeric code "
            f"({len(code)} characters); it must print only the digits"
        )
    if not CODE_MIN_DIGITS <= len(code) <= CODE_MAX_DIGITS:
        raise SecondFactorUnavailable(
            f"{source} gave a code of {len(code)} digits; expected "
            f"{CODE_MIN_DIGITS} to {CODE_MAX_DIGITS}"
        )
    return code


def decode_base32_secret(secret: str, setting: str = "IBEAM_TOTP_SECRET") -> bytes:
    """Decode a base32 TOTP secret as authenticator apps show it."""
    cleaned = "".join(secret.split()).replace("-", "").upper().rstrip("=")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        key = base64.b32decode(padded)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{setting} is not valid base32 (letters A-Z and digits 2-7); "
            "copy the secret IBKR showed when the authenticator was set up"
        ) from None
    if len(key) < 10:
        raise ConfigError(
            f"{setting} is too short ({len(key) * 8} bits); a TOTP secret has "
            "at least 80 bits (16 base32 characters)"
        )
    return key


class TotpSource(SecondFactor):
    """Time-based codes from a shared secret (RFC 6238, 30 s steps, 6 digits)."""

    kind = "TOTP"
    picker_targets = ("Mobile Authenticator App", "Authenticator", "TOTP")

    def __init__(
        self,
        secret: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        min_remaining: float = TOTP_MIN_REMAINING,
        used_steps: dict[str, int] | None = None,
    ) -> None:
        from cryptography.hazmat.primitives.hashes import SHA1
        from cryptography.hazmat.primitives.twofactor.totp import TOTP

        key = decode_base32_secret(secret)
        self._totp = TOTP(key, TOTP_DIGITS, SHA1(), TOTP_STEP, enforce_key_length=False)
        self._digest = hashlib.sha256(key).hexdigest()
        self._clock = clock
        self._sleep = sleep
        self._min_remaining = min_remaining
        self._used = {} if used_steps is None else used_steps

    def code(self, context: CodeContext) -> str:
        now = self._clock()
        last = self._used.get(self._digest)
        if last is not None and 0 <= last - _step(now) <= 1:
            log.info(
                "second factor: this TOTP step's code was used; waiting for the next"
            )
            now = self._wait_for_step(last + 1, now)
        remaining = TOTP_STEP - (now % TOTP_STEP)
        if remaining < self._min_remaining:
            log.info("second factor: TOTP step ends in %.0f s, waiting", remaining)
            now = self._wait_for_step(_step(now) + 1, now)

        value = self._generate(now)
        if value in context.rejected:
            log.info("second factor: waiting for the next TOTP step")
            now = self._wait_for_step(_step(now) + 1, now)
            value = self._generate(now)
        self._used[self._digest] = _step(now)
        return value

    def _generate(self, now: float) -> str:
        return self._totp.generate(int(now)).decode("ascii")

    def _wait_for_step(self, step: int, now: float) -> float:
        boundary = step * TOTP_STEP
        while now < boundary:
            self._sleep(boundary - now)
            now = self._clock()
        return now


def _step(now: float) -> int:
    return int(now) // TOTP_STEP


class CommandSource(SecondFactor):
    """A code printed by a command (run without a shell, with a timeout)."""

    kind = "COMMAND"
    picker_targets = ("One Time Passcode", "SMS", "Text Message", "Security Code")

    def __init__(self, command: str, timeout: float) -> None:
        try:
            self._argv = shlex.split(command)
        except ValueError as err:
            raise ConfigError(
                f"IBEAM_TWO_FA_COMMAND cannot be split into words ({err}); "
                "check its quotes"
            ) from None
        if not self._argv:
            raise ConfigError("IBEAM_TWO_FA_COMMAND is empty; give a command")
        self._timeout = timeout

    def code(self, context: CodeContext) -> str:
        name = Path(self._argv[0]).name
        try:
            done = subprocess.run(
                self._argv,
                capture_output=True,
                text=True,
                timeout=self._timeout,
                check=False,
            )
        except FileNotFoundError:
            raise SecondFactorUnavailable(
                f"IBEAM_TWO_FA_COMMAND: {self._argv[0]} was not found"
            ) from None
        except PermissionError:
            raise SecondFactorUnavailable(
                f"IBEAM_TWO_FA_COMMAND: {self._argv[0]} is not executable"
            ) from None
        except subprocess.TimeoutExpired:
            raise SecondFactorUnavailable(
                f"IBEAM_TWO_FA_COMMAND: {name} gave no code within {self._timeout:g} s"
            ) from None
        if done.returncode != 0:
            raise SecondFactorUnavailable(
                f"IBEAM_TWO_FA_COMMAND: {name} exited with status {done.returncode}"
            )
        return validate_code(done.stdout, f"IBEAM_TWO_FA_COMMAND ({name})")


class HttpSource(SecondFactor):
    """A code taken from the body of an HTTP answer.

    An empty body, 204 or 404 means "no code yet": the endpoint is asked again
    every second until the timeout, so a relay that learns the SMS a little
    after the login page asked for it still works.
    """

    kind = "EXTERNAL_REQUEST"
    picker_targets = CommandSource.picker_targets
    POLL_INTERVAL = 1.0

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        timeout: float = 300.0,
        headers: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                "IBEAM_EXTERNAL_REQUEST_URL must start with http:// or https://"
            )
        self._url = url
        self._method = method.upper()
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._clock = clock
        self._sleep = sleep

    def code(self, context: CodeContext) -> str:
        deadline = self._clock() + self._timeout
        while True:
            body = self._ask(max(1.0, deadline - self._clock()))
            if body:
                return validate_code(body, "IBEAM_EXTERNAL_REQUEST_URL")
            if self._clock() + self.POLL_INTERVAL >= deadline:
                raise SecondFactorUnavailable(
                    "IBEAM_EXTERNAL_REQUEST_URL gave no code within "
                    f"{self._timeout:g} s"
                )
            self._sleep(self.POLL_INTERVAL)

    def _ask(self, timeout: float) -> str:
        import requests

        try:
            answer = requests.request(
                self._method, self._url, headers=self._headers, timeout=timeout
            )
        except requests.RequestException as err:
            raise SecondFactorUnavailable(
                f"IBEAM_EXTERNAL_REQUEST_URL could not be reached: {type(err).__name__}"
            ) from err
        if answer.status_code in (204, 404):
            return ""
        if not answer.ok:
            raise SecondFactorUnavailable(
                f"IBEAM_EXTERNAL_REQUEST_URL answered HTTP {answer.status_code}"
            )
        return answer.text.strip()


class PushApproval(SecondFactor):
    """IB Key push: the phone approves, the login page only waits."""

    kind = "IBKEY_PUSH"
    needs_code = False
    picker_targets = ("IB Key",)

    def code(self, context: CodeContext) -> str:
        raise SecondFactorUnavailable(
            "IBEAM_TWO_FA_HANDLER is IBKEY_PUSH, which gives no code, but the "
            "login page asks for one; choose a code source or set "
            "IBEAM_TWO_FA_SELECT_TARGET to 'IB Key'"
        )


class CustomSource(SecondFactor):
    """An operator's class loaded from the inputs dir."""

    kind = "CUSTOM_HANDLER"

    def __init__(self, handler: Any, name: str, select_target: str | None) -> None:
        self._handler = handler
        self._name = name
        self.needs_code = bool(getattr(handler, "needs_code", True))
        target = getattr(handler, "select_target", None) or select_target
        self.picker_targets = (target,) if target else ()

    def code(self, context: CodeContext) -> str:
        try:
            if callable(getattr(self._handler, "code", None)):
                raw = self._handler.code(context)
            else:
                raw = self._handler.get_two_fa_code(context.driver)
        except Exception as err:
            raise SecondFactorUnavailable(
                f"IBEAM_CUSTOM_TWO_FA_HANDLER {self._name} failed: {type(err).__name__}"
            ) from err
        return validate_code(raw, f"IBEAM_CUSTOM_TWO_FA_HANDLER {self._name}")


class TwoFaHandler:
    """Base class IBeam's custom handlers subclass; importable under IBeam's path."""

    def __init__(self, outputs_dir: str | Path | None = None) -> None:
        self.outputs_dir = outputs_dir

    def get_two_fa_code(self, driver: Any) -> str | None:
        """Return the code for the page the driver shows, or None."""
        raise NotImplementedError

    def __str__(self) -> str:
        return type(self).__name__


def _provide_ibeam_base_class() -> None:
    """Make ``ibeam.src.two_fa_handlers.two_fa_handler`` importable if IBeam is not.

    IBeam's custom handlers import their base class from there; without this
    shim an unchanged IBeam handler would fail to load.
    """
    if "ibeam" in sys.modules or importlib.util.find_spec("ibeam") is not None:
        return
    names = ["ibeam", "ibeam.src", "ibeam.src.two_fa_handlers"]
    for name in names:
        package = types.ModuleType(name)
        package.__path__ = []
        sys.modules[name] = package
    leaf = types.ModuleType("ibeam.src.two_fa_handlers.two_fa_handler")
    leaf.TwoFaHandler = TwoFaHandler
    sys.modules[leaf.__name__] = leaf


def load_custom_handler(config: TwoFactorConfig) -> CustomSource:
    """Load ``module.Class`` from the inputs dir and instantiate it."""
    setting = "IBEAM_CUSTOM_TWO_FA_HANDLER"
    module_name, _, class_name = config.custom_handler.strip().rpartition(".")
    if not module_name or not class_name:
        raise ConfigError(
            f"{setting} must be module.Class (got {config.custom_handler!r}), "
            f"for example {DEFAULT_CUSTOM_HANDLER}"
        )
    if config.inputs_dir is None:
        raise ConfigError(f"{setting} needs IBEAM_INPUTS_DIR to find {module_name}.py")
    path = Path(config.inputs_dir) / (module_name.replace(".", "/") + ".py")
    if not path.is_file():
        raise ConfigError(
            f"{setting}: {path} does not exist; put the handler module in "
            "IBEAM_INPUTS_DIR or change the setting"
        )

    _provide_ibeam_base_class()
    spec = importlib.util.spec_from_file_location(f"ibeam_custom_{module_name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{setting}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ConfigError(
            f"{setting}: loading {path} failed with {type(err).__name__}: {err}"
        ) from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{setting}: {path} has no class {class_name}")
    try:
        handler = cls(outputs_dir=config.outputs_dir)
    except Exception as err:
        raise ConfigError(
            f"{setting}: {class_name}(outputs_dir=...) failed with "
            f"{type(err).__name__}: {err}"
        ) from err
    return CustomSource(handler, config.custom_handler, config.select_target)


def normalise_handler(name: str | None) -> str | None:
    """Return the canonical handler name, None for none, or raise ConfigError."""
    if name is None or not name.strip() or name.strip().upper() == "NONE":
        return None
    canonical = HANDLER_ALIASES.get(name.strip().upper())
    if canonical is None:
        accepted = ", ".join(sorted(HANDLER_ALIASES))
        raise ConfigError(
            f"IBEAM_TWO_FA_HANDLER={name!r} is not known; use one of {accepted}"
        )
    return canonical


def make_second_factor(config: TwoFactorConfig | None) -> SecondFactor | None:
    """Build the configured source, or None when no second factor is set up."""
    if config is None:
        return None
    kind = normalise_handler(config.handler)
    if kind is None:
        return None

    if kind == "TOTP":
        if not config.totp_secret:
            raise ConfigError(
                "IBEAM_TOTP_SECRET (or IBEAM_TOTP_SECRET_FILE) is required when "
                "IBEAM_TWO_FA_HANDLER=TOTP"
            )
        return TotpSource(config.totp_secret, used_steps=USED_TOTP_STEPS)
    if kind == "COMMAND":
        if not config.command:
            raise ConfigError(
                "IBEAM_TWO_FA_COMMAND is required when IBEAM_TWO_FA_HANDLER=COMMAND"
            )
        return CommandSource(config.command, config.request_timeout)
    if kind == "EXTERNAL_REQUEST":
        if not config.request_url:
            raise ConfigError(
                "IBEAM_EXTERNAL_REQUEST_URL is required when "
                "IBEAM_TWO_FA_HANDLER=EXTERNAL_REQUEST"
            )
        return HttpSource(
            config.request_url,
            method=config.request_method,
            timeout=config.request_timeout,
            headers=config.request_headers,
        )
    if kind == "IBKEY_PUSH":
        return PushApproval()
    return load_custom_handler(config)
