"""RFC 5545 recurrence rules: one DTSTART and one RRULE, checked part by part, expanded by dateutil.

Accepted: `FREQ=DAILY;BYHOUR=9`, `RRULE:FREQ=…`, and either with a `DTSTART` line before it
(`DTSTART:20260301T090000Z`, `DTSTART;TZID=Europe/Berlin:20260301T090000`, a floating
`DTSTART:20260301T090000` which is in the task's zone, or `DTSTART;VALUE=DATE:20260301`), separated
by a newline or a space. The DTSTART's zone is the one the rule is expanded in; without a DTSTART
the rule starts at `now` (to the second) in the task's zone, and `RRuleExpr.text` carries that
DTSTART so a stored rule plans the same after a restart. `UNTIL` with `Z` is UTC; a floating UNTIL is
a wall time in the rule's zone, and a date-only UNTIL includes that whole day. COUNT and UNTIL cannot
both be given (RFC 5545); COUNT is at most 100,000. EXDATE, RDATE and EXRULE are not supported.

DST, as RFC 5545 says (the rule is expanded on the wall clock of the DTSTART's zone):
- a wall time inside the spring-forward gap happens at the same *elapsed* time after the gap's start
  (02:30 on a day that jumps 02:00 → 03:00 is 03:30; this is `dateutil.tz.resolve_imaginary`, and
  Python's own fold=0 reading);
- a wall time that occurs twice at fall-back happens once, at its first occurrence (daylight time);
- two occurrences that land on one instant fire once. A rule written with a UTC DTSTART (`…Z`) is
  expanded in UTC, i.e. in elapsed time (`FREQ=HOURLY` then fires every real hour).

Speed: dateutil finds the next occurrence by walking from DTSTART, so `rrule_fires` starts the walk
near `after` instead (a whole number of periods after DTSTART, which keeps INTERVAL's phase) for
WEEKLY and finer rules without COUNT; coarser rules have few periods a year.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, HOURLY, MINUTELY, SECONDLY, WEEKLY, rrule, rrulestr

from coral_server.scheduler.errors import ScheduleInvalid
from coral_server.scheduler.zones import is_utc, load_zone

__all__ = ["MAX_COUNT", "RRuleExpr", "parse_rrule", "rrule_fires"]

FIELD = "schedule_expr"
MAX_COUNT = 100_000
_FREQS = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# Numeric list parts: (low, high, may be negative: -high..-1 counts from the end).
_RANGES: dict[str, tuple[int, int, bool]] = {
    "BYSECOND": (0, 59, False),
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_PARTS = frozenset({"FREQ", "UNTIL", "COUNT", "INTERVAL", "BYDAY", "WKST", *_RANGES})
_FORMS = "DTSTART:YYYYMMDDTHHMMSS[Z], DTSTART;TZID=Area/City:YYYYMMDDTHHMMSS or DTSTART;VALUE=DATE:YYYYMMDD"
# How far a rule must have occurrences for it to count as one that fires at all.
_HORIZON_YEARS = 100
# The Gregorian calendar (dates and weekdays) repeats every 400 years.
_CYCLE_YEARS = 400
# A zone's UTC offset never jumps by more than this (tzdata's largest DST step is 2 h).
_MAX_JUMP = timedelta(hours=3)
_PERIOD = {
    WEEKLY: timedelta(weeks=1),
    DAILY: timedelta(days=1),
    HOURLY: timedelta(hours=1),
    MINUTELY: timedelta(minutes=1),
    SECONDLY: timedelta(seconds=1),
}


@dataclass(frozen=True, slots=True)
class RRuleExpr:
    """A checked rule: `text` (with its DTSTART, what to store), dateutil's `rule` (DTSTART aware)."""

    text: str
    rule: rrule
    dtstart: datetime
    freq: int
    interval: int
    count: int | None


