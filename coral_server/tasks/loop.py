"""The scheduler loop: fires due tasks and creates the retries of their failed runs.

It sleeps on the clock until the earliest `next_fire_at` in the store or a change (a create, an
update, a resume, a task run that failed) wakes it; it never polls. Each fire is one store
transaction: the run is admitted and `next_fire_at` advanced together, on the condition that the
task is still at the version the decision was made on (compare-and-set). So a restart neither
loses a fire (nothing committed: the task is still due, and the misfire rule decides) nor repeats
one (committed: the task has moved on), and two servers on one database never fire the same time
twice (the second one's compare-and-set fails).

Retries: a task run that ends failed and retryable is stored with `retry_pending` in the same
transaction as its final status; this loop decides each such run in one transaction that clears
the mark and admits the retry (attempt + 1, `not_before` = its end + the task's backoff delay), so a
crash in between loses no retry and a second decision finds nothing to do. Retries run while the
task is active; a paused task's wait for its resume; a cancelled task's are dropped; after
`max_retries` retries there are none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from coral_server.clock import Clock, wait_for_event
from coral_server.runs.service import Runs
from coral_server.scheduler import DEFAULT_GRACE, Backoff, BackoffStrategy, Schedules
from coral_server.store.base import StoreUnavailable
from coral_server.store.runs import Run, Trigger
from coral_server.store.tasks import Fire, PendingRetry, Replan, Task, TaskStore
from coral_server.tasks.planning import Decision, decide, plan_next

__all__ = ["PIPELINE", "TaskLoop", "TaskSettings", "new_run"]

log = logging.getLogger("coral_server.tasks")

PIPELINE = "pipeline"  # the run kind of a task's runs
BATCH = 500  # tasks fired per transaction; retries read per store hop
# Due tasks read per store hop; as many of the next due ones are read ahead, while the loop waits
# for their time, so that a burst's fire starts without a read.
DUE_READ = 5000
PLAN_BATCH = 5000  # tasks read per store hop while planning
# A fire this late is on time whatever the grace: the loop's own wake-up delay on a busy machine is
# not a misfire (with a grace of 0, every real fire would be skipped otherwise).
ON_TIME_S = 1.0
ERROR_PAUSE_S = 1.0  # before the next pass after the store refused one


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """The scheduler's settings: how late a fire may still run (`misfire_grace_s`; never less than
    `ON_TIME_S`), and the retry backoff's base and cap."""

    misfire_grace_s: float = DEFAULT_GRACE.total_seconds()
    retry_base_s: float = 10.0
    retry_cap_s: float = 600.0

    def __post_init__(self) -> None:
        if self.misfire_grace_s < 0:
            raise ValueError(f"misfire grace must be 0 or more, not {self.misfire_grace_s}")
        Backoff("fixed", self.retry_base_s, self.retry_cap_s)  # checks 0 < base <= cap

    def backoff(self, strategy: str) -> Backoff:
        return Backoff(cast(BackoffStrategy, strategy), self.retry_base_s, self.retry_cap_s)


def new_run(task: Task, trigger: Trigger, now: float, *, attempt: int = 1) -> Run:
    """A pending run of `task`'s payload (its priority and keys are set again from the stored task
    in the transaction that admits it)."""
    return Run(
        id=0,
        kind=PIPELINE,
        trigger=trigger,
        status="pending",
        spec=dict(task.payload),
        display_name=task.title,
        created_at=now,
        priority=task.priority,
        task_id=task.id,
        attempt=attempt,
        concurrency_key=task.concurrency_key,
        dedupe_key=task.dedupe_key,
    )


