"""S08: an IB Key push that nobody approves; the push expires (IBKR: after three
minutes, scaled down here) and the simulator counts every push sent."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    running_sim,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

PUSH_USER = {
    "user": "pushy",
    "password": "push-pw",
    "mode": "live",
    "second_factor": "ibkey_push",
    "methods": [],
    "totp_secret": None,
    "account_id": "U7654321",
}
BACKOFF_MAX = 3
SETTINGS = {
    "IBEAM_TWO_FA_HANDLER": "IBKEY_PUSH",
    "IBEAM_TWO_FA_TIMEOUT": "4",
    "IBEAM_MAX_FAILED_AUTH": "3",
    "IBEAM_BACKOFF_MIN": "1",
    "IBEAM_BACKOFF_MAX": str(BACKOFF_MAX),
}


def _agent(sim, tmp_path) -> AgentProcess:
    return AgentProcess(
        sim, tmp_path, env=SETTINGS, account="pushy", password="push-pw"
    )


def test_s08_unanswered_pushes_stop_at_the_budget(tmp_path):
    """S08: each push that times out (the page's expiry, or the agent's own
    IBEAM_TWO_FA_TIMEOUT) spends the failure budget; the next push comes after a
    growing backoff; after the third the agent halts with an alert and /livez
    503, and sends no more pushes however long it runs; a restarted agent finds
    the count on disk and sends none either."""
    with running_sim(tmp_path, accounts=[PUSH_USER], push_expiry_s=2) as sim:
        with _agent(sim, tmp_path) as agent:
            agent.wait_for(
                lambda s: s["failures"]["by_class"].get("SecondFactorFailed"),
                90,
                "the first expired push",
            )
            # From now on the agent's own timeout ends each wait first.
            sim.faults(push_expiry_s=120)
            halted = agent.wait_state("HALTED", timeout=120)
            assert sim.state()["pushes_sent"] == 3
            assert "reset-failures" in halted["alert"]
            assert halted["failures"]["budget"]["spent"] == 3
            assert agent.get("/livez")[0] == 503
            assert agent.get("/readyz")[0] == 503
            time.sleep(2 * BACKOFF_MAX)  # longer than any backoff: nothing more
            assert sim.state()["pushes_sent"] == 3
            code, _ = agent.terminate()
            assert code == 0
            log = agent.log()

        # A restart (by hand, by supervisord, by an orchestrator's probe)
        # does not refill the budget.
        with _agent(sim, tmp_path) as again:
            status = again.wait_state("HALTED", timeout=30)
            assert status["failures"]["budget"]["spent"] == 3
            time.sleep(BACKOFF_MAX)
            assert again.get("/livez")[0] == 503
        state = sim.state()

    assert state["pushes_sent"] == 3 and state["login_successes"] == 0
    assert state["second_factor_failures"] >= 1
    budget = json.loads((tmp_path / "outputs" / "failure-budget.json").read_text())
    assert budget["spent"] == 3
    kinds = [entry["kind"] for entry in budget["history"]]
    assert kinds == ["SecondFactorFailed"] * 3
    assert "notification has expired" in log  # the page's own expiry
    assert "nobody approved the IB Key notification within 4 s" in log
    delays = [
        int(d) for d in re.findall(r"SecondFactorFailed.*next try in (\d+) s", log)
    ]
    assert delays == [1, 2]  # growing; the third failure halts instead
