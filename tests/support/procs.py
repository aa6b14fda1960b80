"""Find processes a test left behind (browsers, drivers, displays, gateways).

Several test runs share this machine, so "a chromium process exists" proves
nothing. A test marks its own children instead: `tracking()` puts a unique
token in the environment, every process started from then on inherits it, and
`leftovers()` only reports processes that carry the token, were started after
the snapshot and match one of the names.

    with tracking() as snap:
        run_the_browser_test()
    assert_none_left(snap)        # waits a little, kills, then fails on leftovers
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psutil

BROWSER_NAMES = ("chromium", "chrome", "chromedriver", "Xvfb")
TOKEN_VAR = "TEST_PROCS_TOKEN"


@dataclass(frozen=True)
class Snapshot:
    """The processes alive at one moment, and the token given to later ones."""

    taken_at: float
    pids: frozenset[int]
    token: str | None = None


def snapshot(token: str | None = None) -> Snapshot:
    """Record every process alive now (psutil create times are epoch seconds)."""
    return Snapshot(
        taken_at=time.time() - 0.01, pids=frozenset(psutil.pids()), token=token
    )


@contextlib.contextmanager
def tracking(var: str = TOKEN_VAR) -> Iterator[Snapshot]:
    """Give processes started inside the block a unique environment token."""
    token = uuid.uuid4().hex
    previous = os.environ.get(var)
    os.environ[var] = token
    try:
        yield snapshot(token=f"{var}={token}")
    finally:
        if previous is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = previous


def _names_of(process: psutil.Process) -> list[str]:
    names = [process.name()]
    with contextlib.suppress(psutil.Error, IndexError):
        names.append(os.path.basename(process.cmdline()[0]))
    return names


def _matches(process: psutil.Process, names: Iterable[str]) -> bool:
    try:
        seen = _names_of(process)
    except psutil.Error:
        return False
    return any(candidate.startswith(name) for candidate in seen for name in names)


def _carries(process: psutil.Process, token: str) -> bool:
    var, _, value = token.partition("=")
    try:
        return process.environ().get(var) == value
    except psutil.Error:
        return False


def leftovers(
    since: Snapshot, names: Iterable[str] = BROWSER_NAMES
) -> list[psutil.Process]:
    """Processes named like names, started after since (and carrying its token)."""
    names = tuple(names)
    found = []
    for process in psutil.process_iter():
        if process.pid in since.pids or process.pid == os.getpid():
            continue
        try:
            if process.create_time() < since.taken_at:
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if not _matches(process, names):
            continue
        if since.token is not None and not _carries(process, since.token):
            continue
        found.append(process)
    return found


def matching(fragment: str) -> list[psutil.Process]:
    """Live processes whose joined command line contains fragment."""
    found = []
    for process in psutil.process_iter():
        try:
            if fragment in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def kill(processes: Iterable[psutil.Process], timeout: float = 5.0) -> None:
    """SIGKILL each process and wait for it to go."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=timeout)


def describe(processes: Iterable[psutil.Process]) -> str:
    """One line per process: pid, name, start of the command line."""
    lines = []
    for process in processes:
        try:
            command = " ".join(process.cmdline())[:120]
            lines.append(f"{process.pid} {process.name()} {command}")
        except psutil.Error:
            lines.append(f"{process.pid} (gone)")
    return "\n".join(lines)


def assert_none_left(
    since: Snapshot, names: Iterable[str] = BROWSER_NAMES, grace: float = 5.0
) -> None:
    """Fail if matching processes outlive grace seconds; kill them either way."""
    deadline = time.monotonic() + grace
    left = leftovers(since, names)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftovers(since, names)
    if left:
        report = describe(left)
        kill(left)
        raise AssertionError(f"processes left behind:\n{report}")
