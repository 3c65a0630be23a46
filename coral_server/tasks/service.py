"""The tasks service: creates, changes and lists scheduled tasks, runs them by hand or on an event,
and owns the scheduler loop that fires them (see `loop`).

A task's runs are runs of kind "pipeline" (its payload, checked by that kind's executor), created
with the task's priority, concurrency key and dedupe key; the dispatcher enforces those.

Dedupe applies twice, both on purpose:
- tasks: a create with a `dedupe_key` answers the active task of the same creator with that key
  (created inside the new task's `dedupe_window_seconds`; at any age without one) instead of making
  a second one (`TaskCreated.deduplicated`), so a client that retries its POST gets one task;
- runs: a scheduled or event fire of a task with a `dedupe_key` creates no run when a run with that
  key was created inside the window (without a window: while one with the key is still active), so
  bursts of the same event or overlapping tasks run once; the skip is recorded on the task
  (`skip_count`, `last_skip_reason`). A manual `run_now` and a retry are deliberate and always run.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from coral_server.clock import Clock
from coral_server.runs.service import Runs
from coral_server.scheduler import SCHEDULE_KINDS, Schedules, TaskFieldInvalid, next_fires
from coral_server.store.runs import ACTIVE, Run, RunFilter, RunNotFound, RunStatus, TaskRunQuery
from coral_server.store.tasks import (
    TASK_STATUSES,
    Fire,
    Task,
    TaskChanged,
    TaskFilter,
    TaskRunCounts,
    TaskSource,
    TaskStatus,
    TaskStore,
)
from coral_server.tasks.errors import TaskCanceled, TaskNotFound, TaskReadOnly
from coral_server.tasks.loop import PIPELINE, TaskLoop, TaskSettings, new_run
from coral_server.tasks.planning import instant, plan_next
from coral_server.tasks.spec import TaskSpec, parse_changes, parse_snooze, parse_task

log = logging.getLogger("coral_server.tasks")

MAX_LIMIT = 200
_ATTEMPTS = 8  # compare-and-set tries before a change gives up (only under constant contention)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TaskCreated:
    """A create's answer: the task, and whether it is an existing one its dedupe rule found."""

    task: Task
    deduplicated: bool


