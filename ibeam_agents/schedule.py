"""Planned gateway restarts (``IBEAM_RESTART_SCHEDULE``), in an explicit time zone.

A schedule is a comma-separated list of entries, each ``HH:MM`` (every day) or
``Day HH:MM`` (once a week, ``Mon`` .. ``Sun``), seconds optional
(``HH:MM:SS``), read in ``IBEAM_RESTART_TIMEZONE`` (default America/New_York)
whatever the container's own zone is, so a DST change moves the restart with
the zone it was written in.  Entries inside IBKR's nightly reset window
(00:30-01:30 America/New_York) or closer than an hour to each other are
refused: a restart there would collide with the reset, and two restarts in one
hour are one too many.

Every comparison is made on absolute time (UTC): Python compares two times of
one zone by their wall clocks, which is wrong across a DST change (a wall time
that occurs twice in the autumn, an hour that does not exist in the spring).
A wall time that does not exist is taken as the same time on the clock before
the change (02:30 on a spring-forward night runs at 03:30); one that occurs
twice runs at its first occurrence only.
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
    r"^(?:(?P<day>[A-Za-z]{3})[a-z]*\s+)?"
    r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$"
)


@dataclass(frozen=True)
class RestartTime:
    """One entry: a wall-clock time, on one weekday (0 = Monday) or every day."""

    at: time
    weekday: int | None = None

    def __str__(self) -> str:
        day = "daily" if self.weekday is None else DAYS[self.weekday].title()
        return f"{day} {_clock_text(self.at)}"


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
        candidates = [_next_occurrence(e, moment, self.zone) for e in self.entries]
        return min(candidates, key=lambda c: c.timestamp())

    def describe_next(self, moment: datetime) -> str:
        """'YYYY-mm-dd HH:MM Zone (HH:MM UTC)' for the log, or 'none'."""
        upcoming = self.next_after(moment)
        if upcoming is None:
            return "none"
        in_utc = upcoming.astimezone(UTC)
        shown = "%Y-%m-%d %H:%M:%S" if upcoming.second else "%Y-%m-%d %H:%M"
        return (
            f"{upcoming.strftime(shown)} {self.zone_name} "
            f"({in_utc.strftime(shown)} UTC)"
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"IBEAM_RESTART_TIMEZONE must be an IANA zone such as America/New_York: "
            f"got {name!r}"
        ) from exc


def _clock_text(at: time) -> str:
    return f"{at:%H:%M:%S}" if at.second else f"{at:%H:%M}"


def _next_occurrence(entry: RestartTime, moment: datetime, zone: ZoneInfo) -> datetime:
    """The next occurrence of entry strictly after moment, in zone."""
    after = moment.timestamp()
    local_day = moment.astimezone(zone).date()
    for days in range(-1, 9):
        day = local_day + timedelta(days=days)
        if entry.weekday is not None and day.weekday() != entry.weekday:
            continue
        candidate = datetime.combine(day, entry.at, tzinfo=zone)
        if candidate.timestamp() > after:
            return candidate
    raise AssertionError("a weekly entry always occurs within eight days")


def _parse_entry(text: str) -> RestartTime:
    match = _ENTRY_REG.match(text.strip())
    if not match:
        raise ConfigError(
            "IBEAM_RESTART_SCHEDULE entries must be 'HH:MM[:SS]' or 'Day HH:MM' "
            f"(e.g. 'Sat 23:30, 05:15'): got {text.strip()!r}"
        )
    hour, minute, second = int(match["h"]), int(match["m"]), int(match["s"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ConfigError(f"IBEAM_RESTART_SCHEDULE has an impossible time: {text!r}")
    weekday = None
    if match["day"]:
        day = match["day"].lower()
        if day not in DAYS:
            raise ConfigError(
                f"IBEAM_RESTART_SCHEDULE day must be one of Mon..Sun: got {text!r}"
            )
        weekday = DAYS.index(day)
    return RestartTime(at=time(hour, minute, second), weekday=weekday)


def _occurrences(entries, zone: ZoneInfo, start: datetime, days: int):
    """(datetime, entry) for every occurrence in [start, start + days)."""
    for offset in range(days):
        day = (start + timedelta(days=offset)).date()
        for entry in entries:
            if entry.weekday is None or entry.weekday == day.weekday():
                yield datetime.combine(day, entry.at, tzinfo=zone), entry


def in_reset_window(moment: datetime) -> bool:
    """Whether moment is within 30 minutes of a 01:00 America/New_York reset."""
    ny_day = moment.astimezone(RESET_ZONE).date()
    for day_shift in (-1, 0, 1):
        reset = datetime.combine(
            ny_day + timedelta(days=day_shift), RESET_TIME, tzinfo=RESET_ZONE
        )
        if abs(moment.timestamp() - reset.timestamp()) <= RESET_MARGIN.total_seconds():
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
    moments = sorted(
        _occurrences(entries, tz, start, 371), key=lambda x: x[0].timestamp()
    )
    for moment, entry in moments:
        if in_reset_window(moment):
            raise ConfigError(
                f"IBEAM_RESTART_SCHEDULE entry '{entry}' ({zone}) falls within 30 "
                "minutes of IBKR's 01:00 America/New_York reset on "
                f"{moment:%Y-%m-%d}; move it out of that window"
            )
    for (first, a), (second, b) in zip(moments, moments[1:], strict=False):
        if second.timestamp() - first.timestamp() < MIN_GAP.total_seconds():
            raise ConfigError(
                f"IBEAM_RESTART_SCHEDULE entries '{a}' and '{b}' are less than an "
                f"hour apart on {first:%Y-%m-%d}; keep one of them"
            )
    return RestartSchedule(entries, zone)
