"""Fixtures for the simulator's unit tests: a simulator on a hand-driven clock."""

from __future__ import annotations

import pytest

from gateway_sim.accounts import parse_accounts
from gateway_sim.session import Simulator

SECRET = "JBSWY3DPEHPK3PXP"
# 2026-03-03 12:00:00 America/New_York (a Tuesday), as an epoch time.
NOON_TUESDAY = 1772557200.0


class Clock:
    """Wall and monotonic time that only move when told to."""

    def __init__(self, wall: float = NOON_TUESDAY):
        self.wall_time = wall
        self.mono_time = 1000.0
        self.slept: list[float] = []

    def wall(self) -> float:
        return self.wall_time

    def mono(self) -> float:
        return self.mono_time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def advance(self, seconds: float) -> None:
        self.wall_time += seconds
        self.mono_time += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_sim(clock):
    """Build a Simulator on the fake clock with the given account dicts."""

    def make(*accounts: dict, auth_delay_ms: int = 3000) -> Simulator:
        if not accounts:
            accounts = ({"user": "demo", "password": "demo"},)
        return Simulator(
            parse_accounts(list(accounts)),
            auth_delay_ms=auth_delay_ms,
            wall=clock.wall,
            mono=clock.mono,
            sleep=clock.sleep,
        )

    return make
