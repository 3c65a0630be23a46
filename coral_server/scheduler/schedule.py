"""A task's schedule: its kind, expression and IANA zone, checked into a `Schedule` that plans fire times.

Kinds (`schedule_kind`, `schedule_expr`):
- `cron`: 5 fields, an optional 6th (seconds, last), or an @-macro; see `cron.py` for the grammar
  and its DST rules (Debian cron's: gap → first minute after it, repeated hour → once, first).
- `rrule`: RFC 5545 (a DTSTART line and one RRULE); see `rrule.py` (RFC 5545's DST rules: gap →
  the same elapsed time after the gap's start, repeated hour → once, first).
- `once`: an ISO-8601 date-time. With an offset (`Z`, `+02:00`) it is that instant; without one it
  is a wall time in the task's zone, read as an rrule's is (a gap time moves forward by the gap's
  length, a repeated time is its first occurrence). It must not be in the past.
- `event`: `schedule_expr` is the topic that `POST /events` names; it has no fire times. An event
  task without a topic fires only when run by hand (`run_now`).

Everything is computed and returned in UTC (aware datetimes); the zone only says how the expression
reads. `next_fires` is the one question the planner asks; a `Schedule` keeps the fire times it
walked, so asking again from a later point continues the walk (not thread-safe: one owner).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from coral_server.scheduler.cron import CronExpr, cron_fires, parse_cron
from coral_server.scheduler.errors import ScheduleInvalid
from coral_server.scheduler.rrule import RRuleExpr, parse_rrule, rrule_fires
from coral_server.scheduler.zones import load_zone

__all__ = [
    "DEFAULT_TIMEZONE",
    "MAX_PREVIEW",
    "SCHEDULE_KINDS",
    "Preview",
    "Schedule",
    "ScheduleKind",
    "Schedules",
    "load_schedule",
    "next_fires",
    "parse_schedule",
    "preview",
]

ScheduleKind = Literal["cron", "rrule", "once", "event"]
SCHEDULE_KINDS: tuple[ScheduleKind, ...] = get_args(ScheduleKind)
DEFAULT_TIMEZONE = "UTC"
MAX_EXPR_CHARS = 2000
MAX_TOPIC_CHARS = 200
MAX_PREVIEW = 100
_EXAMPLES: dict[str, str] = {
    "cron": "'0 9 * * 1-5'",
    "rrule": "'FREQ=WEEKLY;BYDAY=MO;BYHOUR=9'",
    "once": "'2026-03-01T09:00:00+01:00'",
}
# Fires a Schedule keeps behind the last point asked about, for callers slightly behind it.
_KEEP = 16
# Fires a walk goes through to reach a later point before it starts anew from there instead.
_CATCH_UP = 8


class _Timeline:
    """The fire times of one schedule, walked on demand and kept.

    Invariant: every fire after `_start` is in `_fires` (sorted) or still to come from `_rest`.
    """

    __slots__ = ("_done", "_fires", "_rest", "_start", "_walk")

    def __init__(self, walk: Callable[[datetime], Iterator[datetime]]) -> None:
        self._walk = walk
        self._start: datetime | None = None
        self._fires: list[datetime] = []
        self._rest: Iterator[datetime] = iter(())
        self._done = True

    def after(self, after: datetime, n: int) -> list[datetime]:
        if self._start is None or after < self._start:
            self._start, self._fires, self._rest, self._done = after, [], self._walk(after), False
        fires = self._fires
        first = bisect_right(fires, after)
        behind = 0  # fires walked that are not after `after`: past a few, a new walk from it is cheaper
        while len(fires) - first < n and not self._done:
            fire = next(self._rest, None)
            if fire is None:
                self._done = True
            elif fire > after:
                fires.append(fire)
            elif (behind := behind + 1) > _CATCH_UP:
                self._start, self._rest = after, self._walk(after)
                fires.clear()
                first = 0
            else:
                fires.append(fire)
                first += 1
        found = fires[first : first + n]
        if first > 2 * _KEEP:  # forget fires well behind the point asked about
            drop = first - _KEEP
            self._start = fires[drop - 1]
            del fires[:drop]
        return found


@dataclass(frozen=True, slots=True, eq=False)
class Schedule:
    """A checked schedule. `expr` is what to store (an rrule gains its DTSTART); `at` is a once
    task's instant (UTC); `topic` an event task's topic."""

    kind: ScheduleKind
    expr: str | None
    timezone: str
    zone: ZoneInfo
    at: datetime | None = None
    topic: str | None = None
    _timeline: _Timeline | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Preview:
    """What `POST /tasks/preview` answers: the checked schedule and its next fire times (UTC)."""

    schedule: Schedule
    fires: list[datetime]

    @property
    def local_fires(self) -> list[datetime]:
        """The same instants on the wall clock of the schedule's zone."""
        return [fire.astimezone(self.schedule.zone) for fire in self.fires]


