"""S21: at Sunday 01:00 America/New_York IBKR ends the session and refuses
reauthentication until a full login; the IB Key push is approved only on the
second try.  The simulator's clock is moved so that Sunday 01:00 comes a few
seconds into the test."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    log_times,
    metric,
    running_sim,
    wait_until,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

NEW_YORK = ZoneInfo("America/New_York")
PUSH_USER = {
    "user": "pushy",
    "password": "push-pw",
    "mode": "live",
    "second_factor": "ibkey_push",
    "methods": [],
    "totp_secret": None,
    "account_id": "U7654321",
}
SETTINGS = {
    "IBEAM_TWO_FA_HANDLER": "IBKEY_PUSH",
    "IBEAM_TWO_FA_TIMEOUT": "10",
    "IBEAM_BACKOFF_MIN": "2",
}
LEAD = 4.0  # seconds from setting the clock to the Sunday reset


def _offset_to_sunday_reset(lead: float) -> float:
    """clock_offset_s that puts the simulator `lead` seconds before Sunday 01:00."""
    now = datetime.now(NEW_YORK)
    sunday = now.date() + timedelta(days=(6 - now.weekday()) % 7 or 7)
    reset = datetime(sunday.year, sunday.month, sunday.day, 1, 0, tzinfo=NEW_YORK)
    return reset.timestamp() - lead - time.time()


def test_s21_sunday_reset_recovers_with_one_login_sequence(tmp_path):
    """S21: the Sunday reset ends the session (reauthenticate is refused until
    a full login); the agent sees no session within an interval and runs one
    login sequence: the first push expires (a counted failure), the retry comes
    after the planned backoff and its push is approved, and the agent is ready
    again.  Nothing waits for a daily timer or restarts the gateway."""
    faults = {"push_expiry_s": 4, "push_auto_approve": {"on_push": 1, "after_s": 0.5}}
    with running_sim(tmp_path, accounts=[PUSH_USER], **faults) as sim:
        with AgentProcess(
            sim, tmp_path, env=SETTINGS, account="pushy", password="push-pw"
        ) as agent:
            agent.wait_ready(90)
            before = sim.state()
            assert before["pushes_sent"] == 1 and before["sunday_resets"] == 0

            # Only the second push after the reset (the third in all) is approved.
            sim.faults(
                clock_offset_s=_offset_to_sunday_reset(LEAD),
                push_auto_approve={"on_push": 3, "after_s": 1},
            )
            wait_until(lambda: sim.state()["sunday_resets"], LEAD + 5, "the reset")
            reset_at = time.time()
            state = sim.state()
            assert not state["sso"] and state["reauth_blocked"]
            clock = datetime.fromisoformat(state["clock"])
            assert (clock.weekday(), clock.hour) == (6, 1)  # Sunday, 01:00 New York
            agent.wait_for(lambda s: not s["ready"], 5, "not ready")
            status = agent.wait_ready(90)
            state = sim.state()
            failed = metric(agent, 'ibeam_logins_total{outcome="SecondFactorFailed"}')
            logins = metric(agent, 'ibeam_logins_total{outcome="succeeded"}')
            restarts = sum(
                metric(agent, f'ibeam_gateway_restarts_total{{reason="{reason}"}}')
                for reason in ("recovery", "transient", "planned", "memory")
            )
            log = agent.log()

    assert state["sunday_resets"] == 1 and not state["reauth_blocked"]
    assert state["pushes_sent"] == 3 and state["login_successes"] == 2
    assert state["reauthentications"] == before["reauthentications"]
    assert failed == 1 and logins == 2 and restarts == 0
    assert status["failures"]["budget"]["spent"] == 0  # refilled by the success
    lost = log_times(log, "READY -> LOGGING_IN")
    assert len(lost) == 1 and lost[0] - reset_at <= 2.0
    assert len(log_times(log, "-> LOGGING_IN")) == 3  # start, the try, the retry
    # The retry came at the planned interval, not at some daily time.
    assert re.search(r"SecondFactorFailed.*next try in 2 s", log)
    retry = log_times(log, "BACKING_OFF -> CHECKING")
    failure = log_times(log, "LOGGING_IN -> BACKING_OFF")
    assert len(retry) == 1 and 1.5 <= retry[0] - failure[0] <= 3.5
