"""Task records: what the store keeps of each scheduled task, and the changes the scheduler makes to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from coral_server.store.runs import Run, RunStatus

TaskStatus = Literal["active", "paused", "canceled"]
TASK_STATUSES: tuple[TaskStatus, ...] = ("active", "paused", "canceled")
# Where a task comes from: the API, or a file (a job branch's CRONS.json): file tasks are read-only.
TaskSource = Literal["api", "file"]


class TaskChanged(Exception):
    """A compare-and-set write found the task changed (or gone) since it was read."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} changed meanwhile")
        self.task_id = task_id


@dataclass(slots=True)
class Task:
    """One scheduled task: its schedule and rules, its state, and the bookkeeping of its fires.

    Times are Unix seconds. `next_fire_at` is the next time the scheduler acts on it (None: nothing
    planned: paused, canceled, an event task, or a schedule that has ended). `version` grows with
    every write, for compare-and-set.
    """

    id: str
    title: str
    description: str
    schedule_kind: str
    schedule_expr: str | None
    timezone: str
    payload: dict[str, Any]
    created_by: str
    created_at: float
    updated_at: float
    priority: int = 5
    max_retries: int = 3
    backoff_strategy: str = "exponential_jitter"
    dedupe_key: str | None = None
    dedupe_window_seconds: int | None = None
    concurrency_key: str | None = None
    status: TaskStatus = "active"
    next_fire_at: float | None = None
    snoozed_until: float | None = None
    snooze_reason: str | None = None
    source: TaskSource = "api"
    last_fire_at: float | None = None  # the schedule time the last fire stood for (or its moment)
    last_run_id: int | None = None
    fire_count: int = 0  # runs created for it (every trigger)
    skip_count: int = 0  # fires that created no run (misfire past grace, dedupe)
    last_skip_at: float | None = None
    last_skip_reason: str | None = None
    version: int = 1


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing returns, oldest first."""

    status: TaskStatus | None = None
    created_by: str | None = None
    schedule_kind: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass(slots=True)
class Fire:
    """One act of the scheduler on a task, made in one transaction with the run it creates.

    Applies only if the task is still at `expect_version` and in one of `statuses` (else the store
    answers None and nothing changes). `run` is admitted with the task's priority and keys (unless
    the task's dedupe rule finds a run that stands for it, when `dedupe`); `replan` sets
    `next_fire_at`; `fired_for` is the schedule time the fire stands for; `skip_reason` records a
    fire that runs nothing. `task`, when given, is the task as read at `expect_version` (the fire
    was decided on it): a batch of fires then reads only its tasks' versions, not their rows again.
    """

    task_id: str
    expect_version: int
    at: float
    run: Run | None = None
    dedupe: bool = True
    replan: bool = False
    next_fire_at: float | None = None
    fired_for: float | None = None
    clear_snooze: bool = False
    skip_reason: str | None = None
    statuses: tuple[TaskStatus, ...] = ("active",)
    task: Task | None = None


@dataclass(frozen=True, slots=True)
class Fired:
    """What a `Fire` did: the task as written, the run admitted, or the run that stood for it."""

    task: Task
    run: Run | None = None
    duplicate_of: Run | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What planning needs of an active timed task (a few columns, not the whole record)."""

    task_id: str
    version: int
    schedule_kind: str
    schedule_expr: str | None
    timezone: str
    next_fire_at: float | None
    snoozed_until: float | None


@dataclass(frozen=True, slots=True)
class Replan:
    """A planning correction: `next_fire_at` becomes `next_fire_at` if the task is still at `version`."""

    task_id: str
    version: int
    next_fire_at: float | None


@dataclass(frozen=True, slots=True)
class PendingRetry:
    """A failed task run whose retry is not decided yet, with its task (None: the task is gone)."""

    run: Run
    task: Task | None


@dataclass(frozen=True, slots=True)
class TaskRunCounts:
    """How many runs a task has per status, and its latest."""

    by_status: dict[RunStatus, int] = field(default_factory=dict)
    last: Run | None = None

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


class TaskStore(Protocol):
    """The tasks table (and its runs' scheduling rules); every method is one atomic unit of work."""

    async def insert(self, task: Task) -> tuple[Task, bool]:
        """Insert `task`, unless its dedupe rule finds an active task with the same `dedupe_key` and
        `created_by` (created inside its `dedupe_window_seconds`, any age without one): then that
        task and True."""
        ...

    async def insert_many(self, tasks: list[Task]) -> list[tuple[Task, bool]]:
        """`insert` each of `tasks`, all in one transaction."""
        ...

    async def get(self, task_id: str) -> Task | None: ...

    async def listing(self, where: TaskFilter) -> list[Task]: ...

    async def count(self, where: TaskFilter) -> int:
        """How many tasks match `where` (its limit and offset aside)."""
        ...

    async def save(self, task: Task, expect_version: int) -> Task:
        """Write every field of `task` if the stored one is still at `expect_version` (raises
        `TaskChanged` otherwise); its version moves on."""
        ...

    async def due(self, now: float, limit: int) -> list[Task]:
        """Active tasks whose `next_fire_at` is not after `now`, earliest first."""
        ...

    async def next_fire_at(self) -> float | None:
        """The earliest `next_fire_at` of an active task."""
        ...

    async def upcoming(self, limit: int) -> tuple[float | None, list[Task]]:
        """The earliest `next_fire_at` of an active task (as `next_fire_at`) and the active tasks
        due then (at most `limit`, by priority then id): what the scheduler fires when it wakes."""
        ...

    async def plans(self, after: str, limit: int) -> list[Plan]:
        """Active tasks with a timed schedule (not `event`), by id above `after` (a keyset cursor)."""
        ...

    async def replan(self, replans: list[Replan]) -> int:
        """Apply each of `replans` whose task is still active at its version, in one transaction;
        returns how many were applied."""
        ...

    async def by_topic(self, topic: str) -> list[Task]:
        """Active event tasks whose `schedule_expr` is `topic`, oldest first."""
        ...

    async def fire(self, fire: Fire) -> Fired | None:
        """Apply `fire` (see `Fire`); None when the task changed or left `fire.statuses`."""
        ...

    async def fire_many(self, fires: list[Fire]) -> list[Fired | None]:
        """Apply each of `fires` as `fire` does, all in one transaction (a scheduler pass)."""
        ...

    async def pending_retries(self, after: int, limit: int) -> list[PendingRetry]:
        """Failed task runs whose retry is not decided yet, by id above `after` (a keyset cursor)."""
        ...

    async def retry(self, failed_run_id: int, run: Run | None) -> Run | None:
        """Decide the retry of a failed run: admit `run` (None: no retry) and clear its pending mark,
        in one transaction; None if it was decided already."""
        ...

    async def run_counts(self, task_id: str) -> TaskRunCounts: ...
