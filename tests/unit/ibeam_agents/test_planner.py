"""When planned and memory restarts are due."""

from __future__ import annotations

from datetime import UTC, datetime

from ibeam_agents.planner import MIB, RestartPlanner
from ibeam_agents.schedule import RestartSchedule, parse_schedule

NOON = datetime(2027, 1, 4, 12, 0, tzinfo=UTC).timestamp()


def test_planner_schedule_due_once_per_occurrence():
    now = [NOON]
    planner = RestartPlanner(
        parse_schedule("12:00:30", "UTC"), None, 60, wall=lambda: now[0]
    )
    planner.plan()
    assert planner.next_restart.timestamp() == NOON + 30
    assert planner.schedule_due() is None
    now[0] = NOON + 3600  # a check that comes late still restarts once
    assert "IBEAM_RESTART_SCHEDULE" in planner.schedule_due()
    assert planner.schedule_due() is None
    assert planner.next_restart.timestamp() == NOON + 86400 + 30


def test_planner_without_schedule_or_limit_is_never_due():
    planner = RestartPlanner(RestartSchedule(()), None, 60, wall=lambda: NOON)
    planner.plan()
    assert planner.schedule_due() is None
    assert planner.memory_due(10_000 * MIB, 1.0) is None


def test_planner_memory_share_and_projection():
    planner = RestartPlanner(RestartSchedule(()), 1000, 60, wall=lambda: NOON)
    assert planner.memory_due(500 * MIB, 0.0) is None
    assert planner.memory_due(510 * MIB, 60.0) is None  # 10 MiB a minute: far
    reason = planner.memory_due(800 * MIB, 120.0)  # +290 in a minute
    assert reason and "grows 290 MiB a minute" in reason
    planner.forget_memory()
    assert planner.memory_due(950 * MIB, 180.0).endswith(
        "(IBEAM_GATEWAY_MEMORY_LIMIT_MB)"
    )
