"""RRULEs: DTSTART forms, COUNT/UNTIL, part-by-part errors, RFC 5545's DST rules, and the walk's shortcuts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from zoneinfo import ZoneInfo

import pytest
from dateutil import tz

from coral_server.scheduler.errors import ScheduleInvalid
from coral_server.scheduler.rrule import parse_rrule, rrule_fires

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 3, 1, 10, 15, 30, 123456, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)


def fires(expr: str, zone: ZoneInfo, after: datetime, n: int, now: datetime = NOW) -> list[datetime]:
    return list(islice(rrule_fires(parse_rrule(expr, zone, now), after), n))


def utc(*fields: int, zone: ZoneInfo = UTC, fold: int = 0) -> datetime:  # type: ignore[assignment]
    return datetime(*fields, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def test_a_utc_dtstart_is_honoured() -> None:
    got = fires("DTSTART:20260302T090000Z\nRRULE:FREQ=DAILY;INTERVAL=2", BERLIN, NOW, 3)
    assert got == [utc(2026, 3, 2, 9), utc(2026, 3, 4, 9), utc(2026, 3, 6, 9)]


def test_a_tzid_dtstart_is_expanded_in_its_zone_whatever_the_tasks() -> None:
    got = fires("DTSTART;TZID=Europe/Berlin:20260302T090000 RRULE:FREQ=WEEKLY;BYDAY=MO,TH", UTC, NOW, 3)
    assert got == [
        utc(2026, 3, 2, 9, zone=BERLIN),
        utc(2026, 3, 5, 9, zone=BERLIN),
        utc(2026, 3, 9, 9, zone=BERLIN),
    ]


def test_a_floating_dtstart_is_in_the_tasks_zone_and_a_date_is_its_midnight() -> None:
    assert fires("DTSTART:20260302T090000\nRRULE:FREQ=DAILY", NEW_YORK, NOW, 1) == [
        utc(2026, 3, 2, 9, zone=NEW_YORK)
    ]
    assert fires("DTSTART;VALUE=DATE:20260302\nFREQ=DAILY", NEW_YORK, NOW, 1) == [
        utc(2026, 3, 2, zone=NEW_YORK)
    ]


def test_without_dtstart_the_rule_starts_now_to_the_second_and_the_text_keeps_it() -> None:
    parsed = parse_rrule("FREQ=HOURLY;INTERVAL=6", NEW_YORK, NOW)
    assert parsed.text == "DTSTART;TZID=America/New_York:20260301T051530\nRRULE:FREQ=HOURLY;INTERVAL=6"
    assert parse_rrule("RRULE:FREQ=DAILY", UTC, NOW).text == "DTSTART:20260301T101530Z\nRRULE:FREQ=DAILY"
    # The stored text plans the same without `now`.
    again = parse_rrule(parsed.text, NEW_YORK, None)
    after = NOW + timedelta(days=40)
    assert list(islice(rrule_fires(again, after), 5)) == list(islice(rrule_fires(parsed, after), 5))
    assert list(islice(rrule_fires(parsed, NOW), 1)) == [NOW.replace(microsecond=0) + timedelta(hours=6)]
    with pytest.raises(ScheduleInvalid, match="must carry its DTSTART"):
        parse_rrule("FREQ=DAILY", UTC, None)


def test_count_and_until_end_the_rule() -> None:
    start = "DTSTART:20260302T090000Z\n"
    assert len(fires(start + "RRULE:FREQ=DAILY;COUNT=3", UTC, NOW, 10)) == 3
    assert fires(start + "RRULE:FREQ=DAILY;UNTIL=20260304T090000Z", UTC, NOW, 10)[-1] == utc(2026, 3, 4, 9)
    # A floating UNTIL is a wall time in the rule's zone; a date-only UNTIL includes its whole day.
    berlin = "DTSTART;TZID=Europe/Berlin:20260302T090000\nRRULE:FREQ=DAILY;UNTIL="
    assert fires(berlin + "20260304T085959", UTC, NOW, 10)[-1] == utc(2026, 3, 3, 9, zone=BERLIN)
    assert fires(berlin + "20260304", UTC, NOW, 10)[-1] == utc(2026, 3, 4, 9, zone=BERLIN)
    # COUNT counts from DTSTART, however late the walk starts.
    late = NOW + timedelta(days=400)
    assert fires("DTSTART:20260302T000000Z\nRRULE:FREQ=MINUTELY;COUNT=2", UTC, utc(2026, 3, 2), 5) == [
        utc(2026, 3, 2, 0, 1)
    ]
    assert fires(start + "RRULE:FREQ=DAILY;COUNT=3", UTC, late, 1) == []


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("FREQ=DAILY;BYHOUR=25", "BYHOUR: 25 is out of range 0-23"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY: 32 is out of range 1-31 or -31 to -1"),
        ("FREQ=MONTHLY;BYMONTHDAY=-0", "BYMONTHDAY: -0 is out of range"),
        ("FREQ=YEARLY;BYMONTH=13", "BYMONTH: 13 is out of range 1-12"),
        ("FREQ=YEARLY;BYWEEKNO=54", "BYWEEKNO: 54 is out of range 1-53"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL=0: a whole number from 1 to 1,000,000"),
        ("FREQ=DAILY;COUNT=100001", "COUNT=100001: a whole number from 1 to 100,000"),
        ("FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z", "COUNT and UNTIL cannot both be given"),
        ("FREQ=FORTNIGHTLY", "FREQ=FORTNIGHTLY is not one of SECONDLY, MINUTELY"),
        ("BYHOUR=9", "RRULE needs FREQ"),
        ("FREQ=DAILY;BYHOUR", "RRULE part 'BYHOUR' is not NAME=VALUE"),
        ("FREQ=DAILY;COLOR=RED", "unknown RRULE part 'COLOR'"),
        ("FREQ=DAILY;BYHOUR=1;BYHOUR=2", "RRULE part BYHOUR is given twice"),
        ("FREQ=WEEKLY;BYDAY=XX", "RRULE: invalid 'BYDAY': XX"),
        ("FREQ=DAILY;UNTIL=2026-01-01", "UNTIL=2026-01-01 is not YYYYMMDD"),
        (
            "DTSTART;TZID=Mars/Olympus:20260301T090000\nRRULE:FREQ=DAILY",
            "unknown time zone TZID=Mars/Olympus",
        ),
        ("DTSTART:2026-03-01\nRRULE:FREQ=DAILY", "DTSTART value '2026-03-01' is not a date-time"),
        ("DTSTART;TZID=Europe/Berlin:20260301T090000Z\nRRULE:FREQ=DAILY", "both a TZID and a UTC time"),
        ("DTSTART;FOO=1:20260301T090000\nRRULE:FREQ=DAILY", "DTSTART parameter 'FOO=1'"),
        ("DTSTART:18000101T000000Z\nRRULE:FREQ=DAILY", "DTSTART year 1800 is out of range 1900-2999"),
        ("DTSTART:20260301T000000Z DTSTART:20260302T000000Z FREQ=DAILY", "DTSTART is given twice"),
        ("FREQ=DAILY RRULE:FREQ=WEEKLY", "only one RRULE is supported"),
        ("FREQ=DAILY EXDATE:20260305T090000Z", "'EXDATE' is not supported"),
        ("DTSTART:20260301T000000Z", "no RRULE"),
        ("every day", "'every' is neither a DTSTART nor an RRULE line"),
    ],
)
def test_a_wrong_rule_says_which_part_and_why(expr: str, message: str) -> None:
    with pytest.raises(ScheduleInvalid) as caught:
        parse_rrule(expr, UTC, NOW)
    assert caught.value.field == "schedule_expr"
    assert message in caught.value.message


@pytest.mark.parametrize(
    "expr",
    [
        "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=SECONDLY;BYMONTH=4;BYMONTHDAY=31",
        "FREQ=YEARLY;BYYEARDAY=367",
    ],
)
def test_a_rule_no_date_can_match_is_refused_without_walking_to_year_9999(expr: str) -> None:
    started = time.process_time()
    with pytest.raises(ScheduleInvalid, match=r"no occurrence|out of range"):
        parse_rrule(expr, UTC, NOW)
    # dateutil alone takes tens of seconds on these; the check walks a few centuries at most.
    assert time.process_time() - started < 10


def test_a_rule_that_matches_rarely_is_accepted() -> None:
    got = fires("DTSTART:20260101T000000Z\nRRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO", UTC, NOW, 2)
    assert got == [utc(2044, 2, 29), utc(2072, 2, 29)]


# DST, 2026 (see test_cron.py): RFC 5545's rules, in New York and Berlin.
@pytest.mark.parametrize(
    ("zone", "dtstart", "gap_day"),
    [(NEW_YORK, "20260306T023000", (2026, 3, 8)), (BERLIN, "20260327T023000", (2026, 3, 29))],
)
def test_a_time_in_the_spring_gap_moves_forward_by_the_gaps_length(
    zone: ZoneInfo, dtstart: str, gap_day: tuple[int, int, int]
) -> None:
    got = fires(f"DTSTART:{dtstart}\nRRULE:FREQ=DAILY", zone, NOW, 4)
    gap = utc(*gap_day, 3, 30, zone=zone)  # 02:30 does not exist: 03:30, the same elapsed time
    assert gap in got
    assert gap == tz.resolve_imaginary(datetime(*gap_day, 2, 30, tzinfo=zone)).astimezone(UTC)
    next_day = (datetime(*gap_day, 2, 30, tzinfo=zone) + timedelta(days=1)).astimezone(UTC)
    assert got[got.index(gap) + 1] == next_day


@pytest.mark.parametrize(
    ("zone", "dtstart", "fold_day", "hour"),
    [(NEW_YORK, "20261030T013000", (2026, 11, 1), 1), (BERLIN, "20261023T023000", (2026, 10, 25), 2)],
)
def test_a_time_repeated_at_fall_back_happens_once_at_its_first_occurrence(
    zone: ZoneInfo, dtstart: str, fold_day: tuple[int, int, int], hour: int
) -> None:
    got = fires(f"DTSTART:{dtstart}\nRRULE:FREQ=DAILY", zone, NOW, 5)
    first, second = utc(*fold_day, hour, 30, zone=zone), utc(*fold_day, hour, 30, zone=zone, fold=1)
    assert first in got
    assert second not in got
    assert got[got.index(first) + 1] - first == timedelta(hours=25)


@pytest.mark.parametrize(
    "midnight", [datetime(2026, 3, 8, tzinfo=NEW_YORK), datetime(2026, 3, 29, tzinfo=BERLIN)], ids=str
)
def test_sub_hourly_times_inside_the_gap_come_in_order_and_once(midnight: datetime) -> None:
    # Every 25 minutes from local midnight: 02:05, 02:30, 02:55 move to 03:05, 03:30, 03:55 and
    # interleave with the real 03:20, 03:45.
    zone = midnight.tzinfo
    assert isinstance(zone, ZoneInfo)
    expr = f"DTSTART:{midnight:%Y%m%dT%H%M%S}\nRRULE:FREQ=MINUTELY;INTERVAL=25"
    got = fires(expr, zone, midnight.astimezone(UTC) + timedelta(minutes=90), 7)
    local = [f"{f.astimezone(zone):%H:%M}" for f in got]
    assert local == ["01:40", "03:05", "03:20", "03:30", "03:45", "03:55", "04:10"]


def test_a_utc_dtstart_expands_hourly_in_elapsed_time_through_fall_back() -> None:
    got = fires("DTSTART:20261101T040000Z\nRRULE:FREQ=HOURLY", NEW_YORK, utc(2026, 11, 1, 3), 4)
    assert [f"{f.astimezone(NEW_YORK):%H:%M%z}" for f in got] == [
        "00:00-0400",
        "01:00-0400",
        "01:00-0500",
        "02:00-0500",
    ]


@pytest.mark.parametrize(
    ("expr", "zone"),
    [
        ("DTSTART:20251201T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=7", UTC),
        ("DTSTART;TZID=America/New_York:20250103T013000\nRRULE:FREQ=HOURLY;INTERVAL=5;BYMINUTE=30,45", UTC),
        ("DTSTART:20250101T020000\nRRULE:FREQ=DAILY;INTERVAL=3;BYHOUR=2,14", NEW_YORK),
        ("DTSTART:20250102T093000\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR;WKST=SU", BERLIN),
        ("DTSTART:20260102T000000\nRRULE:FREQ=SECONDLY;INTERVAL=3601", BERLIN),
        ("DTSTART:20250131T080000\nRRULE:FREQ=MONTHLY;BYMONTHDAY=-1,15;BYSETPOS=1", NEW_YORK),
        ("DTSTART:20250102T080000\nRRULE:FREQ=DAILY;UNTIL=20261101T120000Z", NEW_YORK),
    ],
)
def test_a_walk_started_near_after_gives_the_walk_from_dtstart(expr: str, zone: ZoneInfo) -> None:
    parsed = parse_rrule(expr, zone, NOW)
    # The reference: dateutil's own walk from DTSTART, every instant once, in order.
    walk = takewhile(lambda occurrence: occurrence.astimezone(UTC) < END, parsed.rule)
    reference = sorted({occurrence.astimezone(UTC) for occurrence in walk})
    compared = 0
    for after in (utc(2026, 3, 8, 6, 59, 30), utc(2026, 10, 31, 23, 0, 1), utc(2026, 11, 1, 5, 45)):
        expected = [f for f in reference if f > after][:40]
        assert fires(expr, zone, after, len(expected) + 1)[: len(expected)] == expected
        compared += len(expected)
    assert compared >= 3
