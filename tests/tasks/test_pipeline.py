"""The pipeline executor: webhook steps run for real (a real SQLite store, the one delivery queue, a
signed POST to a receiver on 127.0.0.1), job steps checked after templating and recovered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from coral_server.tasks.payload import parse_pipeline
from coral_server.tasks.pipeline import KIND, PipelineExecutor, pipeline_spec
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


async def test_a_kill_during_a_step_stops_it_and_the_pipeline(world: World) -> None:
    async def hang(_: int) -> web.StreamResponse:
        await world.receiver.release.wait()
        return web.Response()

    world.receiver.respond = hang
    url = world.receiver.url
    run = await world.runs.submit(KIND, {"pipeline": [hook("a", url, timeout_seconds=60), hook("b", url)]})
    ctx = RunContext(run, world.runs)
    executing = asyncio.ensure_future(world.executor.execute(run, ctx))
    await world.receiver.changed.wait_until(lambda: len(world.receiver.requests) == 1)  # step a is waiting
    ctx.kill_reason = "server_shutdown"
    ctx.killed.set()
    async with asyncio.timeout(5):  # at once, not after the step's 60 s
        outcome = await executing
    assert (outcome.status, outcome.exit_reason, outcome.error) == (
        "failed",
        "server_shutdown",
        "the server stopped",
    )
    assert outcome.result is not None
    assert outcome.result["steps"]["a"]["status"] == "pending"  # the delivery goes on in the queue
    assert [t["id"] for t in outcome.result["trace"]] == ["a"]  # b never started
    assert len(world.receiver.requests) == 1


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


def job_executor(work_root: Path) -> JobExecutor:
    """A job executor that can check job requests and recover worktrees (it starts no CLI here: its
    supervisor has no runtime, but is a real one, as recovery reaps what a run left)."""
    claude = AgentSetup(AGENTS["claude"], "/bin/false", Endpoint(Secret("k")))
    supervisor = Supervisor({}, SystemClock(), work_root=work_root, instance="inst")
    return JobExecutor(supervisor, JobSettings(agents={"claude": claude}, owner="inst"))


async def test_a_job_step_whose_templated_repository_is_not_a_repository_fails_non_retryable(
    world: World, tmp_path: Path
) -> None:
    world.executor.jobs = job_executor(tmp_path / "work")
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
    jobs = job_executor(agent_repo.parent / "work")
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
