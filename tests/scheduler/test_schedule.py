"""Schedules of every kind: the fields' errors, once and event tasks, `next_fires`' walk, `preview`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from coral_server.scheduler import (
    SCHEDULE_KINDS,
    ScheduleInvalid,
    Schedules,
    load_schedule,
    next_fires,
    parse_schedule,
    preview,
)

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def problems(kind: str | None, expr: str | None, timezone: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ScheduleInvalid) as caught:
        parse_schedule(kind, expr, timezone, now=NOW)
    return caught.value.problems


def test_every_kind_plans_in_utc() -> None:
    cron = parse_schedule("cron", "0 9 * * 1-5", "Europe/Berlin", now=NOW)
    assert next_fires(cron, NOW, 2) == [
        datetime(2026, 3, 2, 8, tzinfo=UTC),
        datetime(2026, 3, 3, 8, tzinfo=UTC),
    ]
    rrule = parse_schedule(
        "rrule", "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0", "Europe/Berlin", now=NOW
    )
    assert next_fires(rrule, NOW, 1) == [datetime(2026, 3, 2, 8, tzinfo=UTC)]
    once = parse_schedule("once", "2026-03-02T09:00:00+01:00", None, now=NOW)
    assert next_fires(once, NOW, 3) == [datetime(2026, 3, 2, 8, tzinfo=UTC)]
    event = parse_schedule("event", "orders.created", None, now=NOW)
    assert (event.topic, next_fires(event, NOW, 3)) == ("orders.created", [])
    assert all(f.tzinfo is UTC for f in next_fires(cron, NOW, 5) + next_fires(rrule, NOW, 5))
    assert cron.timezone == "Europe/Berlin" and once.timezone == "UTC"
    assert set(SCHEDULE_KINDS) == {"cron", "rrule", "once", "event"}


def test_a_wrong_kind_is_named() -> None:
    assert problems("hourly", "0 * * * *") == [
        ("schedule_kind", "'hourly' is not a schedule kind: one of cron, rrule, once, event")
    ]
    assert problems(None, "0 * * * *")[0] == (
        "schedule_kind",
        "schedule_kind is required: one of cron, rrule, once, event",
    )


@pytest.mark.parametrize("name", ["Mars/Olympus", "europe/berlin", "", "../etc/passwd", " UTC", "America"])
def test_an_unknown_timezone_is_named(name: str) -> None:
    assert problems("cron", "0 9 * * *", name) == [
        ("timezone", f"'{name}' is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)")
    ]


def test_every_wrong_field_is_reported_together() -> None:
    assert problems("cron", "0 0 32 * *", "Nowhere/City") == [
        ("timezone", "'Nowhere/City' is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)"),
        ("schedule_expr", "field 3 (day of month): 32 is out of range 1-31"),
    ]


@pytest.mark.parametrize("kind", ["cron", "rrule", "once"])
@pytest.mark.parametrize("expr", [None, "", "   "])
def test_schedule_expr_missing_is_named(kind: str, expr: str | None) -> None:
    [(field, message)] = problems(kind, expr)
    assert field == "schedule_expr"
    assert message.startswith(f"schedule_expr missing: a {kind} schedule needs one, e.g. ")


def test_an_overlong_expression_is_refused() -> None:
    assert problems("cron", "0 " * 1001) == [("schedule_expr", "longer than 2000 characters")]


def test_a_once_time_without_offset_is_in_the_tasks_zone() -> None:
    once = parse_schedule("once", "2026-03-02T09:00", "America/New_York", now=NOW)
    assert once.at == datetime(2026, 3, 2, 14, tzinfo=UTC)
    assert parse_schedule("once", "2026-03-02T09:00Z", "America/New_York", now=NOW).at == datetime(
        2026, 3, 2, 9, tzinfo=UTC
    )
    # DST: a gap time moves forward by the gap, a repeated time is its first occurrence.
    gap = parse_schedule("once", "2026-03-08T02:30", "America/New_York", now=NOW)
    assert gap.at == datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK).astimezone(UTC)
    fold = parse_schedule("once", "2026-11-01T01:30", "America/New_York", now=NOW)
    assert fold.at == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not EST


def test_a_once_time_in_the_past_or_not_iso_is_refused() -> None:
    assert problems("once", "2026-03-01T09:59:59Z") == [
        (
            "schedule_expr",
            "the once time 2026-03-01T09:59:59+00:00 is in the past (now is 2026-03-01T10:00:00+00:00)",
        )
    ]
    [(field, message)] = problems("once", "next tuesday")
    assert field == "schedule_expr"
    assert message.startswith("'next tuesday' is not an ISO-8601 date-time")
    # A stored one loads: it simply has no more fires.
    old = load_schedule("once", "2026-03-01T09:00:00Z", "UTC")
    assert next_fires(old, NOW, 1) == []


def test_a_rule_used_up_before_now_is_refused_but_loads() -> None:
    expr = "DTSTART:20260101T090000Z\nRRULE:FREQ=DAILY;COUNT=3"
    [(field, message)] = problems("rrule", expr)
    assert field == "schedule_expr"
    assert (
        message
        == "the rule has no occurrence after now (2026-03-01T10:00:00+00:00): its UNTIL or COUNT is used up"
    )
    assert next_fires(load_schedule("rrule", expr, "UTC"), datetime(2026, 1, 1, tzinfo=UTC), 5) == [
        datetime(2026, 1, d, 9, tzinfo=UTC) for d in (1, 2, 3)
    ]


def test_an_rrule_without_dtstart_stores_the_one_it_was_given() -> None:
    schedule = parse_schedule(
        "rrule", "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0", "America/New_York", now=NOW
    )
    assert (
        schedule.expr
        == "DTSTART;TZID=America/New_York:20260301T050000\nRRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0"
    )
    stored = load_schedule("rrule", schedule.expr, "America/New_York")
    later = NOW + timedelta(days=200)
    assert next_fires(stored, later, 5) == next_fires(schedule, later, 5)


def test_event_topics() -> None:
    assert parse_schedule("event", "  github:push  ", None, now=NOW).topic == "github:push"
    manual = parse_schedule("event", None, None, now=NOW)  # no topic: fires only by run_now
    assert (manual.topic, manual.expr) == (None, None)
    for bad in ("two words", "x" * 201, "tab\there"):
        assert problems("event", bad) == [
            ("schedule_expr", "an event topic is 1-200 visible characters without spaces")
        ]


def test_next_fires_continues_the_walk_and_can_go_back() -> None:
    schedule = parse_schedule("cron", "*/10 * * * *", None, now=NOW)
    first = next_fires(schedule, NOW, 3)
    assert first == [NOW + timedelta(minutes=m) for m in (10, 20, 30)]
    assert next_fires(schedule, first[0], 3) == [NOW + timedelta(minutes=m) for m in (20, 30, 40)]
    far = NOW + timedelta(days=3, minutes=5)
    assert next_fires(schedule, far, 1) == [far + timedelta(minutes=5)]
    for step in range(100):  # forward in small steps: each answer as from a fresh walk
        at = far + timedelta(minutes=7 * step, seconds=13)
        assert next_fires(schedule, at, 2) == next_fires(
            parse_schedule("cron", "*/10 * * * *", None, now=NOW), at, 2
        )
    assert next_fires(schedule, NOW, 1) == first[:1]  # back before the walk: it starts again
    assert next_fires(schedule, NOW, 0) == []


def test_next_fires_wants_an_aware_time() -> None:
    schedule = parse_schedule("cron", "0 * * * *", None, now=NOW)
    with pytest.raises(ValueError, match="aware"):
        next_fires(schedule, datetime(2026, 3, 1), 1)
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("cron", "0 * * * *", None, now=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="n must be 0 or more"):
        next_fires(schedule, NOW, -1)
    # Any aware zone is read as its instant.
    assert next_fires(schedule, NOW.astimezone(NEW_YORK), 1) == [NOW + timedelta(hours=1)]


def test_preview_gives_the_next_fire_times_or_the_error() -> None:
    shown = preview("cron", "30 2 * * *", "America/New_York", datetime(2026, 3, 6, tzinfo=UTC), n=4)
    assert [f"{f:%m-%d %H:%M%z}" for f in shown.local_fires] == [
        "03-06 02:30-0500",
        "03-07 02:30-0500",
        "03-08 03:00-0400",
        "03-09 02:30-0400",
    ]
    assert shown.fires == [f.astimezone(UTC) for f in shown.local_fires]
    assert shown.schedule.expr == "30 2 * * *"
    assert len(preview("rrule", "FREQ=MINUTELY", None, NOW).fires) == 5
    with pytest.raises(ScheduleInvalid) as caught:
        preview("cron", "0 0 * * 9", "UTC", NOW)
    assert caught.value.problems == [("schedule_expr", "field 5 (day of week): 9 is out of range 0-7")]
    with pytest.raises(ValueError, match="n must be 1-100"):
        preview("cron", "0 0 * * *", "UTC", NOW, n=101)


def test_schedules_share_one_per_kind_expression_and_zone() -> None:
    schedules = Schedules(limit=2)
    hourly = schedules.load("cron", "0 * * * *", "UTC")
    assert schedules.load("cron", "0 * * * *", "UTC") is hourly
    berlin = schedules.load("cron", "0 * * * *", "Europe/Berlin")
    assert berlin is not hourly
    # Two tasks asking from different points both get their own answer from the one walk.
    assert next_fires(hourly, NOW, 1) == [NOW + timedelta(hours=1)]
    assert next_fires(hourly, NOW + timedelta(minutes=90), 1) == [NOW + timedelta(hours=2)]
    assert next_fires(hourly, NOW - timedelta(minutes=30), 1) == [NOW]
    schedules.load("cron", "0 * * * *", "UTC")  # used: the Berlin one is now the oldest
    schedules.load("once", "2026-03-02T09:00:00Z", "UTC")
    assert len(schedules) == 2
    assert schedules.load("cron", "0 * * * *", "UTC") is hourly
    assert schedules.load("cron", "0 * * * *", "Europe/Berlin") is not berlin
    with pytest.raises(ScheduleInvalid):
        schedules.load("cron", "0 0 32 * *", "UTC")
