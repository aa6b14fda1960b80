"""S13: a chromedriver of another major version, or one that exits at once, with
the real agent and the simulator (Chromium itself is the real one)."""

from __future__ import annotations

import subprocess

import pytest

from tests.scenarios.login_scenarios import agent_for, scenario_sim
from tests.support.agent import browser_guard

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


def _real_driver_version() -> str:
    done = subprocess.run(
        ["/usr/bin/chromedriver", "--version"], capture_output=True, text=True
    )
    return done.stdout.strip()


DRIVERS = {
    # Prints a version whose major differs from the browser's.
    "other_major": ("echo 'ChromeDriver 99.0.4844.51 (0a1b2c)'", "does not match"),
    # Prints the right version, then dies as soon as it is really started.
    "exits_at_once": (
        '[ "$1" = --version ] && {{ echo "{version}"; exit 0; }}; exit 3',
        "exited at once with status 3",
    ),
}


@pytest.mark.parametrize("fault", sorted(DRIVERS))
def test_s13_broken_driver_stops_before_any_login(tmp_path, fault):
    """S13: the agent's preflight (run while the gateway boots) says clearly what
    is wrong with chromedriver; no login is attempted, so neither the gateway's
    login counter nor the failure budget moves, however often the agent checks
    again after its backoff; /status says "browser unavailable" with an alert."""
    body, expected = DRIVERS[fault]
    driver = tmp_path / "chromedriver"
    driver.write_text("#!/bin/sh\n" + body.format(version=_real_driver_version()))
    driver.chmod(0o755)
    with scenario_sim(tmp_path) as sim:
        agent = agent_for(
            sim,
            tmp_path,
            "liveuser",
            IBEAM_CHROME_DRIVER_PATH=driver,
            IBEAM_BACKOFF_MIN=1,
            IBEAM_BACKOFF_MAX=2,
        )
        with agent:
            first = agent.wait_for(
                lambda s: s["failures"]["by_class"].get("BrowserUnavailable"),
                60,
                "the preflight's verdict",
            )
            assert "browser unavailable" in (first["alert"] or "").lower()
            later = agent.wait_for(
                lambda s: s["failures"]["by_class"].get("BrowserUnavailable", 0) >= 3,
                60,
                "two more checks after backoffs",
            )
            log = agent.log()
            state = sim.state()
    assert later["alert"] and not later["ready"] and later["live"]
    assert later["failures"]["budget"]["spent"] == 0
    assert later["last_login"]["outcome"] == "BrowserUnavailable"
    assert state["login_attempts"] == 0
    assert state["requests"].get("/sso/Login", 0) == 0  # no page was ever loaded
    assert expected in log
    assert "started Xvfb" not in log  # not even a display for a doomed attempt