class TaskLoop:
    """Fires due tasks and decides retries; one asyncio task, started and closed by its owner."""

    def __init__(
        self,
        store: Callable[[], TaskStore],
        runs: Runs,
        clock: Clock,
        schedules: Schedules,
        settings: TaskSettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._runs = runs
        self.clock = clock
        self._schedules = schedules
        self.settings = settings
        self._rng = rng if rng is not None else random.Random()
        self._wake = asyncio.Event()
        # While waiting: the time the loop wakes at by itself (None: only when woken). While a pass
        # runs (its fires, retries and the read of the next fire time), `_passing`, and `_noted` the
        # earliest fire time of the tasks stored meanwhile (the pass's read may have missed them).
        self._until: float | None = None
        self._passing = True
        self._noted: float | None = None
        self._ahead: list[Task] = []  # the next due tasks, as the last pass read them
        self._task: asyncio.Task[None] | None = None
        runs.on_finished.append(self._run_finished)

    @property
    def store(self) -> TaskStore:
        return self._store()

    def wake(self) -> None:
        """Something changed (a task, a failed run): look again now."""
        self._wake.set()

    def wake_for(self, at: float | None) -> None:
        """A task was stored that is due at `at` (None: not planned): look again now unless the loop
        already wakes by then, so creating many tasks costs no pass each. While a pass runs, `at` is
        noted and the pass's wait ends by then (its read of the next fire time may have missed it)."""
        if at is None:
            self._wake.set()
        elif self._passing:
            self._noted = at if self._noted is None else min(self._noted, at)
        elif self._until is None or at < self._until:
            self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="coral-task-scheduler")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _run_finished(self, run: Run) -> None:
        if run.retry_pending:
            self.wake()

    async def _loop(self) -> None:
        try:
            await self.plan()
        except Exception:  # StoreUnavailable included: the plans stored stand, fires go on
            log.exception("tasks.plan_failed")
        while True:
            self._wake.clear()
            self._passing, self._noted = True, None
            until: float | None
            try:
                await self.tick()
                until, self._ahead = await self.store.upcoming(DUE_READ)
            except StoreUnavailable:  # counted and logged by the store; try again shortly
                until, self._ahead = self.clock.time() + ERROR_PAUSE_S, []
            except Exception:
                log.exception("tasks.pass_failed")
                until, self._ahead = self.clock.time() + ERROR_PAUSE_S, []
            if self._noted is not None:
                until = self._noted if until is None else min(until, self._noted)
            self._passing, self._until = False, until
            await wait_for_event(self.clock, self._wake, until)

    # -- planning ---------------------------------------------------------------------------------

    async def plan(self) -> int:
        """Check every active task's planned fire against its schedule as this server reads it (at
        start-up: time zone rules or the planner may have changed since it was stored); a plan that
        differs is corrected (compare-and-set on its version). Returns the tasks checked.

        A task that is due (or snoozed) is left to `fire_due` (the misfire rule decides it). Tasks
        sharing a schedule share its `Schedule` and its next fire: each distinct schedule is walked
        once per pass."""
        now = self.clock.time()
        checked = 0
        after = ""
        nexts: dict[tuple[str, str | None, str], float | None] = {}
        while True:
            page = await self.store.plans(after, PLAN_BATCH)
            replans: list[Replan] = []
            for item in page:
                if item.snoozed_until is not None or (
                    item.next_fire_at is not None and item.next_fire_at <= now
                ):
                    continue
                key = (item.schedule_kind, item.schedule_expr, item.timezone)
                if key in nexts:
                    planned = nexts[key]
                else:
                    try:
                        schedule = self._schedules.load(*key)
                        planned = nexts[key] = plan_next(schedule, now, None)
                    except Exception:  # a stored schedule that no longer loads: its fire disarms it
                        log.exception("task.plan_failed task=%s", item.task_id)
                        continue
                if planned != item.next_fire_at:
                    replans.append(Replan(item.task_id, item.version, planned))
            checked += len(page)
            if replans:
                applied = await self.store.replan(replans)
                log.warning("tasks.replanned count=%s", applied)
            if len(page) < PLAN_BATCH:
                return checked
            after = page[-1].task_id

    async def tick(self) -> None:
        """One pass: fire every due task (first: a fire is due at an instant, a retry waits for its
        backoff anyway), then decide the retries waiting for a decision."""
        await self.fire_due()
        await self.decide_retries()

    # -- fires ------------------------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Fire (or skip, by the misfire rule) every task due now; returns the runs created.

        Each batch of due tasks is one store transaction: their runs admitted, their next fire
        times advanced. The tasks the last pass read as the next due (`upcoming`) are fired first,
        without reading them again: a wake-up's fires cost one store hop (a task changed since is
        left alone by its compare-and-set, and the reads that follow find what is still due)."""
        now = self.clock.time()
        ahead, self._ahead = self._ahead, []
        ready = [task for task in ahead if task.next_fire_at is not None and task.next_fire_at <= now]
        created = (await self._fire_all(ready, now))[0] if ready else 0
        while True:
            due = await self.store.due(now, DUE_READ)  # many at once: a read walks the due index
            fired, progress = await self._fire_all(due, now)
            created += fired
            if len(due) < DUE_READ or not progress:
                return created

    async def _fire_all(self, due: list[Task], now: float) -> tuple[int, bool]:
        """Fire `due`, `BATCH` a transaction, the transactions queued together (the store commits
        one while this loop announces the runs of the one before); the runs created, and whether
        any task was applied."""
        results = await asyncio.gather(
            *(self._fire(due[start : start + BATCH], now) for start in range(0, len(due), BATCH))
        )
        return sum(fired for fired, _ in results), any(applied for _, applied in results)

    async def _fire(self, due: list[Task], now: float) -> tuple[int, bool]:
        """Fire `due` in one transaction: the runs created, and whether any task was applied."""
        decided: dict[tuple[str, str | None, str, float | None, float | None], Decision | str] = {}
        fires = [self._decide(task, now, decided) for task in due]
        created, progress = 0, False
        for fire, fired in zip(fires, await self.store.fire_many(fires), strict=True):
            if fired is None:
                continue  # edited, paused or fired by another server meanwhile: the next read sees it
            progress = True
            if fired.run is not None:
                log.info("task.fired task=%s run=%s for=%s", fire.task_id, fired.run.id, fire.fired_for)
                self._runs.admitted(fired.run, keep=True)
                created += 1
            elif fire.skip_reason is not None or fired.duplicate_of is not None:
                log.info("task.skipped task=%s reason=%s", fire.task_id, fired.task.last_skip_reason)
        return created, progress

    def _decide(
        self,
        task: Task,
        now: float,
        decided: dict[tuple[str, str | None, str, float | None, float | None], Decision | str],
    ) -> Fire:
        """What to do with one due task: its run (if one is due) and its next fire time. Tasks of one
        schedule due at one time (and snoozed alike) share their decision (`decided`, per batch)."""
        key = (task.schedule_kind, task.schedule_expr, task.timezone, task.next_fire_at, task.snoozed_until)
        decision = decided.get(key)
        if decision is None:
            try:
                schedule = self._schedules.load(task.schedule_kind, task.schedule_expr, task.timezone)
                decision = decide(task, schedule, now, max(self.settings.misfire_grace_s, ON_TIME_S))
            except Exception as exc:  # a stored schedule that no longer loads: disarm it, say why
                log.exception("task.plan_failed task=%s", task.id)
                decision = f"cannot plan: {exc}"
            decided[key] = decision
        if isinstance(decision, str):
            return Fire(task.id, task.version, now, replan=True, skip_reason=decision, task=task)
        return Fire(
            task.id,
            task.version,
            now,
            run=None if decision.fire_for is None else new_run(task, cast(Trigger, task.schedule_kind), now),
            replan=True,
            next_fire_at=decision.next_fire_at,
            fired_for=decision.fire_for,
            clear_snooze=task.snoozed_until is not None and task.snoozed_until <= now,
            skip_reason=decision.skip_reason,
            task=task,
        )

    # -- retries ----------------------------------------------------------------------------------

    async def decide_retries(self) -> int:
        """Create the retries of failed task runs (or decide there are none); returns how many."""
        created = 0
        after = 0
        while True:
            pending = await self.store.pending_retries(after, BATCH)
            for item in pending:
                created += await self._retry(item)
            if len(pending) < BATCH:
                return created
            after = pending[-1].run.id

    async def _retry(self, item: PendingRetry) -> int:
        run, task = item.run, item.task
        if task is not None and task.status == "paused":
            return 0  # decided when it resumes
        if task is None or task.status == "canceled" or not run.retryable or run.attempt > task.max_retries:
            await self.store.retry(run.id, None)
            log.info("task.retry_none run=%s attempt=%s", run.id, run.attempt)
            return 0
        now = self.clock.time()
        delay = self.settings.backoff(task.backoff_strategy).delay(run.attempt, self._rng)
        retry = Run(
            id=0,
            kind=run.kind,
            trigger=run.trigger,
            status="pending",
            spec=run.spec,
            display_name=run.display_name,
            created_at=now,
            webhook_url=run.webhook_url,
            priority=task.priority,
            task_id=task.id,
            attempt=run.attempt + 1,
            not_before=(run.finished_at if run.finished_at is not None else now) + delay,
            concurrency_key=task.concurrency_key,
            dedupe_key=task.dedupe_key,
        )
        admitted = await self.store.retry(run.id, retry)
        if admitted is None:
            return 0
        log.info(
            "task.retry task=%s run=%s of=%s attempt=%s delay_s=%.3f",
            task.id,
            admitted.id,
            run.id,
            admitted.attempt,
            delay,
        )
        self._runs.admitted(admitted, keep=True)
        return 1
