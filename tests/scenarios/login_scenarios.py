"""Shared pieces of the login-side scenario tests (S04-S15); no tests here.

Every scenario runs the real agent (``python -m ibeam_agents``) against a real
simulator started by the harness, and the agent logs in with real Chromium
under an Xvfb it starts itself.  ``scenario_sim`` installs the simulator with
the accounts of the browser login tests; ``agent_for`` points an agent at it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway_sim.harness import SimGateway
from tests.e2e.test_agent_login_kit import ACCOUNTS, PASSWORDS, TOTP_SECRET
from tests.support.agent import AgentProcess, kill_gateways
from tests.support.needs import require_binaries

__all__ = [
    "ACCOUNTS",
    "PASSWORDS",
    "TOTP_SECRET",
    "agent_for",
    "log_times",
    "scenario_sim",
    "secrets_absent",
]

# Fast enough for scenarios that do not care about the login's pace.
FAST_FAULTS = {"auth_delay_ms": 300}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@contextmanager
def scenario_sim(tmp_path: Path, **faults: Any) -> Iterator[SimGateway]:
    """A started simulator with the test accounts; stopped (with strays) after."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    knobs = dict(FAST_FAULTS)
    knobs.update(faults)
    sim = SimGateway(tmp_path / "gw", accounts=ACCOUNTS, faults=knobs)
    sim.install().start()
    try:
        yield sim
    finally:
        sim.stop()
        kill_gateways(sim.root)


def agent_for(
    sim: SimGateway, tmp_path: Path, user: str, *, password: str | None = None, **env
) -> AgentProcess:
    """An agent (not started) for one of the test accounts; env adds settings."""
    return AgentProcess(
        sim,
        tmp_path / "agent",
        account=user,
        password=PASSWORDS[user] if password is None else password,
        env={key: str(value) for key, value in env.items()},
    )


def log_times(text: str, needle: str) -> list[float]:
    """Epoch seconds of each agent log line containing needle."""
    times = []
    for line in text.splitlines():
        match = LOG_TIME.match(line)
        if match and needle in line:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


def secrets_absent(paths: list[Path], *secrets: str) -> None:
    """Fail if any secret appears in any of the files."""
    for path in paths:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret appears in {path}"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll predicate until it returns something true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