def parse_rrule(expr: str, zone: ZoneInfo, now: datetime | None) -> RRuleExpr:
    """Check a DTSTART + RRULE in the task's `zone`; `now` starts a rule that has no DTSTART.

    Raises `ScheduleInvalid` (field `schedule_expr`) saying which part is wrong and why.
    """
    dtstart_line: str | None = None
    rule_text: str | None = None
    for token in expr.split():
        upper = token.upper()
        if upper.startswith("DTSTART"):
            if dtstart_line is not None:
                raise ScheduleInvalid.of(FIELD, "DTSTART is given twice")
            dtstart_line = token
        elif upper.startswith("RRULE:") or (":" not in token and "=" in token):
            if rule_text is not None:
                raise ScheduleInvalid.of(FIELD, "only one RRULE is supported")
            rule_text = token.split(":", 1)[1] if upper.startswith("RRULE:") else token
        elif upper.split(":", 1)[0].split(";", 1)[0] in ("EXDATE", "RDATE", "EXRULE"):
            raise ScheduleInvalid.of(
                FIELD, f"'{token.split(':', 1)[0]}' is not supported: a schedule is a DTSTART and one RRULE"
            )
        else:
            raise ScheduleInvalid.of(FIELD, f"'{token}' is neither a DTSTART nor an RRULE line")
    if rule_text is None:
        raise ScheduleInvalid.of(FIELD, "no RRULE: write e.g. FREQ=DAILY;BYHOUR=9;BYMINUTE=0")

    if dtstart_line is not None:
        dtstart = _parse_dtstart(dtstart_line, zone)
    else:
        if now is None:
            raise ScheduleInvalid.of(FIELD, "a stored rule must carry its DTSTART")
        dtstart = now.astimezone(zone).replace(microsecond=0)
        dtstart_line = _dtstart_line(dtstart)
    rule_zone = dtstart.tzinfo
    assert rule_zone is not None

    parts = _parse_parts(rule_text)
    if "UNTIL" in parts:
        parts["UNTIL"] = _until_utc(parts["UNTIL"], rule_zone)
    try:
        rule = rrulestr("RRULE:" + ";".join(f"{k}={v}" for k, v in parts.items()), dtstart=dtstart)
    except (ValueError, TypeError) as exc:
        raise ScheduleInvalid.of(FIELD, f"RRULE: {exc}") from None
    assert isinstance(rule, rrule)
    parsed = RRuleExpr(
        text=f"{dtstart_line}\nRRULE:{rule_text}",
        rule=rule,
        dtstart=dtstart,
        freq=_FREQS[::-1].index(parts["FREQ"]),  # dateutil numbers YEARLY 0 … SECONDLY 6
        interval=int(parts.get("INTERVAL", "1")),
        count=int(parts["COUNT"]) if "COUNT" in parts else None,
    )
    if not _ever_fires(parsed):
        raise ScheduleInvalid.of(
            FIELD, f"RRULE:{rule_text} has no occurrence: no date matches all of its parts"
        )
    return parsed


def rrule_fires(expr: RRuleExpr, after: datetime) -> Iterator[datetime]:
    """Every occurrence strictly after `after` (aware), in UTC, increasing, each instant once."""
    after = after.astimezone(UTC)
    zone = expr.dtstart.tzinfo
    assert zone is not None
    last = after
    fixed = is_utc(zone)
    pending: list[datetime] = []  # gap times move forward up to the gap's length: reorder them
    for raw in _started_near(expr, after):
        fire = raw.astimezone(UTC)  # fold=0: a gap time keeps the offset from before the gap
        if fixed:
            if fire > last:
                last = fire
                yield fire
            continue
        heapq.heappush(pending, fire)
        # No later occurrence can come before this bound: the fire itself unless a DST change is near.
        bound = fire if _steady(raw, zone) else fire - _MAX_JUMP
        while pending and pending[0] <= bound:
            fire = heapq.heappop(pending)
            if fire > last:
                last = fire
                yield fire
    while pending:
        fire = heapq.heappop(pending)
        if fire > last:
            last = fire
            yield fire


def _steady(raw: datetime, zone: tzinfo) -> bool:
    wall = raw.replace(tzinfo=None)
    return (wall - _MAX_JUMP).replace(tzinfo=zone).utcoffset() == (wall + _MAX_JUMP).replace(
        tzinfo=zone
    ).utcoffset()


def _started_near(expr: RRuleExpr, after: datetime) -> rrule:
    """The rule walked from a DTSTART a whole number of periods later, just before `after`.

    Same occurrences after `after`: the walk's periods line up with the original's, and the parts
    dateutil fills from DTSTART (weekday, time of day) are unchanged by whole periods. Not with
    COUNT (the count is from the first DTSTART) or for MONTHLY/YEARLY (months vary in length).
    """
    period = _PERIOD.get(expr.freq)
    if period is None or expr.count is not None:
        return expr.rule
    zone = expr.dtstart.tzinfo
    start = expr.dtstart.replace(tzinfo=None)
    step = period * expr.interval
    # Wall-clock arithmetic, as dateutil's; the margin covers a DST jump between the two clocks.
    periods = (after.astimezone(zone).replace(tzinfo=None) - _MAX_JUMP - start) // step
    if periods <= 0:
        return expr.rule
    return expr.rule.replace(dtstart=(start + periods * step).replace(tzinfo=zone))


def _ever_fires(expr: RRuleExpr) -> bool:
    """Whether the rule (without COUNT or UNTIL) has any occurrence, found without a long walk.

    dateutil walks to year 9999 before it gives up on a rule that matches nothing (BYMONTH=2;
    BYMONTHDAY=30 takes half a minute), so the check walks a copy started a whole number of 400-year
    calendar cycles later, near year 9999: same dates and weekdays, and a short walk to the end.
    """
    start = expr.dtstart.replace(tzinfo=None)
    last_start = datetime.max.year - _HORIZON_YEARS
    cycles = (last_start - start.year) // _CYCLE_YEARS
    probe = expr.rule.replace(
        dtstart=start.replace(year=start.year + cycles * _CYCLE_YEARS), until=None, count=None
    )
    return next(iter(probe), None) is not None