class Tasks:
    """Scheduled tasks: their CRUD and actions; `start`/`close` run the scheduler loop."""

    def __init__(
        self,
        store: Callable[[], TaskStore],
        runs: Runs,
        clock: Clock,
        settings: TaskSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._runs = runs
        self.clock = clock
        self.settings = settings if settings is not None else TaskSettings()
        self.schedules = Schedules()
        self.loop = TaskLoop(store, runs, clock, self.schedules, self.settings, rng=rng)

    @property
    def store(self) -> TaskStore:
        return self._store()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler loop (after `Runs.start`)."""
        await self.loop.start()

    async def close(self) -> None:
        """Stop the scheduler loop (cancelled and awaited)."""
        await self.loop.close()

    # -- CRUD -------------------------------------------------------------------------------------

    async def create(self, body: object, *, source: TaskSource = "api") -> TaskCreated:
        """Create a task from a `POST /tasks` body (raises `TaskFieldInvalid` naming the field);
        `source` "file": a task loaded from a file (read-only through the API)."""
        now = self.clock.time()
        spec = parse_task(body, now=instant(now))
        payload = await self._validate_payload(spec.payload)
        task = Task(
            id=str(uuid.uuid4()),
            title=spec.title,
            description=spec.description,
            schedule_kind=spec.schedule.kind,
            schedule_expr=spec.schedule.expr,
            timezone=spec.schedule.timezone,
            payload=payload,
            created_by=spec.created_by,
            created_at=now,
            updated_at=now,
            next_fire_at=plan_next(spec.schedule, now, None),
            source=source,
        )
        _apply_rules(task, spec)
        stored, deduplicated = await self.store.insert(task)
        if deduplicated:
            log.info("task.deduplicated task=%s dedupe_key=%s", stored.id, stored.dedupe_key)
        else:
            log.info("task.created task=%s kind=%s next=%s", task.id, task.schedule_kind, task.next_fire_at)
            self.loop.wake_for(task.next_fire_at)
        return TaskCreated(stored, deduplicated)

    async def check(self, body: object) -> tuple[TaskSpec, dict[str, Any]]:
        """What `create` would make of `body`: its spec and its payload as stored, checked (raises
        `TaskFieldInvalid`); nothing is stored."""
        spec = parse_task(body, now=instant(self.clock.time()))
        return spec, await self._validate_payload(spec.payload)

    async def get(self, task_id: str) -> Task:
        task = await self.store.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    async def listing(
        self,
        status: str | None = None,
        created_by: str | None = None,
        schedule_kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching the filters, oldest first (`count` gives the total)."""
        return await self.store.listing(_filter(status, created_by, schedule_kind, limit, offset))

    async def count(
        self, status: str | None = None, created_by: str | None = None, schedule_kind: str | None = None
    ) -> int:
        return await self.store.count(_filter(status, created_by, schedule_kind, 50, 0))

    async def update(self, task_id: str, body: object, *, source: TaskSource = "api") -> Task:
        """Apply a partial `PUT` body; a changed schedule is planned anew from now. A file's task
        changes only with `source` "file" (its loader)."""

        async def change(task: Task) -> Task:
            _check_open(task, "update", source)
            now = self.clock.time()
            spec = parse_changes(body, task, now=instant(now))
            given = body if isinstance(body, dict) else {}
            payload = await self._validate_payload(spec.payload) if "payload" in given else task.payload
            replan = any(name in given for name in ("schedule_kind", "schedule_expr", "timezone"))
            task.title, task.description, task.payload = spec.title, spec.description, payload
            task.created_by = spec.created_by
            task.schedule_kind, task.schedule_expr = spec.schedule.kind, spec.schedule.expr
            task.timezone = spec.schedule.timezone
            _apply_rules(task, spec)
            if replan and task.status == "active":
                task.next_fire_at = plan_next(spec.schedule, now, task.snoozed_until)
            task.updated_at = now
            return task

        task = await self._change(task_id, change)
        log.info("task.updated task=%s next=%s", task.id, task.next_fire_at)
        self.loop.wake()
        return task

    # -- actions ----------------------------------------------------------------------------------

    async def pause(self, task_id: str, *, source: TaskSource = "api") -> Task:
        """Stop firing (runs already created go on) until `resume`."""

        async def change(task: Task) -> Task:
            _check_open(task, "pause", source)
            task.status, task.next_fire_at, task.updated_at = "paused", None, self.clock.time()
            return task

        task = await self._change(task_id, change)
        self.loop.wake()
        return task

    async def resume(self, task_id: str, *, source: TaskSource = "api") -> Task:
        """Fire again, planned from now (what was missed while paused does not run)."""

        async def change(task: Task) -> Task:
            _check_open(task, "resume", source)
            now = self.clock.time()
            if task.status == "paused":
                task.status = "active"
                task.next_fire_at = plan_next(self._schedule(task), now, task.snoozed_until)
                task.updated_at = now
            return task

        task = await self._change(task_id, change)
        self.loop.wake()
        return task

    async def cancel(self, task_id: str, *, source: TaskSource = "api") -> Task:
        """Cancel for good: no more fires, no retries; its runs still waiting to start are killed."""

        async def change(task: Task) -> Task:
            _check_open(task, "cancel", source)
            task.status, task.next_fire_at, task.updated_at = "canceled", None, self.clock.time()
            return task

        task = await self._change(task_id, change)
        for run in await self._runs.listing(RunFilter(status="pending", task_id=task.id, limit=MAX_LIMIT)):
            try:
                await self._runs.kill(run.id)
            except Exception:  # claimed and ended meanwhile: nothing to stop
                log.info("task.cancel_run_ended task=%s run=%s", task.id, run.id)
        log.info("task.canceled task=%s", task.id)
        self.loop.wake()
        return task

    async def snooze(self, task_id: str, delay_seconds: object, reason: object = None) -> Task:
        """Delay the next fire by `delay_seconds` (at most a week); see `planning` for the rule."""
        delay, text = parse_snooze(delay_seconds, reason)

        async def change(task: Task) -> Task:
            _check_open(task, "snooze")
            now = self.clock.time()
            base = task.next_fire_at if task.next_fire_at is not None else now
            task.snoozed_until, task.snooze_reason = base + delay, text
            if task.next_fire_at is not None:
                task.next_fire_at = task.snoozed_until
            task.updated_at = now
            return task

        task = await self._change(task_id, change)
        log.info("task.snoozed task=%s until=%s", task.id, task.snoozed_until)
        self.loop.wake()
        return task

    async def run_now(self, task_id: str) -> Run:
        """Run the task once now (trigger `manual`), outside its schedule; paused tasks too."""
        for _ in range(_ATTEMPTS):
            task = await self.get(task_id)
            if task.status == "canceled":
                raise TaskCanceled(task_id, "run")
            run = new_run(task, "manual", self.clock.time())
            fired = await self.store.fire(
                Fire(
                    task.id,
                    task.version,
                    run.created_at,
                    run=run,
                    dedupe=False,
                    statuses=("active", "paused"),
                )
            )
            if fired is not None and fired.run is not None:
                self._runs.admitted(fired.run)
                return fired.run
        raise TaskChanged(task_id)

    async def fire_event(self, topic: str, payload: Any, source: str | None = None) -> list[Run]:
        """Fire every active `event` task whose topic is `topic`; each run gets the event as
        `spec["event"]` ({topic, payload, source}). Returns the runs created (a task snoozed, or
        whose dedupe rule found a run standing for it, creates none: recorded on the task)."""
        started: list[Run] = []
        for task in await self.store.by_topic(topic):
            for _ in range(_ATTEMPTS):
                now = self.clock.time()
                if task.snoozed_until is not None and task.snoozed_until > now:
                    until = instant(task.snoozed_until).isoformat()
                    fire = Fire(
                        task.id, task.version, now, skip_reason=f"snoozed until {until}: event ignored"
                    )
                else:
                    run = new_run(task, "event", now)
                    run.spec["event"] = {"topic": topic, "payload": payload, "source": source}
                    fire = Fire(task.id, task.version, now, run=run, fired_for=now)
                fired = await self.store.fire(fire)
                if fired is not None:
                    if fired.run is not None:
                        self._runs.admitted(fired.run)
                        started.append(fired.run)
                    break
                refreshed = await self.store.get(task.id)  # changed meanwhile: is it still listening?
                if refreshed is None or refreshed.status != "active" or refreshed.schedule_expr != topic:
                    break
                task = refreshed
        log.info("task.event topic=%s tasks_fired=%s", topic, len(started))
        return started

    # -- views ------------------------------------------------------------------------------------

    def next_fires(self, task: Task, n: int = 5) -> list[datetime]:
        """The task's next `n` fire times (UTC): none unless active; the first is its planned one (a
        snooze included), the rest follow its schedule."""
        if task.status != "active" or task.next_fire_at is None or n < 1:
            return []
        first = task.next_fire_at
        return [instant(first), *next_fires(self._schedule(task), instant(first), n - 1)][:n]

    @staticmethod
    def ended(task: Task) -> bool:
        """An active task whose schedule has no more fires (a once task that fired): it stays active
        (its runs and `run_now` remain) but will not fire again."""
        return task.status == "active" and task.schedule_kind != "event" and task.next_fire_at is None

    async def runs(
        self, task_id: str, *, status: RunStatus | None = None, before: int | None = None, limit: int = 50
    ) -> list[Run]:
        """The task's runs (every attempt), newest first."""
        await self.get(task_id)
        return await self._runs.listing(RunFilter(status=status, task_id=task_id, before=before, limit=limit))

    async def all_runs(self, where: TaskRunQuery) -> tuple[list[Run], int]:
        """Every task's runs matching `where`, newest first, and how many match in all."""
        runs, total = await self._runs.store.task_runs(where)
        # A run this server executes: its live record (output so far...), as `Runs.get` gives it.
        return [await self._runs.get(r.id) if r.status in ACTIVE else r for r in runs], total

    async def run(self, run_id: int) -> Run:
        """One task's run (`RunNotFound` for an unknown id, or a run that is no task's: a job)."""
        run = await self._runs.get(run_id)
        if run.task_id is None:
            raise RunNotFound(run_id)
        return run

    async def run_counts(self, task_id: str) -> TaskRunCounts:
        """The task's runs per status, and its latest run."""
        await self.get(task_id)
        return await self.store.run_counts(task_id)

    # -- internals --------------------------------------------------------------------------------

    def _schedule(self, task: Task) -> Any:
        return self.schedules.load(task.schedule_kind, task.schedule_expr, task.timezone)

    async def _validate_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        executor = self._runs.executors.get(PIPELINE)
        if executor is None:
            raise TaskFieldInvalid([("payload", "this server has no pipeline executor: tasks cannot run")])
        return await executor.validate(payload)

    async def _change(self, task_id: str, change: Callable[[Task], Awaitable[Task]]) -> Task:
        """Read, change and write a task with compare-and-set (the loop may fire it meanwhile)."""
        for _ in range(_ATTEMPTS):
            task = await self.get(task_id)
            version = task.version
            changed = await change(task)
            try:
                return await self.store.save(changed, version)
            except TaskChanged:
                continue
        raise TaskChanged(task_id)


def _apply_rules(task: Task, spec: TaskSpec) -> None:
    task.priority, task.max_retries, task.backoff_strategy = (
        spec.priority,
        spec.max_retries,
        spec.backoff_strategy,
    )
    task.dedupe_key, task.dedupe_window_seconds = spec.dedupe_key, spec.dedupe_window_seconds
    task.concurrency_key = spec.concurrency_key


def _check_open(task: Task, action: str, source: TaskSource = "api") -> None:
    if task.status == "canceled":
        raise TaskCanceled(task.id, action)
    if task.source == "file" and source != "file":
        raise TaskReadOnly(task.id, action)


def _filter(
    status: str | None, created_by: str | None, schedule_kind: str | None, limit: int, offset: int
) -> TaskFilter:
    problems: list[tuple[str, str]] = []
    if status is not None and status not in TASK_STATUSES:
        problems.append(("status", f"'{status}' is not a task status: one of {', '.join(TASK_STATUSES)}"))
    if schedule_kind is not None and schedule_kind not in SCHEDULE_KINDS:
        problems.append(("schedule_kind", f"'{schedule_kind}' is not one of {', '.join(SCHEDULE_KINDS)}"))
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(("limit", f"must be 1-{MAX_LIMIT}, not {limit}"))
    if offset < 0:
        problems.append(("offset", f"must be 0 or more, not {offset}"))
    if problems:
        raise TaskFieldInvalid(problems)
    typed: TaskStatus | None = status  # type: ignore[assignment]
    return TaskFilter(typed, created_by, schedule_kind, limit, offset)
