"""Cron expressions: field-by-field errors, macros, the seconds field and the DST rules in two zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from coral_server.scheduler.cron import MACROS, cron_fires, parse_cron
from coral_server.scheduler.errors import ScheduleInvalid

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def fires(expr: str, zone: ZoneInfo, after: datetime, n: int) -> list[datetime]:
    walk = cron_fires(parse_cron(expr), zone, after)
    return [next(walk) for _ in range(n)]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 32 * *", "field 3 (day of month): 32 is out of range 1-31"),
        ("60 * * * *", "field 1 (minute): 60 is out of range 0-59"),
        ("0 24 * * *", "field 2 (hour): 24 is out of range 0-23"),
        ("0 0 * 13 *", "field 4 (month): 13 is out of range 1-12"),
        ("0 0 * * 8", "field 5 (day of week): 8 is out of range 0-7"),
        ("0 0 * * * 61", "field 6 (second): 61 is out of range 0-59"),
        ("*/0 * * * *", "field 1 (minute): step 0 in '*/0' (a step is at least 1)"),
        ("*/x * * * *", "field 1 (minute): step 'x' in '*/x' is not a whole number"),
        ("0 10-2 * * *", "field 2 (hour): range 10-2 goes backwards"),
        ("0 0 * FOO *", "field 4 (month): 'FOO' in 'FOO' is not a valid month"),
        ("0 0 * * MON#6", "field 5 (day of week): 'MON#6': the week number after # is 1-5"),
        ("1,,2 * * * *", "field 1 (minute): '1,,2' has an empty item"),
        ("0 0 31 2 *", "field 3 (day of month): no month in field 4 ('2') has day '31'"),
        ("0 0 * *", "a cron expression has 5 fields"),
        ("0 0 * * * * *", "'0 0 * * * * *' has 7"),
        ("@reboot", "unknown macro '@reboot'"),
    ],
)
def test_a_wrong_expression_names_the_field_the_value_and_the_problem(expr: str, message: str) -> None:
    with pytest.raises(ScheduleInvalid) as caught:
        parse_cron(expr)
    assert caught.value.field == "schedule_expr"
    assert message in caught.value.message


@pytest.mark.parametrize(
    "expr",
    ["0 9 * * MON-FRI", "15 10 * * 5#3", "0 0 L * *", "0 0 LW * *", "0 12 * jan,jul 5L", "*/7 * * * * */15"],
)
def test_the_grammar_cronsim_reads_is_accepted(expr: str) -> None:
    assert parse_cron(expr).text == expr


def test_macros_mean_their_five_fields() -> None:
    after = datetime(2026, 5, 4, 12, 34, tzinfo=UTC)
    assert fires("@hourly", UTC, after, 1) == [datetime(2026, 5, 4, 13, tzinfo=UTC)]
    assert (
        fires("@DAILY", UTC, after, 1)
        == fires("@midnight", UTC, after, 1)
        == [datetime(2026, 5, 5, tzinfo=UTC)]
    )
    assert fires("@weekly", UTC, after, 1) == [datetime(2026, 5, 10, tzinfo=UTC)]  # a Sunday
    assert fires("@monthly", UTC, after, 1) == [datetime(2026, 6, 1, tzinfo=UTC)]
    assert (
        fires("@yearly", UTC, after, 1)
        == fires("@annually", UTC, after, 1)
        == [datetime(2027, 1, 1, tzinfo=UTC)]
    )
    assert parse_cron("@Daily").text == "@daily"
    assert set(MACROS) == {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def test_a_sixth_field_is_the_second_of_each_planned_minute() -> None:
    after = datetime(2026, 5, 4, 12, 0, 20, tzinfo=UTC)
    # Seconds 15 and 45 of minutes 0 and 30; the minute holding `after` still has its second 45.
    assert fires("0,30 * * * * 15,45", UTC, after, 4) == [
        datetime(2026, 5, 4, 12, 0, 45, tzinfo=UTC),
        datetime(2026, 5, 4, 12, 30, 15, tzinfo=UTC),
        datetime(2026, 5, 4, 12, 30, 45, tzinfo=UTC),
        datetime(2026, 5, 4, 13, 0, 15, tzinfo=UTC),
    ]
    assert fires("* * * * * */20", UTC, after, 3) == [
        datetime(2026, 5, 4, 12, 0, 40, tzinfo=UTC),
        datetime(2026, 5, 4, 12, 1, 0, tzinfo=UTC),
        datetime(2026, 5, 4, 12, 1, 20, tzinfo=UTC),
    ]
    assert parse_cron("0 9 * * * 30").seconds == (30,)
    assert parse_cron("0 9 * * *").seconds == (0,)


def test_fires_are_strictly_after_and_increasing() -> None:
    after = datetime(2026, 5, 4, 12, 30, tzinfo=UTC)  # itself a fire time of */15
    got = fires("*/15 * * * *", UTC, after, 3)
    assert got == [after + timedelta(minutes=15 * k) for k in (1, 2, 3)]
    assert fires("*/15 * * * *", UTC, after + timedelta(microseconds=1), 1) == got[:1]


# DST, 2026: New York jumps 02:00 EST → 03:00 EDT on 03-08 and falls back 02:00 EDT → 01:00 EST on
# 11-01; Berlin jumps 02:00 CET → 03:00 CEST on 03-29 and falls back 03:00 CEST → 02:00 CET on 10-25.
GAPS = [
    (NEW_YORK, datetime(2026, 3, 7, 12, tzinfo=UTC), (2026, 3, 8), (2026, 3, 9)),
    (BERLIN, datetime(2026, 3, 28, 12, tzinfo=UTC), (2026, 3, 29), (2026, 3, 30)),
]
FOLDS = [
    (NEW_YORK, "30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=UTC), (2026, 11, 1), 1),
    (BERLIN, "30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), (2026, 10, 25), 2),
]


@pytest.mark.parametrize(("zone", "after", "day", "next_day"), GAPS)
def test_a_time_in_the_spring_gap_runs_once_at_the_first_minute_after_it(
    zone: ZoneInfo, after: datetime, day: tuple[int, int, int], next_day: tuple[int, int, int]
) -> None:
    at_three = datetime(*day, 3, 0, tzinfo=zone)
    assert fires("30 2 * * *", zone, after, 2) == [at_three, datetime(*next_day, 2, 30, tzinfo=zone)]
    # Two gap times land on one instant: it fires once.
    assert fires("0,30 2 * * *", zone, after, 2) == [at_three, datetime(*next_day, 2, 0, tzinfo=zone)]
    # A seconds field follows the same rule.
    assert fires("30 2 * * * 15", zone, after, 1) == [at_three + timedelta(seconds=15)]


@pytest.mark.parametrize(("zone", "expr", "after", "day", "hour"), FOLDS)
def test_a_time_repeated_at_fall_back_runs_once_at_its_first_occurrence(
    zone: ZoneInfo, expr: str, after: datetime, day: tuple[int, int, int], hour: int
) -> None:
    # fold=0: the daylight-time one. (In UTC: Python never finds a repeated wall time equal to an
    # instant of another zone.)
    first = datetime(*day, hour, 30, tzinfo=zone).astimezone(UTC)
    got = fires(expr, zone, after, 2)
    assert got == [first, first + timedelta(days=1, hours=1)]  # next day's is 25 hours later
    assert got[0].astimezone(zone).utcoffset() == timedelta(hours=-4 if zone is NEW_YORK else 2)
    # Asked from inside the repeated hour (after the first one): the next one is the next day's.
    in_second_pass = datetime(*day, hour, 40, tzinfo=zone, fold=1)
    assert fires(expr, zone, in_second_pass, 1) == [got[1]]


@pytest.mark.parametrize("zone", [NEW_YORK, BERLIN])
def test_a_wildcard_hour_runs_in_elapsed_time_through_both_changes(zone: ZoneInfo) -> None:
    fall = {
        NEW_YORK: datetime(2026, 11, 1, 4, 45, tzinfo=UTC),
        BERLIN: datetime(2026, 10, 25, 0, 45, tzinfo=UTC),
    }
    got = fires("*/30 * * * *", zone, fall[zone], 5)
    # Every half hour of real time, the repeated hour's slots included.
    assert [b - a for a, b in pairwise(got)] == [timedelta(minutes=30)] * 4
    spring = {
        NEW_YORK: datetime(2026, 3, 8, 5, 45, tzinfo=UTC),
        BERLIN: datetime(2026, 3, 28, 23, 45, tzinfo=UTC),
    }
    got = fires("0 * * * *", zone, spring[zone], 2)
    assert [f.astimezone(zone).hour for f in got] == [1, 3]  # 02:00 does not exist
    assert got[1] - got[0] == timedelta(hours=1)


@pytest.mark.parametrize(
    "expr",
    ["17 3 * * *", "*/5 * * * *", "0 9 * * 1-5", "45 */2 * * *", "0 0 L * *", "30 2 * * 0", "0 12 1 */3 *"],
)
@pytest.mark.parametrize("zone", [UTC, NEW_YORK, BERLIN])
def test_the_planned_times_are_cronsims_own(expr: str, zone: ZoneInfo) -> None:
    # The walk reuses a parsed cronsim object; it must give what a fresh CronSim gives.
    for after in (
        datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 10, 24, 12, 0, 0, 5, tzinfo=UTC),
    ):
        fresh = CronSim(expr, after.astimezone(zone))
        expected: list[datetime] = []
        while len(expected) < 30:
            fire = next(fresh).astimezone(UTC)
            if fire > (expected[-1] if expected else after):
                expected.append(fire)
        assert fires(expr, zone, after, 30) == expected
