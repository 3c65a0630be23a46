"""Templates: `${...}` references parsed, rendered with their JSON types, missing values named."""

from __future__ import annotations

from typing import Any

import pytest

from coral_server.tasks.templates import TemplateInvalid, TemplateMissing, parse, render, truthy

SCOPE = {
    "params": {"name": "x", "n": 3, "list": [{"v": "first"}], "none": None},
    "steps": {"a": {"sha": "abc", "files": ["f1"], "ok": False}},
    "event": {"topic_field": "t"},
    "run": {"id": 7, "attempt": 1, "trigger": "event", "task_id": "t-1", "topic": "push"},
    "now": "2026-11-29T19:40:00.000Z",
}


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("${params.n}", 3),  # a whole reference keeps its JSON type
        ("${steps.a.files}", ["f1"]),
        ("${params.list.0.v}", "first"),
        ("sha=${steps.a.sha}, n=${params.n}", "sha=abc, n=3"),  # inside text: as text
        ("files ${steps.a.files}", 'files ["f1"]'),
        ("${params.none}", None),
        ("x${params.none}", "xnull"),
        ("$${params.n} is ${params.n}", "${params.n} is 3"),  # $${ is a literal ${
        ("${ params.name }", "x"),
        ("run ${run.id} at ${now}", "run 7 at 2026-11-29T19:40:00.000Z"),
        ("${event.topic_field}", "t"),
        ("no template", "no template"),
    ],
)
def test_render(template: str, value: Any) -> None:
    assert render(template, SCOPE) == value


def test_render_walks_objects_and_lists() -> None:
    assert render({"a": ["${params.n}", {"b": "${steps.a.ok}"}], "c": 1}, SCOPE) == {
        "a": [3, {"b": False}],
        "c": 1,
    }


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("${steps.a.nope}", "steps.a has no 'nope'"),
        ("${params.list.1}", "params.list has no '1'"),
        ("${params.name.deeper}", "params.name has no 'deeper'"),
        ("${event.absent}", "event has no 'absent'"),
    ],
)
def test_a_missing_value_is_named(template: str, missing: str) -> None:
    with pytest.raises(TemplateMissing, match=missing):
        render(template, SCOPE)


def test_without_an_event_event_references_are_missing_not_a_crash() -> None:
    with pytest.raises(TemplateMissing, match="event has no 'x'"):
        render("${event.x}", {**SCOPE, "event": None})


def test_parse_refuses_an_unclosed_reference_and_says_where() -> None:
    with pytest.raises(TemplateInvalid, match="unclosed '\\$\\{' at character 4"):
        parse("abc ${params.x")


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (True, True),
        (False, False),
        ("${params.n}", True),
        ("${steps.a.ok}", False),
        ("${params.none}", False),
        ("${params.missing}", False),  # missing in an `if`: false, not an error
        ("${steps.a.files}", True),
        (" No ", False),
        ("off", False),
        ("0", False),
        ("yes", True),
    ],
)
def test_truthy(condition: bool | str, expected: bool) -> None:
    assert truthy(condition, SCOPE) is expected
