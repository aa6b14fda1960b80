"""When a login saves the page (README, "The inputs directory"): a screenshot and
the HTML are written for a page the agent cannot read, never for a clear answer
such as a rejected password, a locked account or the wrong trading mode, which
the error quotes instead.  Real Chromium under Xvfb against the simulator.  (The
saved page of an unrecognised one: test_agent_login.py and scenario S04.)"""

from __future__ import annotations

import pytest

from ibeam_agents.errors import (
    AccountLocked,
    CredentialsRejected,
    WrongTradingMode,
)
from tests.e2e.test_agent_login_kit import login, login_sim

pytestmark = pytest.mark.e2e

sim = pytest.fixture(login_sim)


def saved(tmp_path) -> list[str]:
    outputs = tmp_path / "outputs"
    return sorted(p.name for p in outputs.glob("login-*")) if outputs.exists() else []


def test_login_dumps_none_for_clear_refusals(sim, tmp_path):
    with pytest.raises(CredentialsRejected, match="rejected the user name or password"):
        login(sim, tmp_path, "liveuser", password="not-the-password")
    with pytest.raises(WrongTradingMode):
        login(sim, tmp_path, "paperuser", trading_mode="live")
    sim.faults(lockout_after=1)
    with pytest.raises(CredentialsRejected):
        login(sim, tmp_path, "liveuser", password="wrong")
    with pytest.raises(AccountLocked):
        login(sim, tmp_path, "liveuser")
    assert saved(tmp_path) == []
