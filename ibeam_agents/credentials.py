"""Credentials for the login page: where they come from and how they are kept.

A secret comes from its variable (``IBEAM_PASSWORD``), from a file named by its
``_FILE`` twin (Docker and Kubernetes secrets), or, when neither is set and stdin
is a terminal, from a hidden prompt.  With ``IBEAM_KEY`` the password is a
Fernet token and is decrypted here.  Values are taken byte for byte: docker's
``--env-file`` keeps quotes as part of the value, so a value wrapped in quotes,
or one with white space at either end, gets a warning (never showing the value)
but is used as it is.

Once read from this process's own environment, secret values are removed from
it, so that no program the agent starts later (Chromium, chromedriver, Xvfb, a
second-factor command) inherits them.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from ibeam_agents import logs
from ibeam_agents.errors import ConfigError, MissingCredentialError

log = logging.getLogger(__name__)

_warned_quotes: set[str] = set()

#: variables whose value is a secret (their _FILE twins only hold a path)
SECRET_VARIABLES = (
    "IBEAM_ACCOUNT",
    "IBEAM_PASSWORD",
    "IBEAM_KEY",
    "IBEAM_TOTP_SECRET",
    "IBEAM_PYOTP_SECRET",
    "IBEAM_EXTERNAL_REQUEST_URL",
    "IBEAM_EXTERNAL_REQUEST_HEADERS",
    "IBEAM_KEYSTORE_PASSWORD",
)


@dataclass(frozen=True)
class Credentials:
    """A user name and the plain password to type; the repr never shows either."""

    account: str = field(repr=False)
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return "Credentials(account='***', password='***')"


def _strip_line_end(value: str) -> str:
    """Drop the line end an editor or `echo` leaves; keep every other byte."""
    return value.rstrip("\r\n")


def _warn_if_quoted(name: str, value: str) -> None:
    """Warn once per variable when a value looks wrapped in quotes or padded (S12)."""
    quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"
    padded = value != value.strip()
    if not (quoted or padded) or name in _warned_quotes:
        return
    _warned_quotes.add(name)
    if quoted:
        log.warning(
            "%s starts and ends with a quote; env files and secret files are read "
            "literally, so the quotes are part of the value. Remove them unless "
            "they belong to it (docs/settings.md, Env files and quoting).",
            name,
        )
    else:
        log.warning(
            "%s starts or ends with white space, which is kept as part of the "
            "value; remove it unless it belongs there.",
            name,
        )


def scrub_environment(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove secret values from environ (this process's environment by default).

    Child processes inherit the environment; the agent reads its secrets once
    and keeps them in memory, so none of its children needs them.  Returns the
    names removed.  /proc/<pid>/environ of the agent itself still shows what it
    was started with: secret files (``_FILE``) avoid that.
    """
    environ = os.environ if environ is None else environ
    removed = [name for name in SECRET_VARIABLES if name in environ]
    for name in removed:
        del environ[name]
    return removed


def read_secret(
    environ: Mapping[str, str], name: str, *, file_source: bool = False
) -> str | None:
    """Return the value of secret `name` from the variable or its _FILE twin.

    With `file_source` (IBeam's ``IBEAM_SECRETS_SOURCE=fs``) the variable itself
    holds a path.  Setting both the variable and the twin is an error.
    """
    file_name = f"{name}_FILE"
    direct = environ.get(name)
    path = environ.get(file_name)
    if direct and path:
        raise ConfigError(f"{name} and {file_name} are both set; keep only one of them")
    if direct and file_source:
        value = _read_fs_source(name, direct)
    elif path:
        value = _read_secret_file(file_name, path)
    elif direct:
        value = _strip_line_end(direct)
    else:
        return None
    # named after the secret, not its file: the appliance's entrypoint moves a
    # secret given in an env file into a file of its own (docs/appliance.md)
    _warn_if_quoted(name, value)
    logs.register_secret(value)
    return value


def _read_secret_file(setting: str, path: str) -> str:
    """Read a secret file, naming the setting (never the content) on failure."""
    try:
        value = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{setting} names {path!r}, which cannot be read ({exc.strerror}); "
            "point it at a readable file"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{setting} names {path!r}, which is not UTF-8 text; save it as UTF-8"
        ) from exc
    value = _strip_line_end(value)
    if not value:
        raise ConfigError(f"{setting} names {path!r}, which is empty; put the value in")
    return value


