"""Planned gateway restarts: the schedule's next occurrence and the memory limit.

The watcher asks at each maintenance check (from READY or DEGRADED only, never
during a login) whether a restart is due.  The planner keeps the next
scheduled moment and the last memory sample, and answers with the reason to
log, or None.

- Schedule (``IBEAM_RESTART_SCHEDULE``): due once the wall clock has passed the
  planned moment; the next one is planned strictly after now, so each
  occurrence restarts at most once, however late the check comes.
- Memory (``IBEAM_GATEWAY_MEMORY_LIMIT_MB``): due at 90% of the limit, or
  earlier when the growth since the last sample would pass the limit within two
  intervals, so that the restart comes while the agent is idle rather than when
  the kernel's OOM killer picks its moment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ibeam_agents.schedule import RestartSchedule

log = logging.getLogger(__name__)

MEMORY_RESTART_SHARE = 0.9
MIB = 1024 * 1024


class RestartPlanner:
    """When the next planned restart is due, and why (see the module docstring)."""

    def __init__(
        self,
        schedule: RestartSchedule,
        memory_limit_mb: float | None,
        interval: float,
        *,
        wall: Callable[[], float],
    ) -> None:
        self.schedule = schedule
        self.memory_limit_mb = memory_limit_mb
        self.interval = interval
        self._wall = wall
        self.next_restart: datetime | None = None
        self._sample: tuple[float, int] | None = None

    def plan(self) -> None:
        """Plan the next scheduled restart after now and say when it is."""
        if not self.schedule:
            return
        now = datetime.fromtimestamp(self._wall(), UTC)
        self.next_restart = self.schedule.next_after(now)
        log.info("next planned gateway restart: %s", self.schedule.describe_next(now))

    def schedule_due(self) -> str | None:
        """The reason for a scheduled restart when one is due now, else None."""
        if self.next_restart is None:
            return None
        if datetime.fromtimestamp(self._wall(), UTC) < self.next_restart:
            return None
        self.plan()
        return "planned restart (IBEAM_RESTART_SCHEDULE)"

    def memory_due(self, used: int, now: float) -> str | None:
        """The reason for a memory restart, given used bytes at monotonic now."""
        previous, self._sample = self._sample, (now, used)
        limit_mb = self.memory_limit_mb
        if not limit_mb:
            return None
        limit = limit_mb * MIB
        usage = (
            f"the gateway uses {used / MIB:.0f} MiB of its {limit_mb:g} MiB limit "
            "(IBEAM_GATEWAY_MEMORY_LIMIT_MB)"
        )
        if used >= MEMORY_RESTART_SHARE * limit:
            return f"planned memory restart: {usage}"
        if previous is None or now <= previous[0] or used <= previous[1]:
            return None
        rate = (used - previous[1]) / (now - previous[0])
        if used + rate * 2 * self.interval < limit:
            return None
        return (
            f"planned memory restart: {usage} and grows {rate * 60 / MIB:.0f} MiB "
            "a minute"
        )

    def forget_memory(self) -> None:
        """A new gateway process: its growth starts over."""
        self._sample = None
