"""Run records: what the store keeps of each run (one-time jobs and scheduled tasks' runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RunStatus = Literal["pending", "running", "waiting_input", "completed", "failed", "killed"]
RUN_STATUSES: tuple[RunStatus, ...] = ("pending", "running", "waiting_input", "completed", "failed", "killed")
ACTIVE: frozenset[RunStatus] = frozenset({"pending", "running", "waiting_input"})
FINAL: frozenset[RunStatus] = frozenset({"completed", "failed", "killed"})

# Why a run ended: the agent finished (`agent_done`) or failed (`agent_error`), it ran out of time,
# somebody killed it, it could not be prepared (`error`), or the server stopped or crashed under it.
ExitReason = Literal[
    "agent_done", "agent_error", "timeout", "user_cancelled", "error", "server_shutdown", "server_restart"
]
EXIT_REASONS: tuple[ExitReason, ...] = (
    "agent_done",
    "agent_error",
    "timeout",
    "user_cancelled",
    "error",
    "server_shutdown",
    "server_restart",
)
Trigger = Literal["api", "cron", "rrule", "once", "event", "manual", "branch"]
TRIGGERS: tuple[Trigger, ...] = ("api", "cron", "rrule", "once", "event", "manual", "branch")
# Why a pending run that nobody claimed yet waits: its due time (`not_before`, a retry's backoff) is
# still ahead, its concurrency key has no free slot, or the server-wide cap has none.
WaitingReason = Literal["not_before", "concurrency_key", "capacity"]
WAITING_REASONS: tuple[WaitingReason, ...] = ("not_before", "concurrency_key", "capacity")


class RunNotFound(LookupError):
    """No run has this id."""


class RunLimitReached(Exception):
    """Admitting one more run would exceed the cap on active runs."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"concurrent run limit reached (max: {cap})")
        self.cap = cap


class RunChanged(Exception):
    """A compare-and-set update found the run in another status than expected."""

    def __init__(self, run_id: int, expected: tuple[str, ...], actual: str) -> None:
        super().__init__(f"run {run_id} is {actual}, not {' or '.join(expected)}")
        self.run_id, self.expected, self.actual = run_id, expected, actual


@dataclass(slots=True)
class Run:
    """One execution: what was asked (`spec`), how it is going, and how it ended."""

    id: int
    kind: str  # what executes it: "job" (a coding-agent CLI in a worktree)
    trigger: Trigger
    status: RunStatus
    spec: dict[str, Any]
    display_name: str
    created_at: float  # Unix seconds
    started_at: float | None = None
    finished_at: float | None = None
    exit_reason: ExitReason | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    worktree_path: str | None = None
    branch: str | None = None
    webhook_url: str | None = None
    priority: int = 5
    task_id: str | None = None
    attempt: int = 1
    owner: str | None = None  # the server that claimed it (instance:pid:start)
    auto_accepts: list[dict[str, Any]] = field(default_factory=list)
    waiting_for: str | None = None  # what it asks while waiting_input
    output: str = ""  # the tail of its terminal output (bounded), kept after it ends
    not_before: float | None = None  # not claimed before this time (Unix s): a retry's backoff
    concurrency_key: str | None = None  # runs sharing a key run at most N at a time
    dedupe_key: str | None = None  # a task's dedupe key, copied to its runs
    waiting_reason: WaitingReason | None = None  # why it is still pending (set by each claim)
    retryable: bool = True  # False: it failed in a way a retry cannot fix
    # A failed task run whose retry is not decided yet: stored with the final status, cleared in the
    # transaction that creates the retry (or decides there is none).
    retry_pending: bool = False
    retry_of: int | None = None  # the failed run this one retries

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at
        return None if end is None else round(end - self.started_at, 3)


@dataclass(frozen=True, slots=True)
class ActiveSlot:
    """What the cap and its Retry-After need of an active run (no spec, no output: a cheap read)."""

    status: RunStatus
    started_at: float | None
    max_duration_s: float | None  # the run's own time limit, when its spec has one


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What another server asked of a run the server it names (`RunStore.request_kill`,
    `request_answer`) executes: to kill it (`kill`: the reason to end it with) and/or to give it
    `answer`, the answer to the question it waits on."""

    run_id: int
    kill: ExitReason | None = None
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing returns, newest first; `before` is a keyset cursor (ids below it)."""

    status: RunStatus | None = None
    trigger: Trigger | None = None
    task_id: str | None = None
    before: int | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class TaskRunQuery:
    """Which scheduled tasks' runs `GET /runs` lists, newest first, paged by offset.

    `success`: True for completed runs, False for failed or killed ones (active runs match neither);
    runs created from `created_from` (inclusive) and before `created_before` (Unix s).
    """

    task_id: str | None = None
    success: bool | None = None
    created_from: float | None = None
    created_before: float | None = None
    limit: int = 50
    offset: int = 0