def _parse_parts(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        name, value = name.upper(), value.upper()
        if not eq or not value:
            raise ScheduleInvalid.of(FIELD, f"RRULE part '{item}' is not NAME=VALUE")
        if name not in _PARTS:
            raise ScheduleInvalid.of(FIELD, f"unknown RRULE part '{name}'")
        if name in parts:
            raise ScheduleInvalid.of(FIELD, f"RRULE part {name} is given twice")
        parts[name] = value
    if "FREQ" not in parts:
        raise ScheduleInvalid.of(FIELD, f"RRULE needs FREQ ({', '.join(_FREQS)})")
    if parts["FREQ"] not in _FREQS:
        raise ScheduleInvalid.of(FIELD, f"FREQ={parts['FREQ']} is not one of {', '.join(_FREQS)}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ScheduleInvalid.of(FIELD, "COUNT and UNTIL cannot both be given (RFC 5545)")
    for name, high in (("INTERVAL", 1_000_000), ("COUNT", MAX_COUNT)):
        if name in parts and not (parts[name].isdigit() and 1 <= int(parts[name]) <= high):
            raise ScheduleInvalid.of(FIELD, f"{name}={parts[name]}: a whole number from 1 to {high:,}")
    for name, (low, high, signed) in _RANGES.items():
        if name not in parts:
            continue
        for value in parts[name].split(","):
            digits = value[1:] if signed and value[:1] in "+-" else value
            number = int(digits) if digits.isdigit() else None
            span = f"{low}-{high}" + (f" or -{high} to -1" if signed else "")
            if number is None or not low <= number <= high:
                raise ScheduleInvalid.of(FIELD, f"{name}: {value} is out of range {span}")
    return parts


def _parse_dtstart(line: str, zone: ZoneInfo) -> datetime:
    head, colon, value = line.partition(":")
    if not colon or not value:
        raise ScheduleInvalid.of(FIELD, f"DTSTART needs a value: {_FORMS}")
    tzid: str | None = None
    is_date = False
    for param in head.split(";")[1:]:
        key, _, param_value = param.partition("=")
        if key.upper() == "TZID" and param_value:
            tzid = param_value
        elif key.upper() == "VALUE" and param_value.upper() in ("DATE", "DATE-TIME"):
            is_date = param_value.upper() == "DATE"
        else:
            raise ScheduleInvalid.of(FIELD, f"DTSTART parameter '{param}' is not TZID=… or VALUE=DATE")
    utc = value.upper().endswith("Z")
    try:
        if is_date:
            naive = datetime.strptime(value, "%Y%m%d")
        else:
            naive = datetime.strptime(value[:-1] if utc else value, "%Y%m%dT%H%M%S")
    except ValueError:
        raise ScheduleInvalid.of(FIELD, f"DTSTART value '{value}' is not a date-time: {_FORMS}") from None
    if not 1900 <= naive.year <= 2999:
        raise ScheduleInvalid.of(FIELD, f"DTSTART year {naive.year} is out of range 1900-2999")
    if utc and tzid is not None:
        raise ScheduleInvalid.of(FIELD, "DTSTART has both a TZID and a UTC time (Z): give one")
    if utc:
        return naive.replace(tzinfo=UTC)
    if tzid is not None:
        rule_zone = load_zone(tzid)
        if rule_zone is None:
            raise ScheduleInvalid.of(FIELD, f"DTSTART: unknown time zone TZID={tzid}")
        return naive.replace(tzinfo=rule_zone)
    return naive.replace(tzinfo=zone)


def _until_utc(value: str, zone: tzinfo) -> str:
    """UNTIL as dateutil wants it with an aware DTSTART: a UTC date-time."""
    try:
        if value.endswith("Z"):
            datetime.strptime(value[:-1], "%Y%m%dT%H%M%S")
            return value
        if len(value) == 8:  # a date: up to the end of that day
            local = datetime.strptime(value, "%Y%m%d") + timedelta(days=1, seconds=-1)
        else:
            local = datetime.strptime(value, "%Y%m%dT%H%M%S")
    except ValueError:
        raise ScheduleInvalid.of(
            FIELD, f"UNTIL={value} is not YYYYMMDD, YYYYMMDDTHHMMSS or YYYYMMDDTHHMMSSZ"
        ) from None
    return local.replace(tzinfo=zone).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _dtstart_line(dtstart: datetime) -> str:
    zone = dtstart.tzinfo
    if zone is not None and is_utc(zone):
        return f"DTSTART:{dtstart:%Y%m%dT%H%M%S}Z"
    return f"DTSTART;TZID={getattr(zone, 'key', 'UTC')}:{dtstart:%Y%m%dT%H%M%S}"
