"""S10: a TOTP check that accepts only the current 30 s step and validates seconds
after the code arrives, with the real agent, Chromium and the simulator.

TOTP steps are real time (30 s), so this row takes a minute or two of waiting.
"""

from __future__ import annotations

import time

import pytest

from tests.scenarios.login_scenarios import (
    TOTP_SECRET,
    agent_for,
    log_times,
    scenario_sim,
)
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

STEP = 30
# Seconds left in the step when the code page should appear in the aligned login:
# under the agent's 10 s threshold, above the simulator's 3 s latency.
AIM_LEFT = 6.0


def _wait_for_step_position(target: float, after_step: int, lead: float) -> None:
    """Sleep until lead seconds before (now % STEP) == target, past after_step."""
    now = time.time()
    at = (int(now + lead) // STEP) * STEP + target - lead
    while at <= now or int(at + lead) // STEP <= after_step:
        at += STEP
    time.sleep(at - now)


def test_s10_totp_current_step_only_with_latency(tmp_path):
    """S10: a refused code is retried once with the next step's code, then counted
    as a failure (the failure budget); the next attempt never resends a code of a
    step already used and logs in; and a code page met in the last seconds of a
    step gets the next step's code, so the slow, strict check accepts it at the
    first try."""
    faults = {"totp_window_steps": 0, "totp_latency_ms": 3000, "reject_next_codes": 2}
    with scenario_sim(tmp_path, **faults) as sim:
        agent = agent_for(
            sim,
            tmp_path,
            "totpuser",
            IBEAM_TWO_FA_HANDLER="TOTP",
            IBEAM_TOTP_SECRET=TOTP_SECRET,
            IBEAM_BACKOFF_MIN=1,
            IBEAM_BACKOFF_MAX=2,
        )
        with agent:
            # 1. Two refusals in one attempt: one retry, then a counted failure.
            failed = agent.wait_for(
                lambda s: s["failures"]["by_class"].get("SecondFactorFailed"),
                120,
                "a counted second-factor failure",
            )
            state = sim.state()
            assert failed["failures"]["budget"]["spent"] == 1
            assert state["codes_received"] == 2 and state["login_attempts"] == 1
            assert state["second_factor_failures"] == 2

            # 2. The next attempt waits for a step it has not used, and succeeds.
            ready = agent.wait_ready(120)
            assert ready["failures"]["budget"]["spent"] == 0
            state = sim.state()
            assert state["codes_received"] == 3 and state["login_successes"] == 1
            last_step = int(time.time()) // STEP

            # 3. A login whose code page comes near the end of a step.
            log = agent.log()
            started = log_times(log, "-> LOGGING_IN")[-1]
            code_page = log_times(log, "-> code_input")[-1]
            lead = code_page - started + 0.5  # + half an interval to notice
            _wait_for_step_position(STEP - AIM_LEFT, last_step, lead)
            sim.expire()
            agent.wait_for(
                lambda s: s["ready"] and sim.state()["login_successes"] == 2,
                120,
                "the aligned login",
            )
            aligned = agent.log()[len(log) :]
        state = sim.state()

    assert state["codes_received"] == 4 and state["second_factor_failures"] == 2
    assert state["login_successes"] == 2
    assert "TOTP step ends in" in aligned, aligned[-3000:]
    full = log + aligned
    assert "the TOTP code was refused; one more try with the next code" in full
    assert TOTP_SECRET not in full
