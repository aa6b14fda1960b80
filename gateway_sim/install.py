"""Lay out a gateway directory shaped like IBKR's clientportal.gw distribution."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib import resources

from .accounts import DEFAULT_ACCOUNTS_YAML, AccountsError, load_accounts
from .tls import write_default_keystore

RUN_SH = os.path.join("bin", "run.sh")
CONF = os.path.join("root", "conf.yaml")
KEYSTORE = os.path.join("root", "vertx.jks")
ACCOUNTS = os.path.join("sim", "accounts.yaml")
DEMO_INDEX = os.path.join("root", "webapps", "demo", "index.html")


class InstallError(Exception):
    """The target cannot be installed into; the message says how to fix it."""


def install(
    target: str,
    *,
    accounts_file: str | None = None,
    force: bool = False,
    python: str | None = None,
) -> str:
    """Write the layout into target (atomically, via a sibling directory)."""
    target = os.path.abspath(target)
    _check_target(target, force)
    if accounts_file is not None:
        try:
            load_accounts(accounts_file)
        except AccountsError as exc:
            raise InstallError(f"--accounts: {exc}") from exc
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".gateway-sim-", dir=parent)
    try:
        os.chmod(staging, 0o755)
        _populate(staging, accounts_file, python or sys.executable)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_target(target: str, force: bool) -> None:
    if not os.path.exists(target):
        return
    if not os.path.isdir(target):
        raise InstallError(
            f"{target} exists and is not a directory: choose another DIR"
        )
    if not os.listdir(target):
        return
    if not force:
        raise InstallError(
            f"{target} is not empty: pass --force to replace a gateway there"
        )
    if not os.path.exists(os.path.join(target, RUN_SH)):
        raise InstallError(
            f"{target} holds files but no {RUN_SH}: "
            "--force only replaces a gateway directory"
        )


def _asset(name: str) -> bytes:
    return resources.files("gateway_sim.assets").joinpath(name).read_bytes()


def _populate(root: str, accounts_file: str | None, python: str) -> None:
    for sub in ("bin", "root", "sim", os.path.dirname(DEMO_INDEX)):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    script = _asset("run.sh").decode()
    script = script.replace("@PYTHON@", shlex.quote(python))
    script = script.replace("@PYTHONPATH@", _pythonpath_line(python))
    _write(os.path.join(root, RUN_SH), script.encode(), 0o755)
    _write(os.path.join(root, CONF), _asset("conf.yaml"), 0o644)
    _write(os.path.join(root, DEMO_INDEX), _asset("demo.html"), 0o644)
    if accounts_file is not None:
        with open(accounts_file, "rb") as handle:
            _write(os.path.join(root, ACCOUNTS), handle.read(), 0o600)
    else:
        _write(os.path.join(root, ACCOUNTS), DEFAULT_ACCOUNTS_YAML.encode(), 0o600)
    _write(os.path.join(root, KEYSTORE), _default_keystore(), 0o644)


@functools.lru_cache(maxsize=1)
def _default_keystore() -> bytes:
    """One self-signed keystore per process: IBKR ships the same one to everybody."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "vertx.jks")
        write_default_keystore(path)
        with open(path, "rb") as handle:
            return handle.read()


def _write(path: str, data: bytes, mode: int) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


@functools.lru_cache(maxsize=8)
def _pythonpath_line(python: str) -> str:
    """Export PYTHONPATH only when python would not import this package by itself."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import gateway_sim, os; "
        "print(os.path.dirname(os.path.abspath(gateway_sim.__file__)))"
    )
    try:
        found = subprocess.run(
            [python, "-c", probe],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except OSError as exc:
        raise InstallError(f"python {python} cannot be run: {exc.strerror}") from exc
    if found == package_dir:
        return ""
    parent = shlex.quote(os.path.dirname(package_dir))
    return f'export PYTHONPATH={parent}"${{PYTHONPATH:+:$PYTHONPATH}}"\n'
