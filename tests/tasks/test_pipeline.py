"""Pipelines: the payload's format and templates checked field by field; webhook steps run for real
(a real SQLite store, the one delivery queue, a signed POST to a receiver on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from coral_server.clock import SystemClock
from coral_server.events import EventBus
from coral_server.jobs.agents import AGENTS, Endpoint, Secret
from coral_server.jobs.executor import AgentSetup, JobExecutor, JobSettings
from coral_server.jobs.spec import JobSpec
from coral_server.jobs.worktree import create_worktree
from coral_server.runs.model import Run
from coral_server.runs.service import Outcome, RunContext, Runs
from coral_server.scheduler.errors import TaskFieldInvalid
from coral_server.store.database import Database
from coral_server.supervision import Supervisor
from coral_server.tasks.pipeline import KIND, PipelineExecutor, parse_pipeline, pipeline_spec
from coral_server.tasks.templates import TemplateInvalid, TemplateMissing, parse, render, truthy
from coral_server.webhooks.destinations import DestinationPolicy
from coral_server.webhooks.service import Webhooks
from coral_server.webhooks.signing import WebhookSigner
from tests.jobs.clis import agent_repo, git
from tests.webhooks.conftest import NEW_SECRET, Receiver

__all__ = ["agent_repo"]  # a fixture, imported so pytest finds it


def hook(
    step_id: str, url: str = "http://127.0.0.1:9/hook", body: Any = None, **extra: Any
) -> dict[str, Any]:
    return {"id": step_id, "uses": "webhook", "with": {"url": url, "body": body or {}}, **extra}


def problems(payload: Any) -> dict[str, str]:
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_pipeline(payload)
    return dict(caught.value.problems)


# -- format -------------------------------------------------------------------------------------


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


# -- templates ----------------------------------------------------------------------------------

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


# -- running webhook steps for real -------------------------------------------------------------


@dataclass
class World:
    runs: Runs
    executor: PipelineExecutor
    receiver: Receiver

    async def run(
        self, payload: dict[str, Any], event: Any = None, topic: str | None = None
    ) -> tuple[Run, Outcome]:
        """Admit a pipeline run and execute it here (no dispatcher: the test drives it)."""
        run = await self.runs.submit(KIND, payload, trigger="manual", task_id="t-1")
        run.spec = pipeline_spec(run.spec, event, topic, "agent-1")  # as an event's run carries it
        outcome = await self.executor.execute(run, RunContext(run, self.runs))
        return run, outcome


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = SystemClock()
    database = Database(tmp_path / "coral.db", clock=clock)
    await database.open()
    webhooks = Webhooks(
        database, WebhookSigner([NEW_SECRET]), clock=clock, timeout_s=5, base_delay_s=0.01, max_delay_s=0.05
    )
    await webhooks.start()
    executor = PipelineExecutor(webhooks=webhooks, destinations=DestinationPolicy(private=True))
    runs = Runs(lambda: database.store.runs, EventBus(clock=clock), clock, {KIND: executor})
    receiver = Receiver()
    await receiver.start()
    try:
        yield World(runs, executor, receiver)
    finally:
        await receiver.stop()
        await webhooks.close()
        await database.close()


def bodies(receiver: Receiver) -> list[Any]:
    return [json.loads(r.body) for r in receiver.requests]


async def test_webhook_steps_feed_each_other_and_arrive_signed(world: World) -> None:
    url = world.receiver.url
    payload = {
        "params": {"who": "ops"},
        "pipeline": [
            hook("first", url, body={"to": "${params.who}", "kind": "${event.kind}"}, save_as="ping"),
            hook(
                "second",
                url,
                body={
                    "previous": "${steps.ping.http_status}",
                    "line": "run ${run.id} (${run.topic} from ${run.source}) at ${now}",
                },
            ),
            {**hook("skipped", url), "if": "${event.loud}"},
        ],
    }
    run, outcome = await world.run(payload, event={"kind": "push"}, topic="repo.push")
    assert (outcome.status, outcome.exit_reason, outcome.error) == ("completed", "agent_done", None)
    sent = bodies(world.receiver)
    assert sent[0] == {"to": "ops", "kind": "push"}
    assert sent[1]["previous"] == 200
    assert sent[1]["line"].startswith(f"run {run.id} (repo.push from agent-1) at 20")
    assert len(sent) == 2  # the third step's `if` was false
    assert all(not r.problems for r in world.receiver.requests)  # every one signed with our secret
    assert outcome.result is not None
    steps = outcome.result["steps"]
    assert steps["first"]["status"] == "delivered" and steps["first"]["http_status"] == 200
    assert steps["first"]["delivery_id"] == world.receiver.requests[0].headers["webhook-id"]
    assert "skipped" not in steps
    trace = outcome.result["trace"]
    assert [(t["id"], t["status"]) for t in trace] == [
        ("first", "completed"),
        ("second", "completed"),
        ("skipped", "skipped"),
    ]
    assert (await world.runs.get(run.id)).status == "running"  # the executor does not end the run


async def test_a_4xx_answer_fails_the_run_as_non_retryable(world: World) -> None:
    async def not_found(_: int) -> web.StreamResponse:
        return web.Response(status=404)

    world.receiver.respond = not_found
    url = world.receiver.url
    _, outcome = await world.run({"pipeline": [hook("a", url), hook("b", url)]})
    assert (outcome.status, outcome.retryable) == ("failed", False)
    assert outcome.error == "step 'a' (webhook): webhook failed: HTTP 404"
    assert len(world.receiver.requests) == 1  # one attempt (max_retries 0); step b never ran
    assert outcome.result is not None
    assert outcome.result["steps"]["a"]["http_status"] == 404
    assert [t["status"] for t in outcome.result["trace"]] == ["failed"]


async def test_a_5xx_answer_is_retried_as_the_step_says_then_fails_retryable(world: World) -> None:
    async def unavailable(_: int) -> web.StreamResponse:
        return web.Response(status=503)

    world.receiver.respond = unavailable
    _, outcome = await world.run({"pipeline": [hook("a", world.receiver.url, max_retries=2)]})
    assert (outcome.status, outcome.retryable) == ("failed", True)
    assert len(world.receiver.requests) == 3  # one attempt plus two retries, through the queue
    assert outcome.result is not None
    assert outcome.result["steps"]["a"]["attempts"] == 3


async def test_a_step_that_outlives_its_timeout_fails_retryable(world: World) -> None:
    async def hang(_: int) -> web.StreamResponse:
        await world.receiver.release.wait()
        return web.Response()

    world.receiver.respond = hang
    _, outcome = await world.run({"pipeline": [hook("slow", world.receiver.url, timeout_seconds=0.3)]})
    assert (outcome.status, outcome.exit_reason, outcome.retryable) == ("failed", "timeout", True)
    assert outcome.error is not None and "no answer within 0.3 s" in outcome.error


async def test_a_missing_value_at_run_time_fails_non_retryable(world: World) -> None:
    url = world.receiver.url
    _, outcome = await world.run({"pipeline": [hook("a", url, body={"x": "${event.missing}"})]}, event={})
    assert (outcome.status, outcome.retryable) == ("failed", False)
    assert outcome.error == "step 'a' (webhook): template: ${event.missing}: event has no 'missing'"
    assert world.receiver.requests == []


async def test_a_templated_url_that_is_not_http_fails_non_retryable(world: World) -> None:
    _, outcome = await world.run(
        {"params": {"u": "file:///etc/passwd"}, "pipeline": [hook("a", "${params.u}")]}
    )
    assert (outcome.status, outcome.retryable) == ("failed", False)
    assert outcome.error is not None and "not an http(s) URL after templating" in outcome.error


async def test_a_refused_destination_is_a_400_before_and_a_non_retryable_failure_after_templating(
    world: World,
) -> None:
    world.executor.destinations = DestinationPolicy(private=False)
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.executor.check_payload({"pipeline": [hook("a", world.receiver.url)]})
    assert caught.value.field == "payload.pipeline[0].with.url"
    assert "destination not allowed" in caught.value.message
    _, outcome = await world.run(
        {"params": {"u": world.receiver.url}, "pipeline": [hook("a", "${params.u}")]}
    )
    assert (outcome.status, outcome.retryable) == ("failed", False)
    assert outcome.error is not None and "destination not allowed" in outcome.error
    assert world.receiver.requests == []


async def test_a_killed_run_stops_between_steps(world: World) -> None:
    async def hang(_: int) -> web.StreamResponse:
        await world.receiver.release.wait()
        return web.Response()

    world.receiver.respond = hang
    url = world.receiver.url
    run = await world.runs.submit(KIND, {"pipeline": [hook("a", url), hook("b", url)]})
    ctx = RunContext(run, world.runs)
    ctx.kill_reason = "user_cancelled"
    ctx.killed.set()
    outcome = await world.executor.execute(run, ctx)
    assert (outcome.status, outcome.exit_reason) == ("killed", "user_cancelled")
    assert world.receiver.requests == []


async def test_steps_that_need_a_service_this_server_lacks_are_refused_when_checked(world: World) -> None:
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.executor.check_payload(
            {"pipeline": [{"id": "j", "uses": "job", "with": {"prompt": "p", "repo_path": "/r"}}]}
        )
    assert caught.value.problems == [("payload.pipeline[0].uses", "this server runs no jobs")]
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.executor.validate({"pipeline": [{"id": "s", "uses": "session", "with": {}}]})
    assert caught.value.problems == [("payload.pipeline[0].uses", "this server runs no sessions")]


# -- job steps: checked after templating, and tidied after a crash -------------------------------


def job_executor() -> JobExecutor:
    """A job executor that can check job requests and recover worktrees (it starts no CLI here)."""
    claude = AgentSetup(AGENTS["claude"], "/bin/false", Endpoint(Secret("k")))
    return JobExecutor(cast(Supervisor, None), JobSettings(agents={"claude": claude}, owner="inst"))


async def test_a_job_step_whose_templated_repository_is_not_a_repository_fails_non_retryable(
    world: World, tmp_path: Path
) -> None:
    world.executor.jobs = job_executor()
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    payload = {
        "params": {"repo": str(plain)},
        "pipeline": [{"id": "code", "uses": "job", "with": {"prompt": "p", "repo_path": "${params.repo}"}}],
    }
    await world.executor.check_payload(payload)  # templated: checked when it runs
    _, outcome = await world.run(payload)
    assert (outcome.status, outcome.retryable) == ("failed", False)
    assert outcome.error is not None
    assert outcome.error.startswith("step 'code' (job): invalid arguments after templating: with.repo_path")
    with pytest.raises(TaskFieldInvalid) as caught:  # the same, written out: a 400 when saved
        await world.executor.check_payload(
            {"pipeline": [{"id": "code", "uses": "job", "with": {"prompt": "p", "repo_path": str(plain)}}]}
        )
    assert caught.value.field == "payload.pipeline[0].with.repo_path"


async def test_recovery_keeps_the_work_of_the_job_step_a_crash_interrupted(
    agent_repo: Path, world: World
) -> None:
    jobs = job_executor()
    executor = PipelineExecutor(jobs=jobs)
    wt = await create_worktree(agent_repo, 5, owner="inst")
    (wt.path / "draft.txt").write_text("half done\n")
    job = JobSpec(prompt="p", repo_path=str(agent_repo)).model_dump()
    run = Run(
        id=5,
        kind=KIND,
        trigger="cron",
        status="running",
        spec={"pipeline": [{"id": "code", "uses": "job", "with": {}}]},
        display_name="t",
        created_at=0.0,
        result={"steps": {"before": {"ok": 1}}, "current": {"id": "code", "uses": "job", "with": job}},
    )
    result = await executor.recover(run)
    assert result is not None and "current" not in result
    assert result["steps"]["before"] == {"ok": 1}
    assert result["steps"]["code"]["worktree"]["branch"] == "coral/run-5"
    assert git(agent_repo, "show", "coral/run-5:draft.txt") == "half done\n"  # its work committed
    assert not wt.path.exists()  # and its worktree removed (cleanup_worktree defaults to true)
