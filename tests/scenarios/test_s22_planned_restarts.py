"""S22: planned gateway restarts while the container runs in another time zone
(TZ=Europe/Berlin).  The DST cases (a zone whose DST rule differs from New
York's, hours that repeat or do not exist) are unit tests of schedule.py
(tests/unit/ibeam_agents/test_schedule.py); here the real agent refuses bad
schedules and restarts the gateway at a planned time a few seconds ahead.

A few seconds ahead is written as an `HH:MM:SS` entry computed by the test in
America/New_York.  When that moment falls inside IBKR's nightly reset window
(00:30-01:30 New York) the agent rightly refuses it, so the restart test skips
during that hour of the day, saying so."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ibeam_agents.schedule import in_reset_window
from tests.support.agent import (
    LOG_TIME,
    AgentProcess,
    browser_guard,
    metric,
    run_cli,
    running_sim,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
PLANNED = 'ibeam_gateway_restarts_total{reason="planned"}'
LEAD = 22  # seconds from starting the agent to the planned restart


def _berlin_times(log: str, needle: str) -> list[float]:
    """Epoch seconds of agent log lines holding needle (the agent logs Berlin time)."""
    found = []
    for line in log.splitlines():
        match = LOG_TIME.match(line)
        if match and needle in line:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            found.append(stamp.replace(tzinfo=BERLIN).timestamp())
    return found


@pytest.mark.parametrize(
    ("schedule", "zone", "why"),
    [
        ("01:10", None, "30 minutes of IBKR's 01:00 America/New_York reset"),
        ("Sun 07:10", "Europe/Berlin", "01:00 America/New_York reset on"),
        ("06:15", "Europe/Berlin", "01:00 America/New_York reset on"),
        ("10:00, 10:30:30", None, "less than an hour apart"),
        ("10:00", "Berlin", "IBEAM_RESTART_TIMEZONE must be an IANA zone"),
    ],
)
def test_s22_bad_schedules_are_refused_in_one_line(tmp_path, schedule, zone, why):
    """S22: a schedule inside the nightly reset window (directly, or only in the
    weeks when Berlin's and New York's DST rules differ, as 06:15 Berlin does),
    overlapping entries, or an unknown zone: exit 2 and one line naming the
    setting, before anything starts."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TZ": "Europe/Berlin",
        "IBEAM_GATEWAY_DIR": str(tmp_path / "nowhere"),
        "IBEAM_OUTPUTS_DIR": str(tmp_path / "outputs"),
        "IBEAM_ACCOUNT": "demo",
        "IBEAM_PASSWORD": "demo",
        "IBEAM_RESTART_SCHEDULE": schedule,
    }
    if zone:
        env["IBEAM_RESTART_TIMEZONE"] = zone
    done = run_cli(env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ConfigError: IBEAM_RESTART_")
    assert why in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_s22_agent_restarts_the_gateway_at_the_planned_time(tmp_path):
    """S22: with TZ=Europe/Berlin and no IBEAM_RESTART_TIMEZONE, an entry is read
    in America/New_York; the log shows the next restart in that zone and in UTC;
    the agent restarts the gateway at that moment (not six hours off), logs in
    again, plans the next one a day later, and restarts once per occurrence."""
    target = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD)
    if in_reset_window(target):
        pytest.skip("inside IBKR's nightly reset window, where restarts are refused")
    local = target.astimezone(NEW_YORK)
    env = {"TZ": "Europe/Berlin", "IBEAM_RESTART_SCHEDULE": f"{local:%H:%M:%S}"}
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path, env=env) as agent:
            agent.wait_ready(LEAD - 5)
            agent.wait_for(lambda s: metric(agent, PLANNED) == 1, LEAD + 10, "restart")
            agent.wait_ready(60)
            time.sleep(3)  # more checks after the occurrence: no second restart
            assert metric(agent, PLANNED) == 1
            logins = metric(agent, 'ibeam_logins_total{outcome="succeeded"}')
            log = agent.log()

    assert logins == 2
    announced = (
        f"next planned gateway restart: {local:%Y-%m-%d %H:%M:%S} America/New_York "
        f"({target:%Y-%m-%d %H:%M:%S} UTC)"
    )
    assert announced in log
    tomorrow = (local + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"next planned gateway restart: {tomorrow} America/New_York" in log
    restarted = _berlin_times(log, "-> RESTARTING: planned restart")
    assert len(restarted) == 1
    assert 0 <= restarted[0] - target.timestamp() <= 3.0
    assert re.search(r"RESTARTING -> STARTING", log)
