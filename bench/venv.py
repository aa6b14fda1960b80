"""IBeam 0.5.12 from PyPI in a virtual environment of its own, cached.

The venv lives in `.cache/ibeam-0.5.12` at the repository root, the place the
simulator's IBeam compatibility test uses too, so that one download serves
both.  Two lock files are shared with that test: `ibeam-0.5.12.install.lock`
while the venv is built, `ibeam-0.5.12.lock` while an IBeam runs (IBeam's
Chromium always takes DevTools port 9222, so two IBeams at once would drive
each other's browser).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench import IBEAM_VERSION, REPO

log = logging.getLogger(__name__)

DEFAULT_VENV = REPO / ".cache" / f"ibeam-{IBEAM_VERSION}"
RUN_LOCK = DEFAULT_VENV.parent / f"ibeam-{IBEAM_VERSION}.lock"
DEVTOOLS_PORT = 9222
PORT_WAIT = 180.0
PIP_TIMEOUT = 600
PROBE = "import ibeam, selenium; print(ibeam.__version__)"


class VenvError(RuntimeError):
    """IBeam's virtual environment cannot be built or does not work."""


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path) -> str | None:
    """The ibeam version importable in venv, or None."""
    python = python_of(venv)
    if not python.exists():
        return None
    try:
        done = subprocess.run(
            [str(python), "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_ibeam(venv: Path = DEFAULT_VENV) -> Path:
    """Return the venv's python, building the venv first when needed."""
    if installed_version(venv) == IBEAM_VERSION:
        return python_of(venv)
    with locked(venv.parent / f"{venv.name}.install.lock"):
        if installed_version(venv) != IBEAM_VERSION:
            _build(venv)
            # The marker the simulator's IBeam test looks for before installing.
            (venv / ".installed").write_text(IBEAM_VERSION)
    found = installed_version(venv)
    if found != IBEAM_VERSION:
        raise VenvError(
            f"{venv} does not import ibeam {IBEAM_VERSION} (found {found}); "
            f"remove the directory and run again"
        )
    return python_of(venv)


def _build(venv: Path) -> None:
    log.info("installing ibeam==%s into %s (PyPI)", IBEAM_VERSION, venv)
    steps = []
    if not python_of(venv).exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    steps.append(
        [
            str(python_of(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"ibeam=={IBEAM_VERSION}",
        ]
    )
    for command in steps:
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VenvError(f"{command[0]} failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise VenvError(
                f"building {venv} failed ({' '.join(command[:4])}): " + " | ".join(tail)
            )


@contextlib.contextmanager
def ibeam_turn() -> Iterator[None]:
    """Take the machine-wide turn to run IBeam, once port 9222 is free."""
    with locked(RUN_LOCK):
        deadline = time.monotonic() + PORT_WAIT
        while _port_taken(DEVTOOLS_PORT):
            if time.monotonic() > deadline:
                raise VenvError(
                    f"port {DEVTOOLS_PORT} stays taken: IBeam's Chromium would "
                    "attach to that browser; stop whatever holds it"
                )
            time.sleep(1)
        yield


def _port_taken(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            if probe.connect_ex((host, port)) == 0:
                return True
    return False
