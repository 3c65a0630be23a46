"""The executor of a task's runs (kind "pipeline"): its steps run in order, each for real.

A run's spec is its task's payload (see `payload`), plus, for a run an event fired, `event`:
`{topic, payload, source}` (`pipeline_spec`). Each step's output is kept in the run's result under
`steps.<id>`, with `trace` (one entry per step: status, times, error), stored after every step. A
failing step fails the run: retryable (the task's `max_retries` apply) unless retrying cannot help
(arguments invalid after templating, a missing reference, a webhook's delivery that failed on a 4xx
answer, a destination refused). A kill stops the running step (its job stopped with its work kept,
its session closed) and the pipeline. After a crash, `recover` tidies the worktree of the job step
that was running, as a job's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from coral_server.jobs.executor import JobExecutor
from coral_server.jobs.repository import RepositoryInvalid, RepositoryNotAllowed
from coral_server.jobs.spec import JobSpec, JobSpecInvalid
from coral_server.runs.bodies import iso
from coral_server.runs.model import ExitReason, Run
from coral_server.runs.service import Outcome, RunContext
from coral_server.scheduler.errors import TaskFieldInvalid
from coral_server.sessions import SessionRequest, Sessions
from coral_server.sessions.errors import SessionRequestInvalid
from coral_server.sessions.report import SessionEnd, end_of
from coral_server.store import Delivery, DeliveryAttempt
from coral_server.tasks.payload import Pipeline, Step, parse_pipeline
from coral_server.tasks.templates import TemplateMissing, has_references, render, truthy
from coral_server.webhooks.destinations import DestinationPolicy

log = logging.getLogger("coral_server.tasks")

KIND = "pipeline"
DEFAULT_TIMEOUT_S = 30
WEBHOOK_KIND = "task_step"


def pipeline_spec(
    payload: Mapping[str, Any], event: Any = None, topic: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """The spec of a run of a task whose payload is `payload`, fired by `event` (its payload) on
    `topic` by `source` when it is an event's run: the payload plus `event` {topic, payload, source}."""
    spec = dict(payload)
    if topic is not None:
        spec["event"] = {"topic": topic, "payload": event, "source": source}
    return spec


class Deliveries(Protocol):
    """What a webhook step needs of the one delivery queue (`webhooks.service.Webhooks`)."""

    attempted: list[Callable[[Delivery], None]]

    async def send(
        self,
        kind: str,
        url: str,
        payload: Any,
        *,
        subject: str | None = None,
        max_attempts: int | None = None,
    ) -> Delivery: ...

    async def get(self, id: str) -> tuple[Delivery, list[DeliveryAttempt]]: ...


# -- execution ------------------------------------------------------------------------------------


@dataclass(slots=True)
class StepEnd:
    """How one step ended: its output (what later steps read), and if it failed, why."""

    output: Any
    error: str | None = None
    retryable: bool = True
    exit_reason: ExitReason = "error"
    killed: bool = False  # the run was killed (or the server stops) during the step
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None and not self.killed


@dataclass(slots=True)
class _Waiting:
    """Futures of deliveries a webhook step waits for, resolved by the queue's attempt listener."""

    waiting: dict[str, asyncio.Future[Delivery]] = field(default_factory=dict)

    def attempted(self, delivery: Delivery) -> None:
        future = self.waiting.get(delivery.id)
        if future is not None and not future.done() and delivery.status != "pending":
            future.set_result(delivery)


