"""Planned restarts: parsing, zones, DST, refusals (S22)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ibeam_agents.errors import ConfigError
from ibeam_agents.schedule import parse_schedule

JAN = datetime(2027, 1, 4, 12, 0, tzinfo=UTC)  # a Monday


def test_schedule_empty_is_falsy():
    assert not parse_schedule(None)
    assert not parse_schedule("  ")
    assert parse_schedule(None).next_after(JAN) is None


def test_schedule_daily_and_weekly_entries():
    schedule = parse_schedule("05:30, Sat 23:00", "America/New_York", today=JAN)
    assert [str(e) for e in schedule.entries] == ["daily 05:30", "Sat 23:00"]
    upcoming = schedule.next_after(JAN)
    assert upcoming.isoformat() == "2027-01-05T05:30:00-05:00"


def test_schedule_next_follows_the_zone_across_dst():
    schedule = parse_schedule("05:30", "America/New_York", today=JAN)
    before = datetime(2027, 3, 12, 12, 0, tzinfo=UTC)  # DST starts 2027-03-14
    assert schedule.next_after(before).astimezone(UTC).hour == 10
    after = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
    assert schedule.next_after(after).astimezone(UTC).hour == 9


def test_schedule_describe_shows_zone_and_utc():
    schedule = parse_schedule("09:30", "Europe/Berlin", today=JAN)
    text = schedule.describe_next(JAN)
    assert text == "2027-01-05 09:30 Europe/Berlin (2027-01-05 08:30 UTC)"


def test_schedule_refuses_the_nightly_reset_window():
    with pytest.raises(ConfigError, match="01:00 America/New_York"):
        parse_schedule("01:10", "America/New_York", today=JAN)


def test_schedule_refuses_reset_window_reached_through_dst():
    # 07:15 in Berlin is 01:15 in New York for the weeks the two DST rules differ.
    with pytest.raises(ConfigError, match="IBEAM_RESTART_SCHEDULE"):
        parse_schedule("07:15", "Europe/Berlin", today=JAN)


def test_schedule_refuses_overlapping_entries():
    with pytest.raises(ConfigError, match="less than an hour apart"):
        parse_schedule("05:00, Sat 05:30", "America/New_York", today=JAN)


@pytest.mark.parametrize("text", ["5", "Funday 05:00", "24:00", "05:61", "05-00"])
def test_schedule_bad_entries_name_the_variable(text):
    with pytest.raises(ConfigError, match="IBEAM_RESTART_SCHEDULE"):
        parse_schedule(text, today=JAN)


def test_schedule_long_day_names_accepted():
    schedule = parse_schedule("Saturday 22:00", today=JAN)
    assert str(schedule.entries[0]) == "Sat 22:00"


def test_schedule_entries_may_carry_seconds():
    schedule = parse_schedule("05:30:15", "America/New_York", today=JAN)
    assert str(schedule.entries[0]) == "daily 05:30:15"
    text = schedule.describe_next(JAN)
    assert text == ("2027-01-05 05:30:15 America/New_York (2027-01-05 10:30:15 UTC)")
    with pytest.raises(ConfigError, match="impossible time"):
        parse_schedule("05:30:60", today=JAN)


def test_schedule_repeated_autumn_hour_restarts_once():
    # Berlin leaves DST on 2027-10-31: 02:30 happens at 00:30 and 01:30 UTC.
    schedule = parse_schedule("02:30", "Europe/Berlin", today=JAN)
    # (Python never calls a time in a repeated hour equal to one in another
    # zone, so the checks compare timestamps.)
    first = datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    upcoming = schedule.next_after(first - timedelta(seconds=1))
    assert upcoming.timestamp() == first.timestamp()
    tomorrow = datetime(2027, 11, 1, 1, 30, tzinfo=UTC).timestamp()
    for later in (first, datetime(2027, 10, 31, 1, 10, tzinfo=UTC)):
        assert schedule.next_after(later).timestamp() == tomorrow


def test_schedule_missing_spring_hour_runs_an_hour_later():
    # Berlin enters DST on 2027-03-28: 02:30 does not exist that night.
    schedule = parse_schedule("02:30", "Europe/Berlin", today=JAN)
    upcoming = schedule.next_after(datetime(2027, 3, 28, 0, 0, tzinfo=UTC))
    assert upcoming.astimezone(UTC) == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


def test_schedule_gap_is_measured_on_the_clock_not_the_wall():
    # On 2027-03-28 Berlin's 01:45 and 03:10 are 25 minutes apart, not 85.
    with pytest.raises(ConfigError, match="less than an hour apart on 2027-03-28"):
        parse_schedule("01:45, 03:10", "Europe/Berlin", today=JAN)


def test_schedule_ignores_the_container_zone(monkeypatch):
    import time as time_module

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time_module.tzset()
    try:
        schedule = parse_schedule("05:30", today=JAN)
        assert schedule.zone_name == "America/New_York"
        assert schedule.next_after(JAN).astimezone(UTC).hour == 10
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()
