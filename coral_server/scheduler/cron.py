"""Cron expressions: 5 fields (or 6, seconds last) and @-macros, checked field by field, planned by cronsim.

Fields: 1 minute (0-59), 2 hour (0-23), 3 day of month (1-31, `L`, `LW`), 4 month (1-12, JAN-DEC),
5 day of week (0-7, SUN-SAT, `5L`, `MON#2`), and an optional 6th, second (0-59), written *last* so
fields 1-5 mean the same with or without it (croniter's order). Day of month and day of week combine
as in Debian cron: AND when either starts with `*`, else OR. Macros: `@yearly`/`@annually`,
`@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`.

cronsim parses and plans the five minute-level fields (it is the library that fires a daily job once
at a DST fall-back). A seconds field is parsed by cronsim's own field grammar too, and applied on top:
the job fires at each listed second of every minute the five fields plan. So a 6-field expression
follows exactly the same DST rules as its 5-field form (cronsim's own 6-field mode would not: it
drops the Debian rules below for them).

DST (the task's zone; Debian cron's rules, as cronsim applies them):
- An expression with a fixed minute *and* hour (`30 2 * * *`, `0 9 * * 1-5`) is planned on the wall
  clock. A time in the spring-forward gap runs once at the first minute after the gap (02:30 on a
  day that jumps 02:00 → 03:00 runs at 03:00); a time that occurs twice at fall-back runs once, at its
  first occurrence (the daylight-time one).
- An expression whose minute or hour field starts with `*` (`*/15 * * * *`, `0 * * * *`) is planned
  in elapsed time: it fires at every matching instant that exists, so slots inside the gap do not
  happen and the repeated hour's slots fire twice (they are different instants).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache

from cronsim import CronSim, CronSimError

from coral_server.scheduler.errors import ScheduleInvalid
from coral_server.scheduler.zones import is_utc

__all__ = ["MACROS", "CronExpr", "cron_fires", "parse_cron"]

FIELD = "schedule_expr"

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# (name, low, high) of each field in the order written; the 6th is the optional seconds field.
_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
    ("second", 0, 59),
)
_MONTHS = frozenset(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))
_DAYS = frozenset(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
_SHAPE = "minute hour day-of-month month day-of-week, and optionally a 6th: second"
# Any instant works for parsing: cronsim only reads the fields when it is built.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A checked cron expression: `text` as written (normalised spacing), `five` what cronsim plans,
    `seconds` the seconds of each planned minute (`(0,)` for a 5-field expression)."""

    text: str
    five: str
    seconds: tuple[int, ...]


def parse_cron(expr: str) -> CronExpr:
    """Check a cron expression; raises `ScheduleInvalid` naming the field, the value and what is wrong."""
    text = " ".join(expr.split())
    if text.startswith("@"):
        five = MACROS.get(text.lower())
        if five is None:
            known = ", ".join(MACROS)
            raise ScheduleInvalid.of(FIELD, f"unknown macro '{text}' (known: {known})")
        return CronExpr(text=text.lower(), five=five, seconds=(0,))
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise ScheduleInvalid.of(
            FIELD, f"a cron expression has 5 fields ({_SHAPE}); '{text}' has {len(parts) if text else 0}"
        )
    five = " ".join(parts[:5])
    try:
        _prototype(five, UTC)
        seconds = _seconds(parts[5]) if len(parts) == 6 else (0,)
    except CronSimError:
        for index, token in enumerate(parts):
            problem = _field_problem(index, token)
            if problem is not None:
                name = _FIELDS[index][0]
                raise ScheduleInvalid.of(FIELD, f"field {index + 1} ({name}): {problem}") from None
        # Each field is valid alone: cronsim refuses the combination (a day no listed month has).
        raise ScheduleInvalid.of(
            FIELD, f"field 3 (day of month): no month in field 4 ('{parts[3]}') has day '{parts[2]}'"
        ) from None
    return CronExpr(text=text, five=five, seconds=seconds)


