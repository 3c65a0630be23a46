"""A task's request bodies checked field by field: `POST /tasks` (with its defaults), a partial `PUT`,
and a snooze; every bad field is reported as (field, message) in one `TaskFieldInvalid`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coral_server.scheduler import (
    DEFAULT_STRATEGY,
    BackoffStrategy,
    Schedule,
    TaskFieldInvalid,
    load_schedule,
    parse_backoff,
    parse_schedule,
)
from coral_server.store.tasks import Task

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_PRIORITY",
    "FIELDS",
    "MAX_SNOOZE_S",
    "TaskSpec",
    "parse_changes",
    "parse_snooze",
    "parse_task",
]

DEFAULT_PRIORITY = 5
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES = 100
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_KEY = 200
MAX_WINDOW_S = 366 * 24 * 3600
MAX_SNOOZE_S = 7 * 24 * 3600  # one week
MAX_REASON = 500
_SCHEDULE_FIELDS = ("schedule_kind", "schedule_expr", "timezone")
FIELDS = (
    "title",
    "description",
    "schedule_kind",
    "schedule_expr",
    "timezone",
    "payload",
    "created_by",
    "priority",
    "max_retries",
    "backoff_strategy",
    "dedupe_key",
    "dedupe_window_seconds",
    "concurrency_key",
)
_REQUIRED = ("title", "description", "schedule_kind", "payload", "created_by")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a task asks for, checked. `payload` is as sent: the pipeline executor checks it."""

    title: str
    description: str
    schedule: Schedule
    payload: dict[str, Any]
    created_by: str
    priority: int = DEFAULT_PRIORITY
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_strategy: BackoffStrategy = DEFAULT_STRATEGY
    dedupe_key: str | None = None
    dedupe_window_seconds: int | None = None
    concurrency_key: str | None = None


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def raise_any(self) -> None:
        if self.items:
            raise TaskFieldInvalid(self.items)


def parse_task(body: object, *, now: datetime) -> TaskSpec:
    """A `POST /tasks` body as a `TaskSpec` (defaults filled in), checked as of `now` (aware);
    raises `TaskFieldInvalid` listing every bad field."""
    fields = _object(body)
    problems = _Problems()
    _unknown(fields, problems)
    for name in _REQUIRED:
        if fields.get(name) is None:
            problems.add(name, f"{name} is required")
    schedule = _schedule(fields, problems, now)
    values = _fields(fields, problems)
    problems.raise_any()
    assert schedule is not None
    return TaskSpec(schedule=schedule, **values)


def parse_changes(body: object, task: Task, *, now: datetime) -> TaskSpec:
    """A partial `PUT /tasks/{id}` body applied to `task`: the fields given replace the task's (null
    clears an optional one), the rest stay. The schedule is checked anew (as of `now`) only when one
    of its fields is given."""
    fields = _object(body)
    problems = _Problems()
    _unknown(fields, problems)
    for name in _REQUIRED:
        if name in fields and fields[name] is None:
            problems.add(name, f"{name} cannot be null")
    current = {
        "title": task.title,
        "description": task.description,
        "schedule_kind": task.schedule_kind,
        "schedule_expr": task.schedule_expr,
        "timezone": task.timezone,
        "payload": task.payload,
        "created_by": task.created_by,
        "priority": task.priority,
        "max_retries": task.max_retries,
        "backoff_strategy": task.backoff_strategy,
        "dedupe_key": task.dedupe_key,
        "dedupe_window_seconds": task.dedupe_window_seconds,
        "concurrency_key": task.concurrency_key,
    }
    merged = {**current, **fields}
    schedule: Schedule | None
    if any(name in fields for name in _SCHEDULE_FIELDS):
        if "schedule_kind" in fields and "schedule_expr" not in fields and fields["schedule_kind"] == "event":
            merged["schedule_expr"] = None  # a kind changed to event keeps no stale expression as topic
        schedule = _schedule(merged, problems, now)
    else:
        schedule = load_schedule(task.schedule_kind, task.schedule_expr, task.timezone)
    values = _fields(merged, problems)
    problems.raise_any()
    assert schedule is not None
    return TaskSpec(schedule=schedule, **values)


