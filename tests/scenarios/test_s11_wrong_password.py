"""S11: a wrong password gives the bad-credentials banner; after 5 bad attempts
in a row IBKR locks the account (another banner; even the right password is
refused).  The failure budget is 3."""

from __future__ import annotations

import time

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    run_cli,
    running_sim,
    wait_until,
)
from tests.support.appliance import Appliance

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

QUIET = 2.0  # seconds of watching that nothing more is tried (intervals are 1 s)


def _reset_failures(env: dict[str, str]):
    done = run_cli(env, "reset-failures")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(300)
def test_s11_wrong_password_stops_at_three_across_restarts(tmp_path):
    """S11: with a wrong password the appliance's agent tries 3 times and stops,
    two attempts short of IBKR's lock; `supervisorctl restart agent` and a whole
    container restart (same volumes, now with the right password) try nothing
    more, since the count lives on disk; `ibeam reset-failures` lets the running
    agent log in again."""
    faults = {"lockout_after": 5}
    with Appliance(tmp_path, password="wrong-password", faults=faults) as box:
        halted = box.wait_state("HALTED", timeout=120)
        assert halted["failures"]["budget"] == {"spent": 3, "limit": 3, "locked": False}
        assert "reset-failures" in halted["alert"]
        assert box.get("/livez")[0] == 503
        time.sleep(QUIET)
        state = box.sim.state()
        assert state["login_attempts"] == 3 and state["login_failures"] == 3
        assert not state["locked"]

        # supervisord restarts the agent program: the count holds.
        first = box.agent_pid()
        assert box.supervisorctl("restart", "agent").returncode == 0
        wait_until(lambda: box.agent_pid() not in (None, first), 30, "a new agent")
        box.wait_state("HALTED", timeout=30)
        time.sleep(QUIET)
        assert box.sim.state()["login_attempts"] == 3

        # The container is restarted with the password fixed: still nothing,
        # although the new gateway process has forgotten every attempt.
        code, _ = box.stop()
        assert code == 0
        box.start(IBEAM_PASSWORD="demo")
        box.wait_state("HALTED", timeout=60)
        time.sleep(QUIET)
        assert box.sim.state()["login_attempts"] == 0

        # The operator's command refills the budget; the running agent resumes.
        out = _reset_failures(box.env)
        assert "was 3 of 3 spent" in out
        ready = box.wait_ready(90)
        state = box.sim.state()
        log = box.log()

    assert ready["failures"]["budget"]["spent"] == 0
    assert state["login_attempts"] == 1 and state["login_successes"] == 1
    assert "wrong-password" not in log


def test_s11_lock_banner_is_its_own_fatal_class(tmp_path):
    """S11: when the page says the account is locked, the agent stops at once:
    no retry, no backoff loop, nothing spent from the budget but a lock recorded
    on disk, an alert that says what to do; a restarted agent stays stopped;
    only `ibeam reset-failures` (after IBKR unlocked the account) resumes."""
    with running_sim(tmp_path, lockout_after=1) as sim:
        with pytest.raises(Exception, match="Invalid|locked|refused|failed"):
            sim.http_login("demo", "not-the-password")
        assert sim.state()["locked"]
        with AgentProcess(sim, tmp_path) as agent:
            halted = agent.wait_state("HALTED", timeout=90)
            assert halted["failures"]["budget"]["locked"] is True
            assert halted["failures"]["budget"]["spent"] == 0
            assert halted["failures"]["by_class"] == {
                "NO_SESSION": 1,
                "AccountLocked": 1,
            }
            assert "account is locked" in halted["alert"]
            assert "reset-failures" in halted["alert"]
            assert agent.get("/livez")[0] == 503
            time.sleep(QUIET)
            assert sim.state()["login_attempts"] == 2  # ours and the agent's one
            code, _ = agent.terminate()
            assert code == 0

        with AgentProcess(sim, tmp_path) as again:
            again.wait_state("HALTED", timeout=30)
            time.sleep(QUIET)
            assert sim.state()["login_attempts"] == 2

            sim.reset()  # IBKR unlocked the account
            sim.faults(auth_delay_ms=300)
            out = _reset_failures(again.env)
            assert "locked" in out
            again.wait_ready(90)
        state = sim.state()
    assert state["login_successes"] == 1 and not state["locked"]
