"""Planned gateway restarts (``IBEAM_RESTART_SCHEDULE``), in an explicit time zone.

A schedule is a comma-separated list of entries, each ``HH:MM`` (every day) or
``Day HH:MM`` (once a week, ``Mon`` .. ``Sun``), read in
``IBEAM_RESTART_TIMEZONE`` (default America/New_York) whatever the container's
own zone is, so a DST change moves the restart with the zone it was written in.
Entries inside IBKR's nightly reset window (00:30-01:30 America/New_York) or
closer than an hour to each other are refused: a restart there would collide
with the reset, and two restarts in one hour are one too many.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ibeam_agents.errors import ConfigError

DEFAULT_TIMEZONE = "America/New_York"
RESET_ZONE = ZoneInfo("America/New_York")
RESET_TIME = time(1, 0)
RESET_MARGIN = timedelta(minutes=30)
MIN_GAP = timedelta(hours=1)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_ENTRY_REG = re.compile(
    r"^(?:(?P<day>[A-Za-z]{3})[a-z]*\s+)?(?P<h>\d{1,2}):(?P<m>\d{2})$"
)


@dataclass(frozen=True)
class RestartTime:
    """One entry: a wall-clock time, on one weekday (0 = Monday) or every day."""

    at: time
    weekday: int | None = None

    def __str__(self) -> str:
        day = "daily" if self.weekday is None else DAYS[self.weekday].title()
        return f"{day} {self.at:%H:%M}"


class RestartSchedule:
    """The parsed schedule: when the next planned restart is."""

    def __init__(self, entries: tuple[RestartTime, ...], zone: str = DEFAULT_TIMEZONE):
        self.entries = entries
        self.zone_name = zone
        self.zone = _zone(zone)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        listed = ", ".join(str(e) for e in self.entries)
        return f"RestartSchedule([{listed}], zone={self.zone_name!r})"

    def next_after(self, moment: datetime) -> datetime | None:
        """The first planned restart strictly after moment (aware), in the zone."""
        if not self.entries:
            return None
        local = moment.astimezone(self.zone)
        best = None
        for entry in self.entries:
            candidate = _next_occurrence(entry, local, self.zone)
            if best is None or candidate < best:
                best = candidate
        return best

    def describe_next(self, moment: datetime) -> str:
        """'YYYY-mm-dd HH:MM Zone (HH:MM UTC)' for the log, or 'none'."""
        upcoming = self.next_after(moment)
        if upcoming is None:
            return "none"
        in_utc = upcoming.astimezone(UTC)
        return (
            f"{upcoming:%Y-%m-%d %H:%M} {self.zone_name} ({in_utc:%Y-%m-%d %H:%M} UTC)"
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"IBEAM_RESTART_TIMEZONE must be an IANA zone such as America/New_York: "
            f"got {name!r}"
        ) from exc


def _next_occurrence(entry: RestartTime, local: datetime, zone: ZoneInfo) -> datetime:
    """The next wall-clock occurrence of entry after local, in zone."""
    for days in range(0, 8):
        day = (local + timedelta(days=days)).date()
        if entry.weekday is not None and day.weekday() != entry.weekday:
            continue
        candidate = datetime.combine(day, entry.at, tzinfo=zone)
        if candidate > local:
            return candidate
    raise AssertionError("a weekly entry always occurs within eight days")


def _parse_entry(text: str) -> RestartTime:
    match = _ENTRY_REG.match(text.strip())
    if not match:
        raise ConfigError(
            "IBEAM_RESTART_SCHEDULE entries must be 'HH:MM' or 'Day HH:MM' "
            f"(e.g. 'Sat 23:30, 05:15'): got {text.strip()!r}"
        )
    hour, minute = int(match["h"]), int(match["m"])
    if hour > 23 or minute > 59:
        raise ConfigError(f"IBEAM_RESTART_SCHEDULE has an impossible time: {text!r}")
    weekday = None
    if match["day"]:
        day = match["day"].lower()
        if day not in DAYS:
            raise ConfigError(
                f"IBEAM_RESTART_SCHEDULE day must be one of Mon..Sun: got {text!r}"
            )
        weekday = DAYS.index(day)
    return RestartTime(at=time(hour, minute), weekday=weekday)


def _occurrences(entries, zone: ZoneInfo, start: datetime, days: int):
    """(datetime, entry) for every occurrence in [start, start + days)."""
    for offset in range(days):
        day = (start + timedelta(days=offset)).date()
        for entry in entries:
            if entry.weekday is None or entry.weekday == day.weekday():
                yield datetime.combine(day, entry.at, tzinfo=zone), entry


def _in_reset_window(moment: datetime) -> bool:
    ny = moment.astimezone(RESET_ZONE)
    for day_shift in (-1, 0, 1):
        reset = datetime.combine(
            (ny + timedelta(days=day_shift)).date(), RESET_TIME, tzinfo=RESET_ZONE
        )
        if abs(ny - reset) <= RESET_MARGIN:
            return True
    return False


def parse_schedule(
    value: str | None, zone: str = DEFAULT_TIMEZONE, *, today: datetime | None = None
) -> RestartSchedule:
    """Parse IBEAM_RESTART_SCHEDULE; refuse reset-window and overlapping entries.

    The checks run over a year of occurrences, so DST shifts between the
    schedule's zone and New York are covered.
    """
    tz = _zone(zone)
    if not value or not value.strip():
        return RestartSchedule((), zone)
    entries = tuple(_parse_entry(part) for part in value.split(",") if part.strip())
    start = (today or datetime.now(UTC)).astimezone(tz)
    moments = sorted(_occurrences(entries, tz, start, 371), key=lambda x: x[0])
    for moment, entry in moments:
        if _in_reset_window(moment):
            raise ConfigError(
                f"IBEAM_RESTART_SCHEDULE entry '{entry}' ({zone}) falls within 30 "
                "minutes of IBKR's 01:00 America/New_York reset on "
                f"{moment:%Y-%m-%d}; move it out of that window"
            )
    for (first, a), (second, b) in zip(moments, moments[1:], strict=False):
        if second - first < MIN_GAP:
            raise ConfigError(
                f"IBEAM_RESTART_SCHEDULE entries '{a}' and '{b}' are less than an "
                f"hour apart on {first:%Y-%m-%d}; keep one of them"
            )
    return RestartSchedule(entries, zone)
