"""Misfires: the latest missed time runs once if within grace, else the schedule skips to its next time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coral_server.scheduler import DEFAULT_GRACE, Misfire, load_schedule, resolve_misfires

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday; the hourly schedule below fires on the hour
HOURLY = "0 * * * *"
GRACE = timedelta(minutes=5)


def decide(
    expr: str, last_fire: datetime, now: datetime, grace: timedelta = GRACE, kind: str = "cron"
) -> Misfire:
    return resolve_misfires(load_schedule(kind, expr, "UTC"), last_fire, now, grace)


def test_on_time_the_fire_just_passed_is_due() -> None:
    late = T0 + timedelta(milliseconds=3)
    assert decide(HOURLY, T0 - timedelta(hours=1), late) == Misfire(
        due=T0, first_missed=T0, next_fire=T0 + timedelta(hours=1)
    )
    assert not decide(HOURLY, T0 - timedelta(hours=1), late).coalesced


def test_nothing_missed_nothing_due() -> None:
    decision = decide(HOURLY, T0, T0 + timedelta(minutes=30))
    assert decision == Misfire(due=None, first_missed=None, next_fire=T0 + timedelta(hours=1))
    assert not decision.skipped


def test_after_downtime_the_latest_missed_time_runs_once_within_grace() -> None:
    # Down from 09:00 to 12:03: 10:00, 11:00 and 12:00 were missed; 12:00 is 3 minutes old.
    now = T0 + timedelta(hours=3, minutes=3)
    decision = decide(HOURLY, T0, now)
    assert decision.due == T0 + timedelta(hours=3)
    assert decision.first_missed == T0 + timedelta(hours=1)
    assert decision.coalesced and not decision.skipped
    assert decision.next_fire == T0 + timedelta(hours=4)


def test_after_downtime_beyond_grace_nothing_runs_and_it_skips_to_the_next_time() -> None:
    now = T0 + timedelta(hours=3, minutes=6)  # 12:00 is 6 minutes old, grace is 5
    decision = decide(HOURLY, T0, now)
    assert decision == Misfire(
        due=None, first_missed=T0 + timedelta(hours=1), next_fire=T0 + timedelta(hours=4)
    )
    assert decision.skipped and not decision.coalesced


def test_the_grace_window_includes_its_edge() -> None:
    assert decide(HOURLY, T0, T0 + timedelta(hours=1) + GRACE).due == T0 + timedelta(hours=1)
    assert decide(HOURLY, T0, T0 + timedelta(hours=1) + GRACE + timedelta(microseconds=1)).due is None
    # Grace 0: only a fire exactly at now.
    assert decide(HOURLY, T0, T0 + timedelta(hours=1), timedelta(0)).due == T0 + timedelta(hours=1)
    assert decide(HOURLY, T0, T0 + timedelta(hours=1, seconds=1), timedelta(0)).due is None


def test_a_long_downtime_of_a_frequent_task_is_one_run() -> None:
    # A task every second, down for 30 days: the walk looks at the first miss and the grace window only.
    every_second = "* * * * * *"
    now = T0 + timedelta(days=30, milliseconds=500)
    decision = decide(every_second, T0, now, timedelta(seconds=10))
    assert decision == Misfire(
        due=T0 + timedelta(days=30),
        first_missed=T0 + timedelta(seconds=1),
        next_fire=T0 + timedelta(days=30, seconds=1),
    )


def test_a_rule_and_a_once_task_follow_the_same_rule() -> None:
    rule = "DTSTART:20260302T090000Z\nRRULE:FREQ=DAILY;COUNT=3"
    assert decide(rule, T0 - timedelta(days=1), T0 + timedelta(days=1, minutes=1), kind="rrule") == Misfire(
        due=T0 + timedelta(days=1), first_missed=T0, next_fire=T0 + timedelta(days=2)
    )
    # After its last occurrence a rule has no next fire.
    assert decide(rule, T0 + timedelta(days=1), T0 + timedelta(days=2, minutes=10), kind="rrule") == Misfire(
        due=None, first_missed=T0 + timedelta(days=2), next_fire=None
    )
    once = "2026-03-02T09:00:00Z"
    assert decide(once, T0 - timedelta(days=1), T0 + timedelta(minutes=4), kind="once").due == T0
    assert decide(once, T0 - timedelta(days=1), T0 + timedelta(minutes=6), kind="once") == Misfire(
        due=None, first_missed=T0, next_fire=None
    )


def test_an_event_task_never_misfires() -> None:
    assert decide("orders.created", T0, T0 + timedelta(days=1), kind="event") == Misfire(None, None, None)


def test_the_default_grace_and_a_negative_one() -> None:
    schedule = load_schedule("cron", HOURLY, "UTC")
    on_edge = T0 + timedelta(hours=1) + DEFAULT_GRACE
    assert resolve_misfires(schedule, T0, on_edge).due == T0 + timedelta(hours=1)
    assert resolve_misfires(schedule, T0, on_edge + timedelta(seconds=1)).due is None
    assert timedelta(minutes=5) == DEFAULT_GRACE
    with pytest.raises(ValueError, match="grace"):
        decide(HOURLY, T0, T0, timedelta(seconds=-1))