def parse_snooze(delay_seconds: object, reason: object = None) -> tuple[int, str | None]:
    """A snooze's delay (1 s to one week) and optional reason; raises `TaskFieldInvalid`."""
    problems = _Problems()
    delay = _integer(
        delay_seconds,
        "delay_seconds",
        problems,
        low=1,
        high=MAX_SNOOZE_S,
        label="1-604800 (at most one week)",
        required=True,
    )
    text = _text(reason, "reason", problems, high=MAX_REASON, optional=True)
    problems.raise_any()
    assert delay is not None
    return delay, text


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise TaskFieldInvalid([("body", "the request body must be a JSON object")])
    return body


def _unknown(fields: Mapping[str, Any], problems: _Problems) -> None:
    for name in fields:
        if name not in FIELDS:
            problems.add(str(name), f"unknown field (a task has: {', '.join(FIELDS)})")


def _schedule(fields: Mapping[str, Any], problems: _Problems, now: datetime) -> Schedule | None:
    kind, expr, zone = (fields.get(name) for name in _SCHEDULE_FIELDS)
    typed = True
    for name, value in zip(_SCHEDULE_FIELDS, (kind, expr, zone), strict=True):
        if value is not None and not isinstance(value, str):
            problems.add(name, f"must be a string, not {_type(value)}")
            typed = False
    if not typed:
        return None
    try:
        return parse_schedule(kind, expr, zone, now=now)
    except TaskFieldInvalid as invalid:
        problems.items.extend(invalid.problems)
        return None


def _fields(fields: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    values: dict[str, Any] = {
        "title": _text(fields.get("title"), "title", problems, high=MAX_TITLE, low=1) or "",
        "description": _text(fields.get("description"), "description", problems, high=MAX_DESCRIPTION) or "",
        "payload": {},
        "created_by": "",
    }
    payload = fields.get("payload")
    if isinstance(payload, Mapping):
        values["payload"] = dict(payload)
    elif payload is not None:
        problems.add("payload", f"must be an object ({{params, pipeline: [steps]}}), not {_type(payload)}")
    created_by = fields.get("created_by")
    if created_by is not None:
        try:
            if not isinstance(created_by, str):
                raise ValueError
            values["created_by"] = str(uuid.UUID(created_by))
        except ValueError:
            problems.add("created_by", f"must be a UUID (the creating agent's id), not {created_by!r}")
    priority = _integer(fields.get("priority"), "priority", problems, low=1, high=9, label="1 (highest)-9")
    values["priority"] = DEFAULT_PRIORITY if priority is None else priority
    retries = _integer(fields.get("max_retries"), "max_retries", problems, low=0, high=MAX_RETRIES)
    values["max_retries"] = DEFAULT_MAX_RETRIES if retries is None else retries
    strategy = fields.get("backoff_strategy")
    if strategy is not None and not isinstance(strategy, str):
        problems.add("backoff_strategy", f"must be a string, not {_type(strategy)}")
    else:
        try:
            values["backoff_strategy"] = parse_backoff(strategy).strategy
        except TaskFieldInvalid as invalid:
            problems.items.extend(invalid.problems)
    values["dedupe_key"] = _text(
        fields.get("dedupe_key"), "dedupe_key", problems, high=MAX_KEY, low=1, optional=True
    )
    values["dedupe_window_seconds"] = _integer(
        fields.get("dedupe_window_seconds"), "dedupe_window_seconds", problems, low=1, high=MAX_WINDOW_S
    )
    if values["dedupe_window_seconds"] is not None and values["dedupe_key"] is None:
        problems.add("dedupe_window_seconds", "needs a dedupe_key (the window is that key's)")
    values["concurrency_key"] = _text(
        fields.get("concurrency_key"), "concurrency_key", problems, high=MAX_KEY, low=1, optional=True
    )
    return values


def _text(
    value: object, name: str, problems: _Problems, *, high: int, low: int = 0, optional: bool = False
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(name, f"must be a string, not {_type(value)}")
        return None
    if not low <= len(value) <= high:
        problems.add(name, f"must be {low}-{high} characters, not {len(value)}")
        return None
    if optional and not value.strip():
        problems.add(name, "must not be blank (omit it, or send null, for none)")
        return None
    return value


def _integer(
    value: object,
    name: str,
    problems: _Problems,
    *,
    low: int,
    high: int,
    label: str | None = None,
    required: bool = False,
) -> int | None:
    if value is None:
        if required:
            problems.add(name, f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            problems.add(name, f"must be an integer, not {_type(value)}")
            return None
    if not low <= value <= high:
        problems.add(name, f"must be {label or f'{low}-{high}'}, not {value}")
        return None
    return value


def _type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