class PipelineExecutor:
    """The executor of runs of kind "pipeline" (a scheduled task's runs)."""

    def __init__(
        self,
        *,
        jobs: JobExecutor | None = None,
        sessions: Sessions | None = None,
        parse_session: Callable[[Any], SessionRequest] | None = None,
        webhooks: Deliveries | None = None,
        destinations: DestinationPolicy | None = None,
        session_report: Callable[[SessionEnd], dict[str, Any]] | None = None,
    ) -> None:
        self.jobs = jobs
        # How a session step's output is written: the session-end report's body (given by the API
        # layer, which owns that wire format); the bare record's fields otherwise.
        self.session_report = session_report or _fields
        self.sessions = sessions
        self.parse_session = parse_session
        self.webhooks = webhooks
        self.destinations = destinations if destinations is not None else DestinationPolicy()
        self._deliveries = _Waiting()
        if webhooks is not None:
            webhooks.attempted.append(self._deliveries.attempted)

    # -- checks ---------------------------------------------------------------------------------

    async def check_payload(self, payload: Any) -> Pipeline:
        """`parse_pipeline`, then every step whose arguments have no template checked as it will run
        (a job's repository, a session's agents, a webhook's destination): `TaskFieldInvalid`."""
        pipeline = parse_pipeline(payload)
        problems: list[tuple[str, str]] = []
        for step in pipeline.steps:
            if step.uses == "webhook":
                url = step.args["url"]
                if not has_references(url):
                    problem = await self.destinations.check(url)
                    if problem is not None:
                        problems.append((f"{step.field}.with.url", f"destination not allowed: {problem}"))
            elif not has_references(step.args):
                problems += [(f"{step.field}.{f}", m) for f, m in await self._check_args(step, step.args)]
        if problems:
            raise TaskFieldInvalid(problems)
        return pipeline

    async def _check_args(self, step: Step, args: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems of a job or session step's (rendered) arguments, named under `with.`."""
        if step.uses == "job":
            if self.jobs is None:
                return [("uses", "this server runs no jobs")]
            try:
                await self.jobs.validate(args)
            except JobSpecInvalid as exc:
                return [(f"with.{f}", m) for f, m in exc.problems]
            except (RepositoryInvalid, RepositoryNotAllowed) as exc:
                name = getattr(exc, "field", "repo_path")
                return [(f"with.{name}", getattr(exc, "message", str(exc)))]
            return []
        if step.uses == "session":
            try:
                await self._session_request(args)
            except _Invalid as exc:
                return exc.problems
        return []

    async def _session_request(self, args: dict[str, Any]) -> SessionRequest:
        if self.sessions is None or self.parse_session is None:
            raise _Invalid([("uses", "this server runs no sessions")])
        try:
            request = self.parse_session(args)
            await self.sessions.check_destinations(request)
        except SessionRequestInvalid as exc:
            raise _Invalid([(f"with.{p.path}", p.message) for p in exc.problems]) from None
        except Exception as exc:  # the API's parser says 400 with (field, message) pairs
            found = getattr(exc, "problems", None) or [("with", str(exc))]
            raise _Invalid([(str(f), str(m)) for f, m in found]) from None
        return request

    async def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A task's payload checked (`check_payload`), as it is stored: `{params, pipeline}`."""
        pipeline = await self.check_payload(spec)
        return {"params": pipeline.params, "pipeline": list(spec["pipeline"])}

    async def recover(self, run: Run) -> dict[str, Any] | None:
        """The steps done so far; a job step that was running has its worktree tidied as a job's."""
        result = dict(run.result or {})
        current = result.pop("current", None)
        if isinstance(current, dict) and current.get("uses") == "job" and self.jobs is not None:
            found = await self.jobs.recover(replace(run, spec=current["with"]))
            if found is not None:
                result.setdefault("steps", {})[current["id"]] = found
        return result or None

    # -- running --------------------------------------------------------------------------------

    async def execute(self, run: Run, ctx: RunContext) -> Outcome:
        spec = dict(run.spec)
        fired = spec.pop("event", None)  # an event's run: {topic, payload, source}
        event = fired if isinstance(fired, dict) else {}
        pipeline = parse_pipeline(spec)
        clock = ctx.service.clock
        await ctx.running()
        outputs: dict[str, Any] = {}
        scope: dict[str, Any] = {
            "params": pipeline.params,
            "steps": {},
            "event": event.get("payload"),
            "run": {
                "id": run.id,
                "attempt": run.attempt,
                "trigger": run.trigger,
                "task_id": run.task_id,
                "topic": event.get("topic"),
                "source": event.get("source"),
            },
        }
        trace: list[dict[str, Any]] = []

        def result() -> dict[str, Any]:
            return {"steps": dict(outputs), "trace": list(trace)}

        for step in pipeline.steps:
            if ctx.killed.is_set():
                return _killed(ctx, result())
            started = clock.time()
            scope["now"] = iso(started)
            entry: dict[str, Any] = {"id": step.id, "uses": step.uses, "started_at": iso(started)}
            trace.append(entry)
            if step.condition is not None and not truthy(step.condition, scope):
                entry.update(status="skipped", finished_at=iso(clock.time()))
                ctx.output(f"[pipeline] step {step.id} skipped (if is false)\n")
                continue
            ctx.output(f"[pipeline] step {step.id} ({step.uses}) started\n")
            try:
                args = render(step.args, scope)
                end = await self._run_step(step, args, run, ctx, result)
            except TemplateMissing as exc:
                end = StepEnd(None, f"template: {exc}", retryable=False)
            except SessionRequestInvalid as exc:  # the session's namespace or agents refused it
                end = StepEnd(None, str(exc), retryable=False)
            except Exception as exc:  # a bug or a store error: this step fails, the trace is kept
                log.exception("pipeline.step_failed run=%s step=%s", run.id, step.id)
                end = StepEnd(None, f"{type(exc).__name__}: {exc}")
            entry.update(
                status="completed" if end.ok else "failed",
                finished_at=iso(clock.time()),
                attempts=end.attempts,
                error=end.error,
            )
            outputs[step.id] = end.output
            scope["steps"][step.id] = end.output
            if step.save_as:
                scope["steps"][step.save_as] = end.output
            log.info(
                "pipeline.step run=%s step=%s uses=%s status=%s retryable=%s",
                run.id,
                step.id,
                step.uses,
                entry["status"],
                end.retryable,
            )
            ctx.output(
                f"[pipeline] step {step.id} "
                + ("completed\n" if end.ok else f"failed: {end.error or 'killed'}\n")
            )
            if end.killed or ctx.killed.is_set():
                return _killed(ctx, result())
            if not end.ok:
                outcome = Outcome(
                    "failed", end.exit_reason, f"step {step.id!r} ({step.uses}): {end.error}", result()
                )
                outcome.retryable = end.retryable
                return outcome
            await ctx.note(result=result())
        return Outcome("completed", "agent_done", None, result())

    async def _run_step(
        self, step: Step, args: Any, run: Run, ctx: RunContext, progress: Callable[[], dict[str, Any]]
    ) -> StepEnd:
        if step.uses == "job":
            return await self._job(step, args, run, ctx, progress)
        if step.uses == "session":
            end = StepEnd(None)
            for attempt in range(1, step.max_retries + 2):
                end = await self._session(step, args, run, ctx)
                end.attempts = attempt
                if end.ok or not end.retryable or end.killed or ctx.killed.is_set():
                    break
            return end
        return await self._webhook(step, args, run, ctx)

    async def _job(
        self, step: Step, args: Any, run: Run, ctx: RunContext, progress: Callable[[], dict[str, Any]]
    ) -> StepEnd:
        problems = await self._check_args(step, args)
        if problems:
            return StepEnd(None, _invalid(problems), retryable=False)
        assert self.jobs is not None
        job = JobSpec.model_validate(await self.jobs.validate(args))
        if step.timeout_s is not None:
            job = job.model_copy(
                update={"max_duration_s": max(1, min(job.max_duration_s, int(step.timeout_s)))}
            )
        # Stored before it starts, so a crash mid-job lets recovery tidy this worktree.
        await ctx.note(
            result={**progress(), "current": {"id": step.id, "uses": "job", "with": job.model_dump()}}
        )
        outcome = await self.jobs.execute_job(job, run, ctx)
        output = {
            "status": outcome.status,
            "exit_reason": outcome.exit_reason,
            "error": outcome.error,
            **(outcome.result or {}),
        }
        if outcome.status == "completed":
            return StepEnd(output)
        killed = ctx.killed.is_set()
        return StepEnd(output, outcome.error, exit_reason=outcome.exit_reason, killed=killed)

    async def _session(self, step: Step, args: Any, run: Run, ctx: RunContext) -> StepEnd:
        try:
            request = await self._session_request(args)
        except _Invalid as exc:
            return StepEnd(None, _invalid(exc.problems), retryable=False)
        assert self.sessions is not None
        request.annotations = {**request.annotations, "coral.run": str(run.id), "coral.step": step.id}
        session = await self.sessions.create(request)
        ctx.output(f"[pipeline] step {step.id}: session {session.namespace}/{session.id} started\n")
        timeout = step.timeout_s or DEFAULT_TIMEOUT_S
        done = await _race(session.wait_closed(), ctx, timeout)
        if not done:
            await session.close(
                "ttl" if not ctx.killed.is_set() else "deleted", f"run {run.id} step {step.id}"
            )
            await session.wait_closed()
        output = self.session_report(end_of(session))
        if ctx.killed.is_set():
            return StepEnd(output, "killed", killed=True)
        if not done:
            return StepEnd(output, f"the session did not end within {timeout:g} s", exit_reason="timeout")
        failed = [a.name for a in session.agents.values() if a.status == "failed"]
        if failed:
            return StepEnd(output, f"agents failed: {', '.join(failed)}", exit_reason="agent_error")
        return StepEnd(output)

    async def _webhook(self, step: Step, args: Any, run: Run, ctx: RunContext) -> StepEnd:
        url, body = args.get("url"), args.get("body", {})
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            return StepEnd(None, f"with.url: not an http(s) URL after templating: {url!r}", retryable=False)
        if self.webhooks is None:
            return StepEnd(None, "this server sends no webhooks", retryable=False)
        problem = await self.destinations.check(url)
        if problem is not None:
            return StepEnd(None, f"with.url: destination not allowed: {problem}", retryable=False)
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        delivery = await self.webhooks.send(
            WEBHOOK_KIND, url, body, subject=f"runs/{run.id}", max_attempts=step.max_retries + 1
        )
        self._deliveries.waiting[delivery.id] = future
        timeout = step.timeout_s or DEFAULT_TIMEOUT_S
        try:
            with contextlib.suppress(Exception):  # it may have been attempted before we listened
                stored, _ = await self.webhooks.get(delivery.id)
                if stored.status != "pending" and not future.done():
                    future.set_result(stored)
            done = await _race(asyncio.shield(future), ctx, timeout)
        finally:
            self._deliveries.waiting.pop(delivery.id, None)
        if not done:
            pending = {"delivery_id": delivery.id, "status": "pending"}
            if ctx.killed.is_set():
                return StepEnd(pending, "killed", killed=True)
            return StepEnd(
                pending,
                f"no answer within {timeout:g} s (the delivery goes on in the background)",
                exit_reason="timeout",
            )
        final = future.result()
        output = {
            "delivery_id": final.id,
            "status": final.status,
            "http_status": final.last_status,
            "attempts": final.attempts,
            "error": final.last_error,
        }
        if final.status == "delivered":
            return StepEnd(output, attempts=final.attempts)
        code = final.last_status
        client_error = code is not None and 400 <= code < 500 and code not in (408, 425, 429)
        refused = (final.last_error or "").startswith("destination not allowed")
        return StepEnd(
            output,
            f"webhook failed: {final.last_error}",
            retryable=not (client_error or refused),
            attempts=final.attempts,
        )


class _Invalid(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


def _fields(end: SessionEnd) -> dict[str, Any]:
    return {"sessionId": end.session_id, "namespace": end.namespace, "reason": end.reason}


def _invalid(problems: list[tuple[str, str]]) -> str:
    return "invalid arguments after templating: " + "; ".join(f"{f}: {m}" for f, m in problems)


async def _race(awaitable: Any, ctx: RunContext, timeout_s: float) -> bool:
    """Wait for `awaitable` unless the run is killed or `timeout_s` passes (on the run's clock);
    True when it finished."""
    work = asyncio.ensure_future(awaitable)
    killed = asyncio.ensure_future(ctx.killed.wait())
    deadline = asyncio.ensure_future(ctx.service.clock.sleep(timeout_s))
    try:
        await asyncio.wait({work, killed, deadline}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (killed, deadline):
            task.cancel()
        if not work.done():
            work.cancel()
    return work.done() and not work.cancelled()


def _killed(ctx: RunContext, result: dict[str, Any]) -> Outcome:
    if ctx.kill_reason == "user_cancelled":
        return Outcome("killed", "user_cancelled", "killed by request", result)
    outcome = Outcome("failed", ctx.kill_reason, "the server stopped", result)
    return outcome
