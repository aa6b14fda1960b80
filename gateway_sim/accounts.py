"""Accounts the simulator accepts: user, password, mode, second factor."""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

MODES = ("live", "paper")
SECOND_FACTORS = ("none", "totp", "sms", "ibkey_push", "picker")
PICKER_METHODS = ("ibkey_push", "totp", "sms")
KEYS = ("user", "password", "mode", "second_factor", "methods", "totp_secret")
KEYS += ("account_id", "user_id")

DEFAULT_ACCOUNTS_YAML = """\
# Accounts the gateway simulator accepts (gateway_sim, docs/simulator.md).
#
# user, password    what the login page must receive, byte for byte
# mode              live | paper: the Live/Paper switch must match it
# second_factor     none | totp | sms | ibkey_push | picker
# methods           for picker: the methods offered, e.g. [ibkey_push, totp, sms]
# totp_secret       base32 secret, for totp (and picker offering totp)
# account_id        the brokerage account shown by /iserver/accounts
accounts:
  - user: demo
    password: demo
    mode: live
    second_factor: none
    methods: []
    totp_secret: null
    account_id: U1234567
  # - user: paperdemo
  #   password: paperdemo
  #   mode: paper
  #   second_factor: none
  #   account_id: DU1234567
  # - user: totpdemo
  #   password: totpdemo
  #   mode: live
  #   second_factor: totp
  #   totp_secret: JBSWY3DPEHPK3PXP
  #   account_id: U7654321
  # - user: pushdemo
  #   password: pushdemo
  #   mode: live
  #   second_factor: ibkey_push
  # - user: pickerdemo
  #   password: pickerdemo
  #   mode: live
  #   second_factor: picker
  #   methods: [ibkey_push, totp, sms]
  #   totp_secret: JBSWY3DPEHPK3PXP
"""


class AccountsError(ValueError):
    """The accounts file or list is not valid; the message names the field."""


@dataclass(frozen=True)
class Account:
    """One user the simulated IBKR login accepts."""

    user: str
    password: str = field(repr=False)
    mode: str = "live"
    second_factor: str = "none"
    methods: tuple[str, ...] = ()
    totp_secret: str | None = field(default=None, repr=False)
    account_id: str = "U1234567"
    user_id: int = 100000001

    @property
    def paper(self) -> bool:
        return self.mode == "paper"

    def offered_methods(self) -> tuple[str, ...]:
        """Second-factor methods the account can use, in picker order."""
        if self.second_factor == "picker":
            return self.methods
        if self.second_factor == "none":
            return ()
        return (self.second_factor,)

    def totp_key(self) -> bytes:
        """The TOTP secret as raw bytes."""
        secret = (self.totp_secret or "").replace(" ", "").upper()
        return base64.b32decode(secret + "=" * (-len(secret) % 8))

    def to_json(self) -> dict[str, Any]:
        """The account without its secrets, for the control API."""
        data = asdict(self)
        data["methods"] = list(self.methods)
        data["password"] = "***"
        data["totp_secret"] = "***" if self.totp_secret else None
        return data


def parse_accounts(data: Any, source: str = "accounts") -> list[Account]:
    """Validate {"accounts": [...]} (or a bare list) into Account objects."""
    if isinstance(data, dict) and set(data) == {"accounts"}:
        data = data["accounts"]
    if not isinstance(data, list) or not data:
        raise AccountsError(f"{source}: expected a non-empty list under 'accounts'")
    accounts = [
        _parse_one(item, f"{source}: accounts[{i}]", i) for i, item in enumerate(data)
    ]
    users = [account.user for account in accounts]
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise AccountsError(f"{source}: user {duplicates[0]!r} appears more than once")
    return accounts


def load_accounts(path: str) -> list[Account]:
    """Read and validate an accounts YAML file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise AccountsError(
            f"accounts file {path}: cannot be read ({exc.strerror})"
        ) from exc
    except yaml.YAMLError as exc:
        raise AccountsError(f"accounts file {path}: not valid YAML ({exc})") from exc
    return parse_accounts(data, f"accounts file {path}")


def _parse_one(item: Any, where: str, index: int) -> Account:
    if not isinstance(item, dict):
        raise AccountsError(f"{where} must be a mapping with user and password")
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise AccountsError(
            f"{where}.{unknown[0]} is not a known field: use {', '.join(KEYS)}"
        )
    user = _text(item, "user", where)
    password = _text(item, "password", where)
    mode = item.get("mode") or "live"
    if mode not in MODES:
        raise AccountsError(f"{where}.mode must be live or paper: got {mode!r}")
    second = item.get("second_factor") or "none"
    if second not in SECOND_FACTORS:
        choices = ", ".join(SECOND_FACTORS)
        raise AccountsError(
            f"{where}.second_factor must be one of {choices}: got {second!r}"
        )
    methods = _methods(item.get("methods"), second, where)
    secret = item.get("totp_secret")
    needs_secret = second == "totp" or "totp" in methods
    if needs_secret:
        _check_secret(secret, where)
    default_id = f"{'DU' if mode == 'paper' else 'U'}{1234567 + index}"
    account_id = str(item.get("account_id") or default_id)
    user_id = item.get("user_id", 100000001 + zlib.crc32(user.encode()) % 800000000)
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise AccountsError(f"{where}.user_id must be an integer: got {user_id!r}")
    return Account(
        user=user,
        password=password,
        mode=mode,
        second_factor=second,
        methods=methods,
        totp_secret=secret if needs_secret or secret else None,
        account_id=account_id,
        user_id=user_id,
    )


def _text(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or value == "":
        raise AccountsError(
            f"{where}.{key} must be a non-empty string (quote it in YAML)"
        )
    return value


def _methods(value: Any, second: str, where: str) -> tuple[str, ...]:
    methods = value or []
    if not isinstance(methods, list) or any(m not in PICKER_METHODS for m in methods):
        choices = ", ".join(PICKER_METHODS)
        raise AccountsError(f"{where}.methods must be a list drawn from {choices}")
    if second == "picker" and not methods:
        raise AccountsError(f"{where}.methods must list at least one method for picker")
    return tuple(methods) if second == "picker" else ()


def _check_secret(secret: Any, where: str) -> None:
    if not isinstance(secret, str) or not secret.strip():
        raise AccountsError(f"{where}.totp_secret is required (base32) for totp")
    cleaned = secret.replace(" ", "").upper()
    try:
        base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError) as exc:
        raise AccountsError(f"{where}.totp_secret must be base32 (A-Z, 2-7)") from exc


def default_accounts() -> list[Account]:
    """The demo account (demo/demo, live, no second factor)."""
    return parse_accounts(yaml.safe_load(DEFAULT_ACCOUNTS_YAML), "default accounts")