def parse_schedule(
    kind: str | None, expr: str | None, timezone: str | None = None, *, now: datetime
) -> Schedule:
    """Check a new or changed schedule as of `now` (aware); raises `ScheduleInvalid`.

    Every problem found is in `problems` as (field, message): `schedule_kind`, `timezone`,
    `schedule_expr`. A schedule that has no fire time after `now` (a once time in the past, an
    RRULE whose UNTIL or COUNT is used up) is invalid here.
    """
    _check_aware(now, "now")
    schedule = _build(kind, expr, timezone, now)
    if schedule.kind != "event" and not next_fires(schedule, now, 1):
        raise ScheduleInvalid.of("schedule_expr", _no_future(schedule, now))
    return schedule


def load_schedule(kind: str, expr: str | None, timezone: str | None) -> Schedule:
    """Rebuild a stored schedule (`Schedule.expr` as saved): the same checks, none against a time.

    A once time in the past or a finished rule loads, and simply has no more fires.
    """
    return _build(kind, expr, timezone, None)


class Schedules:
    """Stored schedules, shared: tasks with the same kind, expression and zone get one `Schedule`, so
    planning many tasks walks each distinct schedule once (its kept walk answers the others).

    Holds up to `limit` schedules, forgetting the least recently loaded. One owner (the scheduler
    service), like a `Schedule`.
    """

    def __init__(self, limit: int = 100_000) -> None:
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, not {limit}")
        self._limit = limit
        self._by_key: OrderedDict[tuple[str, str | None, str | None], Schedule] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def load(self, kind: str, expr: str | None, timezone: str | None) -> Schedule:
        """`load_schedule`, answered from the ones already loaded when it can."""
        key = (kind, expr, timezone)
        schedule = self._by_key.get(key)
        if schedule is None:
            schedule = self._by_key[key] = load_schedule(kind, expr, timezone)
            if len(self._by_key) > self._limit:
                self._by_key.popitem(last=False)
        else:
            self._by_key.move_to_end(key)
        return schedule


def next_fires(schedule: Schedule, after: datetime, n: int = 1) -> list[datetime]:
    """The next `n` fire times strictly after `after` (aware), in UTC, increasing; fewer if the
    schedule ends (none for an event task)."""
    _check_aware(after, "after")
    if n < 0:
        raise ValueError(f"n must be 0 or more, not {n}")
    if schedule._timeline is None or n == 0:
        return []
    return schedule._timeline.after(after.astimezone(UTC), n)


def preview(kind: str | None, expr: str | None, timezone: str | None, now: datetime, n: int = 5) -> Preview:
    """The next `n` (1-100) fire times of a schedule as `POST /tasks` would accept it, or raises
    `ScheduleInvalid` with what it would answer."""
    if not 1 <= n <= MAX_PREVIEW:
        raise ValueError(f"n must be 1-{MAX_PREVIEW}, not {n}")
    schedule = parse_schedule(kind, expr, timezone, now=now)
    return Preview(schedule=schedule, fires=next_fires(schedule, now, n))


