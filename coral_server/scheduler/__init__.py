"""Scheduled tasks' planning core: schedules (cron, rrule, once, event), misfires and retry backoff.

Pure functions of their inputs (times come in as arguments, never from a clock): `parse_schedule` /
`load_schedule` check a schedule (`Schedules` shares stored ones), `next_fires` plans it,
`preview` answers `POST /tasks/preview`, `resolve_misfires` says what runs after a late look,
`Backoff` spaces retries.
"""

from coral_server.scheduler.backoff import (
    BACKOFF_STRATEGIES,
    DEFAULT_STRATEGY,
    Backoff,
    BackoffStrategy,
    parse_backoff,
)
from coral_server.scheduler.errors import ScheduleInvalid, TaskFieldInvalid
from coral_server.scheduler.misfire import DEFAULT_GRACE, Misfire, resolve_misfires
from coral_server.scheduler.schedule import (
    DEFAULT_TIMEZONE,
    SCHEDULE_KINDS,
    Preview,
    Schedule,
    ScheduleKind,
    Schedules,
    load_schedule,
    next_fires,
    parse_schedule,
    preview,
)

__all__ = [
    "BACKOFF_STRATEGIES",
    "DEFAULT_GRACE",
    "DEFAULT_STRATEGY",
    "DEFAULT_TIMEZONE",
    "SCHEDULE_KINDS",
    "Backoff",
    "BackoffStrategy",
    "Misfire",
    "Preview",
    "Schedule",
    "ScheduleInvalid",
    "ScheduleKind",
    "Schedules",
    "TaskFieldInvalid",
    "load_schedule",
    "next_fires",
    "parse_backoff",
    "parse_schedule",
    "preview",
    "resolve_misfires",
]
