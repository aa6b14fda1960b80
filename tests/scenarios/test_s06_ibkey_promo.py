"""S06: the IB Key promotion after the password, with the real agent and Chromium."""

from __future__ import annotations

import pytest

from tests.scenarios.login_scenarios import agent_for, scenario_sim
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


@pytest.mark.parametrize("page", ["current", "legacy"])
def test_s06_ibkey_promotion_skipped_at_once(tmp_path, page):
    """S06: after a correct password the IB Key promotion (which would move on by
    itself after two minutes) is recognised as a known step and its skip control
    is clicked at once, on the current page and on the older one."""
    faults = {
        "login_page": page,
        "ibkey_promo": True,
        "ibkey_promo_auto_continue_s": 120,
    }
    with scenario_sim(tmp_path, **faults) as sim:
        with agent_for(sim, tmp_path, "liveuser") as agent:
            agent.wait_ready(90)  # well under the promotion's own 120 s
            log = agent.log()
        state = sim.state()
    assert state["promos_shown"] == 1 and state["promos_skipped"] == 1
    assert state["login_attempts"] == 1 and state["login_successes"] == 1
    assert "-> promo" in log and "IB Key promotion skipped" in log
