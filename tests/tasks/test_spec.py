"""Task bodies checked field by field: defaults, every bad field named, partial changes, snoozes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from coral_server.scheduler import TaskFieldInvalid
from coral_server.store.tasks import Task
from coral_server.tasks import parse_changes, parse_snooze, parse_task
from tests.tasks.conftest import CREATOR, DROP, T0, body


def problems(raw: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_task(raw, now=T0, **kwargs)
    return dict(caught.value.problems)


def test_the_documented_defaults() -> None:
    spec = parse_task(body(), now=T0)
    assert (spec.priority, spec.max_retries, spec.backoff_strategy) == (5, 3, "exponential_jitter")
    assert spec.schedule.timezone == "UTC" and spec.schedule.kind == "cron"
    assert (spec.dedupe_key, spec.dedupe_window_seconds, spec.concurrency_key) == (None, None, None)
    assert spec.created_by == CREATOR


def test_every_field_given() -> None:
    spec = parse_task(
        body(
            timezone="Europe/Chisinau",
            priority=1,
            max_retries=0,
            backoff_strategy="linear",
            dedupe_key="k",
            dedupe_window_seconds=60,
            concurrency_key="c",
            created_by=CREATOR.upper(),
        ),
        now=T0,
    )
    assert spec.schedule.timezone == "Europe/Chisinau" and spec.priority == 1 and spec.max_retries == 0
    assert (spec.backoff_strategy, spec.dedupe_key, spec.dedupe_window_seconds) == ("linear", "k", 60)
    assert spec.concurrency_key == "c" and spec.created_by == CREATOR  # the UUID in its canonical form


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"schedule_expr": "61 * * * *"}, "schedule_expr", "minute"),
        ({"schedule_kind": "rrule", "schedule_expr": "FREQ=SOMETIMES"}, "schedule_expr", "FREQ"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"schedule_expr": DROP}, "schedule_expr", "missing"),
        ({"schedule_kind": "once", "schedule_expr": "2026-03-01T09:00:00Z"}, "schedule_expr", "past"),
        ({"schedule_kind": "weekly"}, "schedule_kind", "cron"),
        ({"priority": 0}, "priority", "1 (highest)-9"),
        ({"priority": 10}, "priority", "1 (highest)-9"),
        ({"priority": "high"}, "priority", "integer"),
        ({"priority": True}, "priority", "integer"),
        ({"max_retries": -1}, "max_retries", "0-100"),
        ({"backoff_strategy": "random"}, "backoff_strategy", "exponential_jitter"),
        ({"created_by": "agent-7"}, "created_by", "UUID"),
        ({"payload": [1]}, "payload", "object"),
        ({"payload": DROP}, "payload", "required"),
        ({"title": ""}, "title", "1-200"),
        ({"title": DROP}, "title", "required"),
        ({"description": 3}, "description", "string"),
        ({"dedupe_window_seconds": 60}, "dedupe_window_seconds", "dedupe_key"),
        ({"dedupe_key": "k", "dedupe_window_seconds": 0}, "dedupe_window_seconds", "1-"),
        ({"concurrency_key": "  "}, "concurrency_key", "blank"),
        ({"schedule_expr": 5}, "schedule_expr", "string"),
        ({"color": "blue"}, "color", "unknown field"),
    ],
)
def test_a_bad_field_is_named_with_what_is_wrong(fields: dict[str, Any], field: str, words: str) -> None:
    found = problems(body(**fields))
    assert field in found, found
    assert words in found[field]


def test_an_event_task_needs_no_expression() -> None:
    spec = parse_task(body(schedule_kind="event", schedule_expr=DROP), now=T0)
    assert spec.schedule.kind == "event" and spec.schedule.topic is None


def test_every_bad_field_at_once() -> None:
    found = problems(body(timezone="Nowhere/Land", schedule_expr="bad", priority=12, created_by="x"))
    assert set(found) == {"timezone", "schedule_expr", "priority", "created_by"}


def test_a_body_that_is_not_an_object() -> None:
    assert problems([1, 2]) == {"body": "the request body must be a JSON object"}


def stored(**extra: Any) -> Task:
    values: dict[str, Any] = {
        "id": "t1",
        "title": "nightly",
        "description": "d",
        "schedule_kind": "cron",
        "schedule_expr": "0 9 * * *",
        "timezone": "UTC",
        "payload": {"pipeline": []},
        "created_by": CREATOR,
        "created_at": 0.0,
        "updated_at": 0.0,
        "dedupe_key": "k",
    }
    values.update(extra)
    return Task(**values)


def test_a_partial_change_keeps_the_rest_and_null_clears_an_optional_field() -> None:
    spec = parse_changes({"priority": 2, "dedupe_key": None}, stored(), now=T0)
    assert spec.priority == 2 and spec.dedupe_key is None
    assert spec.title == "nightly" and spec.schedule.expr == "0 9 * * *"


def test_a_change_of_schedule_is_checked_anew() -> None:
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_changes({"timezone": "Atlantis"}, stored(), now=T0)
    assert caught.value.field == "timezone"
    # A once task whose time passed keeps loading while its schedule is not changed.
    old_once = stored(schedule_kind="once", schedule_expr=(T0 - timedelta(days=1)).isoformat())
    assert parse_changes({"title": "x"}, old_once, now=T0).title == "x"
    with pytest.raises(TaskFieldInvalid):
        parse_changes({"schedule_expr": (T0 - timedelta(hours=1)).isoformat()}, old_once, now=T0)


def test_a_change_to_event_drops_the_old_expression() -> None:
    spec = parse_changes({"schedule_kind": "event"}, stored(), now=T0)
    assert spec.schedule.kind == "event" and spec.schedule.topic is None


def test_required_fields_cannot_be_cleared() -> None:
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_changes({"title": None}, stored(), now=T0)
    assert caught.value.field == "title"


def test_snooze_is_at_most_a_week() -> None:
    assert parse_snooze(604_800, "deploy") == (604_800, "deploy")
    for bad in (604_801, 0, "10", None):
        with pytest.raises(TaskFieldInvalid) as caught:
            parse_snooze(bad)
        assert caught.value.field == "delay_seconds"
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_snooze(604_801)
    assert "week" in caught.value.message
