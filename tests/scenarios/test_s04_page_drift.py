"""S04: login page drift, with the real agent, Chromium and the simulator."""

from __future__ import annotations

import re

import pytest

from tests.scenarios.login_scenarios import (
    PASSWORDS,
    agent_for,
    scenario_sim,
    secrets_absent,
)
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


def test_s04_names_only_page_found_through_fallback_chain(tmp_path):
    """S04: inputs with only `name` attributes and a submit button of another
    class are found through the fallback chain with default selectors; the
    agent logs in once and says which DOM it met."""
    with scenario_sim(tmp_path, login_page="names_only") as sim:
        with agent_for(sim, tmp_path, "liveuser") as agent:
            agent.wait_ready(90)
            log = agent.log()
        state = sim.state()
    assert state["login_attempts"] == 1 and state["login_successes"] == 1
    assert "(names_only DOM)" in log
    assert "browser login done" in log and "page names_only" in log


def test_s04_unrecognised_page_backs_off_with_alert_and_dump(tmp_path):
    """S04: when nothing on the page matches, each attempt is classed "page not
    recognised": a screenshot and the HTML without the password are saved, no
    failure budget is spent, nothing is submitted, an alert is raised and the
    retries back off with growing delays instead of every interval; once the page
    is known again the agent logs in and the alert clears."""
    with scenario_sim(tmp_path, login_page="unrecognised") as sim:
        agent = agent_for(
            sim,
            tmp_path,
            "hostileuser",
            IBEAM_PAGE_LOAD_TIMEOUT=2,
            IBEAM_BACKOFF_MIN=1,
            IBEAM_BACKOFF_MAX=60,
        )
        with agent:
            status = agent.wait_for(
                lambda s: s["failures"]["by_class"].get("PageNotRecognised", 0) >= 3,
                150,
                "three unrecognised pages",
            )
            assert "PageNotRecognised" in (status["alert"] or "")
            assert status["failures"]["budget"]["spent"] == 0
            assert not status["ready"]
            assert sim.state()["login_attempts"] == 0

            sim.faults(login_page="current")
            ready = agent.wait_ready(120)
            assert ready["alert"] is None
            assert ready["failures"]["budget"]["spent"] == 0
            log = agent.log()

    delays = [
        int(found)
        for found in re.findall(r"PageNotRecognised: .*; next try in (\d+) s", log)
    ]
    assert delays[:3] == sorted(set(delays[:3])), f"backoff does not grow: {delays}"

    dumps = sorted(agent.outputs.glob("login-*"))
    assert {path.suffix for path in dumps} == {".png", ".html"}
    assert any(b"Scheduled maintenance" in p.read_bytes() for p in dumps)
    for path in dumps:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    secrets_absent(dumps, PASSWORDS["hostileuser"], "hostileuser")
    assert PASSWORDS["hostileuser"] not in log