def _read_fs_source(name: str, path: str) -> str:
    """Read the file a variable names under IBEAM_SECRETS_SOURCE=fs.

    The variable may well hold the secret itself (the usual slip when switching
    to fs), so no message shows its value, and the OSError, which carries it as
    the file name, is not chained.
    """
    rule = f"{name} must hold the path of a readable file (IBEAM_SECRETS_SOURCE=fs)"
    fix = (
        "unset IBEAM_SECRETS_SOURCE to give values directly, "
        f"or name the file with {name}_FILE"
    )
    try:
        value = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{rule}, and its value is not one ({exc.strerror}); {fix}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{name} names a file that is not UTF-8 text (IBEAM_SECRETS_SOURCE=fs); "
            "save it as UTF-8"
        ) from None
    value = _strip_line_end(value)
    if not value:
        raise ConfigError(
            f"{name} names an empty file (IBEAM_SECRETS_SOURCE=fs); put the value in"
        )
    return value


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def _ask(
    name: str,
    label: str,
    prompt: Callable[[str], str] | None,
    interactive: bool | None,
) -> str:
    """Prompt for a missing secret, or fail when there is nobody to ask."""
    if interactive is None:
        interactive = _stdin_is_terminal()
    if not interactive:
        raise MissingCredentialError(
            f"{name} is not set and there is no terminal to ask on; "
            f"set {name} or {name}_FILE"
        )
    ask = prompt or getpass.getpass
    try:
        value = ask(f"{label}: ")
    except (EOFError, KeyboardInterrupt) as exc:
        raise MissingCredentialError(f"{name} was not entered; set {name}") from exc
    if not value:
        raise MissingCredentialError(f"{name} was left empty; set {name}")
    logs.register_secret(value)
    return value


def decrypt_password(token: str, key: str) -> str:
    """Decrypt a Fernet token made by `encrypt_password` with key."""
    from cryptography.fernet import InvalidToken

    fernet = fernet_for(key, "IBEAM_KEY", "make one with `ibeam encrypt-password`")
    try:
        plain = fernet.decrypt(token.encode("utf-8")).decode("utf-8")
    except (InvalidToken, UnicodeDecodeError) as exc:
        raise ConfigError(
            "IBEAM_PASSWORD is not a token made with IBEAM_KEY; "
            "run `ibeam encrypt-password` and set both values it prints"
        ) from exc
    logs.register_secret(plain)
    return plain


def fernet_for(key: str, origin: str, fix: str):
    """A Fernet for key; ConfigError naming origin, and the fix, if it is none."""
    from cryptography.fernet import Fernet

    try:
        return Fernet(key.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{origin} is not a Fernet key (32 url-safe base64-encoded bytes); {fix}"
        ) from exc


def encrypt_password(password: str, key: str | None = None) -> tuple[str, str]:
    """Return (token, key): the password encrypted with key (a new one if None)."""
    from cryptography.fernet import Fernet

    key = key or Fernet.generate_key().decode("ascii")
    fernet = fernet_for(key, "the key", "omit it to get a new one")
    return fernet.encrypt(password.encode("utf-8")).decode("ascii"), key


def load_credentials(
    environ: Mapping[str, str] | None = None,
    *,
    prompt: Callable[[str], str] | None = None,
    interactive: bool | None = None,
) -> Credentials:
    """Read account and password from the environment, files or a prompt.

    interactive: None means "when stdin is a terminal".  When reading this
    process's own environment, the secret variables are removed from it
    afterwards (`scrub_environment`); load the settings first.
    """
    own = environ is None or environ is os.environ
    environ = os.environ if environ is None else environ
    file_source = environ.get("IBEAM_SECRETS_SOURCE", "env").strip().lower() == "fs"
    account = read_secret(environ, "IBEAM_ACCOUNT", file_source=file_source)
    password = read_secret(environ, "IBEAM_PASSWORD", file_source=file_source)
    key = read_secret(environ, "IBEAM_KEY", file_source=file_source)
    if account is None:
        account = _ask("IBEAM_ACCOUNT", "IBKR user name", prompt, interactive)
    if password is None:
        if key:
            raise MissingCredentialError(
                "IBEAM_KEY is set but IBEAM_PASSWORD is not; set the token "
                "`ibeam encrypt-password` printed as IBEAM_PASSWORD"
            )
        password = _ask("IBEAM_PASSWORD", "IBKR password", prompt, interactive)
    elif key:
        password = decrypt_password(password, key)
    if own:
        scrub_environment()
    return Credentials(account=account, password=password)