def cron_fires(cron: CronExpr, zone: tzinfo, after: datetime) -> Iterator[datetime]:
    """Every fire time strictly after `after` (aware), in UTC, increasing, each instant once.

    Raises `StopIteration` inside the iterator (i.e. ends) when cronsim finds nothing for 50 years.
    """
    after = after.astimezone(UTC)
    if cron.seconds == (0,):
        yield from _minute_fires(cron.five, zone, after)
        return
    # Start from the minute that holds `after`, so its later seconds are planned too.
    start = after.replace(second=0, microsecond=0) - timedelta(seconds=1)
    for minute in _minute_fires(cron.five, zone, start):
        for second in cron.seconds:
            fire = minute + timedelta(seconds=second)
            if fire > after:
                yield fire


def _minute_fires(five: str, zone: tzinfo, after: datetime) -> Iterator[datetime]:
    # cronsim's fast path (and no DST rules) only for datetime.timezone.utc itself.
    local_zone = UTC if is_utc(zone) else zone
    last = after
    for local in _walk_from(five, local_zone, after.astimezone(local_zone)):
        fire = local.astimezone(UTC)
        # Two gap times can resolve to the same instant (`0,30 2 * * *` → 03:00), and a wall time
        # before `after` can come back when `after` is in the repeated hour: each instant once.
        if fire > last:
            last = fire
            yield fire


@lru_cache(maxsize=4096)
def _prototype(five: str, zone: tzinfo) -> CronSim:
    """cronsim's parse of `five` in `zone`, kept: parsing is half the cost of a next fire time."""
    return CronSim(five, _EPOCH.astimezone(zone))


def _walk_from(five: str, zone: tzinfo, start: datetime) -> CronSim:
    """A cronsim iterator from `start` (aware, in `zone`): a copy of the parsed prototype, set where
    `CronSim(five, start)` would set it (its fields are shared: cronsim only reads them)."""
    walk = object.__new__(CronSim)  # copy.copy, four times cheaper
    walk.__dict__.update(_prototype(five, zone).__dict__)
    walk.skip_initial_tick = False
    walk.dt = start.replace(microsecond=0)
    if walk.fixup_tz is not None:  # planned on the naive wall clock (the Debian DST rules)
        walk.dt = walk.dt.replace(tzinfo=None)
    return walk


def _seconds(token: str) -> tuple[int, ...]:
    # cronsim 2.x reads a leading seconds field with the same grammar: let it expand this one.
    return tuple(sorted(CronSim(f"{token} * * * * *", _EPOCH).seconds))


def _field_problem(index: int, token: str) -> str | None:
    """None if cronsim accepts `token` as field `index`, else what is wrong with it."""
    probe = ["*"] * 6
    probe[(index + 1) % 6] = token  # cronsim's 6-field order: second first
    try:
        CronSim(" ".join(probe), _EPOCH)
    except CronSimError:
        return _explain(index, token)
    return None


def _explain(index: int, token: str) -> str:
    """Say what cronsim refused in a field: the first item that is out of range or malformed.

    cronsim only reports "Bad <field>"; this reads the same small grammar to point at the value.
    """
    name, low, high = _FIELDS[index]
    for item in token.split(","):
        if not item:
            return f"'{token}' has an empty item"
        base, slash, step = item.partition("/")
        if slash:
            if not step.isdigit():
                return f"step '{step}' in '{item}' is not a whole number"
            if int(step) == 0:
                return f"step 0 in '{item}' (a step is at least 1)"
        if index == 2 and base.upper() in ("L", "LW"):
            continue
        if index == 4 and "#" in base:
            day, _, nth = base.partition("#")
            if not nth.isdigit() or not 1 <= int(nth) <= 5:
                return f"'{item}': the week number after # is 1-5"
            base = day
        elif index == 4 and base.upper().endswith("L") and len(base) > 1:
            base = base[:-1]
        bounds = base.split("-", 1)
        values: list[int] = []
        for bound in bounds:
            if bound == "*" and len(bounds) == 1:
                continue
            if bound.isdigit():
                value = int(bound)
                if not low <= value <= high:
                    return f"{value} is out of range {low}-{high}"
                values.append(value)
            elif (index == 3 and bound.upper() in _MONTHS) or (index == 4 and bound.upper() in _DAYS):
                continue
            else:
                return f"'{bound}' in '{item}' is not a valid {name}" + (
                    " (an empty value)" if not bound else ""
                )
        if len(values) == 2 and values[0] > values[1]:
            return f"range {values[0]}-{values[1]} goes backwards"
    return f"'{token}' is not a valid {name} field"
