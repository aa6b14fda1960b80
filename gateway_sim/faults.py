"""Fault knobs: their defaults and validation (docs/architecture.md, "Fault knobs")."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

LOGIN_PAGES = ("current", "legacy", "names_only", "two_step", "unrecognised")
CODE_VARIANTS = ("silver", "bronze", "gold", "temp", "platinum")
NEVER_AUTH = ("off", "until_relogin", "always")
EXPIRE_STYLES = ("no_session", "401")
ERROR_SCOPES = ("api", "all")


class FaultError(ValueError):
    """A knob name or value is not valid; the message names the knob."""


def _choice(*choices: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise FaultError(
                f"{name} must be one of {', '.join(choices)}: got {value!r}"
            )
        return value

    return check


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FaultError(f"{name} must be true or false: got {value!r}")
    return value


def _number(minimum: float | None = 0, *, nullable: bool = False, positive=False):
    def check(name: str, value: Any) -> Any:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FaultError(f"{name} must be a number: got {value!r}")
        if minimum is not None and value < minimum:
            raise FaultError(f"{name} must be at least {minimum}: got {value!r}")
        if positive and value <= 0:
            raise FaultError(f"{name} must be greater than 0: got {value!r}")
        return value

    return check


def _integer(minimum: int = 0, *, nullable: bool = False, maximum: int | None = None):
    def check(name: str, value: Any) -> Any:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise FaultError(f"{name} must be an integer: got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise FaultError(f"{name} must be at least {minimum}{upper}: got {value!r}")
        return value

    return check


def _auto_approve(name: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"on_push", "after_s"}:
        raise FaultError(
            f'{name} must be null or {{"on_push": N, "after_s": S}}: got {value!r}'
        )
    _integer(1)(f"{name}.on_push", value["on_push"])
    _number(0)(f"{name}.after_s", value["after_s"])
    return dict(value)


def _content_type(name: str, value: Any) -> str:
    if not isinstance(value, str) or "/" not in value or "\n" in value:
        raise FaultError(
            f"{name} must be a media type such as text/plain: got {value!r}"
        )
    return value


# name -> (default, validator)
KNOBS: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "login_page": ("current", _choice(*LOGIN_PAGES)),
    "ibkey_promo": (False, _flag),
    "ibkey_promo_auto_continue_s": (120, _number(0)),
    "code_input_variant": ("silver", _choice(*CODE_VARIANTS)),
    "push_expiry_s": (180, _number(0, positive=True)),
    "push_auto_approve": (None, _auto_approve),
    "totp_window_steps": (1, _integer(0, maximum=10)),
    "totp_latency_ms": (0, _integer(0)),
    "lockout_after": (5, _integer(1)),
    "spurious_bad_password": (0, _integer(0)),
    "reject_next_codes": (0, _integer(0)),
    "auth_delay_ms": (None, _integer(0, nullable=True)),
    "never_authenticate": ("off", _choice(*NEVER_AUTH)),
    "reauth_refused": (False, _flag),
    "error_status": (503, _integer(400, maximum=599)),
    "error_for_s": (0, _number(0)),
    "error_scope": ("api", _choice(*ERROR_SCOPES)),
    "hang_for_s": (0, _number(0)),
    "sso_ttl_s": (600, _number(0, positive=True)),
    "idle_timeout_s": (360, _number(0, positive=True)),
    "session_lifetime_s": (None, _number(0, nullable=True, positive=True)),
    "nightly_reset": (True, _flag),
    "clock_offset_s": (0, _number(None)),
    "memory_growth_mb_per_min": (0, _number(0)),
    "memory_limit_mb": (None, _number(0, nullable=True, positive=True)),
    "pacing": (True, _flag),
    # Knobs added by the simulator (documented in docs/simulator.md).
    "pacing_burst": (5, _integer(1)),
    "expire_style": ("401", _choice(*EXPIRE_STYLES)),
    "success_content_type": ("text/plain", _content_type),
    "collission": (False, _flag),
}


def defaults() -> dict[str, Any]:
    """A fresh copy of every knob at its default."""
    return {name: copy.deepcopy(default) for name, (default, _) in KNOBS.items()}


def validate(changes: Any) -> dict[str, Any]:
    """Check a partial knob object; return it normalised or raise FaultError."""
    if not isinstance(changes, dict):
        raise FaultError(f"faults must be a JSON object of knobs: got {changes!r}")
    checked = {}
    for name, value in changes.items():
        if name not in KNOBS:
            raise FaultError(
                f"{name} is not a fault knob: see docs/simulator.md for the list"
            )
        checked[name] = KNOBS[name][1](name, value)
    return checked
