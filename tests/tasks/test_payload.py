"""Pipeline payloads: the format and the templates checked field by field, before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from coral_server.scheduler.errors import TaskFieldInvalid
from coral_server.tasks.payload import parse_pipeline


def hook(
    step_id: str, url: str = "http://127.0.0.1:9/hook", body: Any = None, **extra: Any
) -> dict[str, Any]:
    return {"id": step_id, "uses": "webhook", "with": {"url": url, "body": body or {}}, **extra}


def problems(payload: Any) -> dict[str, str]:
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_pipeline(payload)
    return dict(caught.value.problems)


def test_a_valid_pipeline_keeps_its_steps_in_order_with_their_defaults() -> None:
    pipeline = parse_pipeline(
        {
            "params": {"repo": "/r"},
            "pipeline": [
                {"id": "code", "uses": "job", "with": {"prompt": "p", "repo_path": "${params.repo}"}},
                hook("tell", body={"sha": "${steps.code.head_sha}"}, save_as="told", timeout_seconds=5),
                {"id": "talk", "uses": "session", "with": {}, "if": "${steps.told.status}", "max_retries": 2},
            ],
        }
    )
    assert [s.id for s in pipeline.steps] == ["code", "tell", "talk"]
    assert [s.uses for s in pipeline.steps] == ["job", "webhook", "session"]
    code, tell, talk = pipeline.steps
    assert (code.timeout_s, code.max_retries, code.save_as, code.condition) == (None, 0, None, None)
    assert (tell.timeout_s, tell.save_as) == (5.0, "told")
    assert (talk.max_retries, talk.condition) == (2, "${steps.told.status}")
    assert pipeline.params == {"repo": "/r"}


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (None, "payload", "expected an object"),
        ({"pipeline": []}, "payload.pipeline", "non-empty list"),
        ({"pipeline": [hook("a")], "extra": 1}, "payload.extra", "unknown field"),
        ({"pipeline": [hook("a")], "params": [1]}, "payload.params", "expected an object"),
        (
            {"pipeline": [hook("a"), {"id": "b", "uses": "ftp"}]},
            "payload.pipeline[1].uses",
            "unknown step type",
        ),
        ({"pipeline": [hook("a"), hook("a")]}, "payload.pipeline[1].id", "duplicate step name 'a'"),
        ({"pipeline": [hook("a"), hook("b", save_as="a")]}, "payload.pipeline[1].save_as", "already used"),
        (
            {"pipeline": [{"uses": "webhook", "with": {"url": "http://h/"}}]},
            "payload.pipeline[0].id",
            "required",
        ),
        ({"pipeline": [hook("a b")]}, "payload.pipeline[0].id", "letters, digits"),
        ({"pipeline": [hook("a", colour=1)]}, "payload.pipeline[0].colour", "unknown field"),
        ({"pipeline": [hook("a", timeout_seconds=0)]}, "payload.pipeline[0].timeout_seconds", "above 0"),
        ({"pipeline": [hook("a", timeout_seconds="5")]}, "payload.pipeline[0].timeout_seconds", "number"),
        ({"pipeline": [hook("a", max_retries=11)]}, "payload.pipeline[0].max_retries", "0 to 10"),
        ({"pipeline": [hook("a", max_retries=True)]}, "payload.pipeline[0].max_retries", "0 to 10"),
        ({"pipeline": [{**hook("a"), "if": 3}]}, "payload.pipeline[0].if", "boolean or a template"),
        ({"pipeline": [{"id": "a", "uses": "webhook", "with": []}]}, "payload.pipeline[0].with", "object"),
        ({"pipeline": [hook("a", url="ftp://h/x")]}, "payload.pipeline[0].with.url", "http(s)"),
        (
            {"pipeline": [{"id": "a", "uses": "webhook", "with": {}}]},
            "payload.pipeline[0].with.url",
            "required",
        ),
        (
            {"pipeline": [{"id": "a", "uses": "webhook", "with": {"url": "http://h/", "headers": {}}}]},
            "payload.pipeline[0].with.headers",
            "unknown field",
        ),
        (
            {"pipeline": [{"id": "a", "uses": "job", "with": {}, "max_retries": 1}]},
            "payload.pipeline[0].max_retries",
            "not retried in place",
        ),
        (
            {"pipeline": [{"id": "a", "uses": "job", "with": {}}, {"id": "b", "uses": "job", "with": {}}]},
            "payload.pipeline[1].uses",
            "at most one job step",
        ),
    ],
)
def test_every_wrong_field_is_named(payload: Any, field: str, words: str) -> None:
    found = problems(payload)
    assert field in found, found
    assert words in found[field], found


def test_every_problem_is_reported_not_only_the_first() -> None:
    found = problems({"pipeline": [{"id": "a", "uses": "mail"}, hook("a", max_retries=-1)]})
    assert set(found) == {
        "payload.pipeline[0].uses",
        "payload.pipeline[1].id",
        "payload.pipeline[1].max_retries",
    }


@pytest.mark.parametrize(
    ("step", "field", "words"),
    [
        (hook("b", body={"x": "${steps.later.v}"}), "payload.pipeline[1].with.body.x", "no earlier step"),
        (hook("b", body={"x": "${steps.b.v}"}), "payload.pipeline[1].with.body.x", "no earlier step"),
        (hook("b", body=["ok", "${params.nope}"]), "payload.pipeline[1].with.body[1]", "no 'nope'"),
        (hook("b", body={"x": "${params.n"}), "payload.pipeline[1].with.body.x", "unclosed"),
        (hook("b", body={"x": "${}"}), "payload.pipeline[1].with.body.x", "empty reference"),
        (hook("b", body={"x": "${secrets.k}"}), "payload.pipeline[1].with.body.x", "must start with"),
        (hook("b", body={"x": "${now.day}"}), "payload.pipeline[1].with.body.x", "no fields"),
        (hook("b", body={"x": "${steps}"}), "payload.pipeline[1].with.body.x", "needs a step"),
        (hook("b", body={"x": "${run.owner}"}), "payload.pipeline[1].with.body.x", "run has the fields"),
        (hook("b", body={"x": "${params.a b}"}), "payload.pipeline[1].with.body.x", "bad name"),
        ({**hook("b"), "if": "${steps.c.ok}"}, "payload.pipeline[1].if", "no earlier step"),
        (hook("b", url="${params.nope}"), "payload.pipeline[1].with.url", "no 'nope'"),
    ],
)
def test_templates_are_checked_before_anything_runs(step: dict[str, Any], field: str, words: str) -> None:
    later = hook("later")
    found = problems({"params": {"n": 1}, "pipeline": [hook("a"), step, later]})
    assert field in found, found
    assert words in found[field], found


def test_a_step_reads_earlier_steps_by_id_or_save_as_and_the_event_and_run() -> None:
    pipeline = parse_pipeline(
        {
            "pipeline": [
                hook("a", save_as="first"),
                {
                    "id": "b",
                    "uses": "webhook",
                    "with": {
                        "url": "http://h/${event.path}",
                        "body": [
                            "${steps.a.status} ${steps.first.http_status}",
                            "${run.id}",
                            "${now}",
                            "$${x}",
                        ],
                    },
                },
            ]
        }
    )
    assert len(pipeline.steps) == 2