Written = Callable[[BaseException | None], None]  # told a queued write's outcome (None: committed)


class RunStore(Protocol):
    """The runs table; every method is one atomic unit of work."""

    async def admit(self, run: Run, cap: int | None) -> Run:
        """Insert `run` (its id is assigned) if fewer than `cap` runs are active (None: no cap);
        raises `RunLimitReached` otherwise. Counting and inserting are one transaction."""
        ...

    async def claim(
        self,
        owner: str,
        cap: int,
        limit: int,
        *,
        now: float | None = None,
        key_limits: Mapping[str, int] | None = None,
        default_key_limit: int = 1,
    ) -> list[Run]:
        """Take up to `limit` unclaimed pending runs for `owner`, never letting the busy (running and
        claimed) runs exceed `cap`, nor those sharing a concurrency key exceed its limit
        (`key_limits`, else `default_key_limit`); runs whose `not_before` is after `now` wait.
        Order: priority (1 first), then due time (`not_before`, else creation), then id. Those left
        pending get their `waiting_reason`. One transaction."""
        ...

    async def claim_next(
        self,
        owner: str,
        cap: int,
        limit: int,
        *,
        now: float,
        key_limits: Mapping[str, int] | None = None,
        default_key_limit: int = 1,
        known: Container[int] = (),
    ) -> tuple[list[Run | int], float | None, list[RunRequest]]:
        """`claim`, then `next_not_before(now)` of the runs left, then `take_requests(owner)`: one
        unit of work (a dispatcher's pass, one store hop). A claimed run whose id is in `known` (the
        caller holds it as it admitted it: it has not changed since, but for its claim) is answered
        by its id, not read again."""
        ...

    async def busy_owners(self) -> list[str]:
        """The servers holding runs that take a slot (claimed or started)."""
        ...

    async def take_over(self, run_id: int, dead: str, owner: str) -> Run | None:
        """Make `owner` the holder of an active run `dead` held (to end it: its server stopped); the
        run as it is now, or None when it has ended or is no longer `dead`'s."""
        ...

    async def request_kill(self, run_id: int, owner: str, reason: ExitReason) -> bool:
        """Ask `owner`, the server executing the run, to kill it (for `reason`): stored if the run
        is still active and held by `owner`; whether it was."""
        ...

    async def request_answer(self, run_id: int, owner: str, answer: str) -> bool:
        """Ask `owner`, the server executing the run, to give it `answer`: stored if the run still
        waits for input, held by `owner`, and no answer is on its way to it yet; whether it was."""
        ...

    async def next_not_before(self, now: float) -> float | None:
        """The earliest `not_before` after `now` of an unclaimed pending run (when to claim again)."""
        ...

    async def update(self, run: Run, expect: tuple[RunStatus, ...] | None = None) -> None:
        """Write every mutable field of `run` (as they are now); with `expect`, only if its stored
        status is one of those and its stored owner is `run.owner` (raises `RunChanged` otherwise)."""
        ...

    def queue_update(self, run: Run, expect: tuple[RunStatus, ...] | None = None) -> asyncio.Future[None]:
        """`update`, asked for now (the fields as they are now, in order with the other updates) and
        done with the updates asked for around it; the future says when it is committed (or why
        not). Updates asked for together are written together, and a run's update may be replaced
        by its next one before it is written."""
        ...

    def queue_write(self, run: Run, written: Written) -> None:
        """`queue_update` (unconditional) for a caller that does not wait: `written` is called on
        the event loop with None once the update is committed, or with why it is not; calls are in
        the order the updates were asked for."""
        ...

    async def get(self, run_id: int) -> Run | None: ...

    async def listing(self, where: RunFilter) -> list[Run]: ...

    async def task_runs(self, where: TaskRunQuery) -> tuple[list[Run], int]:
        """Scheduled tasks' runs matching `where` (a page, newest first) and how many match in all."""
        ...

    async def active(self, owner: str | None = None) -> list[Run]:
        """Runs not yet ended (of `owner` when given; claimed ones included)."""
        ...

    async def active_slots(self) -> list[ActiveSlot]:
        """Every run not yet ended, in brief: a count for a quick refusal at the cap, before the
        authoritative one `admit` makes."""
        ...