def _build(kind: str | None, expr: str | None, timezone: str | None, now: datetime | None) -> Schedule:
    if kind not in SCHEDULE_KINDS:
        what = f"'{kind}' is not a schedule kind" if kind else "schedule_kind is required"
        raise ScheduleInvalid.of("schedule_kind", f"{what}: one of {', '.join(SCHEDULE_KINDS)}")
    problems: list[tuple[str, str]] = []
    name = DEFAULT_TIMEZONE if timezone is None else timezone
    zone = load_zone(name)
    if zone is None:
        problems.append(
            ("timezone", f"'{name}' is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)")
        )
        zone = ZoneInfo(DEFAULT_TIMEZONE)  # go on, to report a wrong expression too
    text = (expr or "").strip()
    schedule: Schedule | None = None
    try:
        schedule = _build_kind(kind, text, name, zone, now)
    except ScheduleInvalid as invalid:
        problems.extend(invalid.problems)
    if problems or schedule is None:
        raise ScheduleInvalid(problems)
    return schedule


def _build_kind(kind: ScheduleKind, text: str, name: str, zone: ZoneInfo, now: datetime | None) -> Schedule:
    if len(text) > MAX_EXPR_CHARS:
        raise ScheduleInvalid.of("schedule_expr", f"longer than {MAX_EXPR_CHARS} characters")
    if not text and kind != "event":
        raise ScheduleInvalid.of(
            "schedule_expr", f"schedule_expr missing: a {kind} schedule needs one, e.g. {_EXAMPLES[kind]}"
        )
    if kind == "cron":
        cron = parse_cron(text)
        return Schedule(kind, cron.text, name, zone, _timeline=_Timeline(_cron_walk(cron, zone)))
    if kind == "rrule":
        rule = parse_rrule(text, zone, now)
        return Schedule(kind, rule.text, name, zone, _timeline=_Timeline(_rrule_walk(rule)))
    if kind == "once":
        at = _parse_once(text, zone)
        return Schedule(kind, text, name, zone, at=at, _timeline=_Timeline(_once_walk(at)))
    if text and (len(text) > MAX_TOPIC_CHARS or not text.isprintable() or len(text.split()) != 1):
        raise ScheduleInvalid.of(
            "schedule_expr", f"an event topic is 1-{MAX_TOPIC_CHARS} visible characters without spaces"
        )
    return Schedule(kind, text or None, name, zone, topic=text or None)


def _cron_walk(cron: CronExpr, zone: ZoneInfo) -> Callable[[datetime], Iterator[datetime]]:
    return lambda after: cron_fires(cron, zone, after)


def _rrule_walk(rule: RRuleExpr) -> Callable[[datetime], Iterator[datetime]]:
    return lambda after: rrule_fires(rule, after)


def _once_walk(at: datetime) -> Callable[[datetime], Iterator[datetime]]:
    return lambda after: iter((at,) if at > after else ())


def _parse_once(text: str, zone: ZoneInfo) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleInvalid.of(
            "schedule_expr",
            f"'{text}' is not an ISO-8601 date-time (e.g. 2026-03-01T09:00:00+01:00, or "
            "2026-03-01T09:00 in the task's time zone)",
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)  # fold=0: RFC 5545's reading of a gap or repeated wall time
    return at.astimezone(UTC)


def _no_future(schedule: Schedule, now: datetime) -> str:
    when = now.astimezone(UTC).isoformat()
    if schedule.kind == "once":
        assert schedule.at is not None
        return f"the once time {schedule.at.isoformat()} is in the past (now is {when})"
    if schedule.kind == "rrule":
        return f"the rule has no occurrence after now ({when}): its UNTIL or COUNT is used up"
    return f"the expression has no fire time in the next 50 years (after {when})"


def _check_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC), not {moment!r}")
