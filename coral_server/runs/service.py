"""The runs service: admits runs, dispatches them under the cap, drives their state machine.

Every run goes through here whatever its trigger: it is admitted into the store (pending), claimed
by a dispatcher when the cap counted in the store allows (so a restart or a second server on the same
data dir never exceeds it), executed by the executor of its kind, and moved through its statuses.
Each transition is stored, published (on the run's topic and the server-wide feed) and, when the
run asked for one, sent as a signed status webhook through the one delivery queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from coral_server.clock import Clock, wait_for_event
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.runs.model import (
    ACTIVE,
    FINAL,
    ExitReason,
    Run,
    RunStatus,
    Trigger,
    check_transition,
)
from coral_server.store.base import StoreUnavailable
from coral_server.store.runs import (
    ActiveSlot,
    RunChanged,
    RunFilter,
    RunLimitReached,
    RunNotFound,
    RunRequest,
    RunStore,
)
from coral_server.supervision import owner_alive, server_owner

log = logging.getLogger("coral_server.runs")

WEBHOOK_KIND = "run_status"
OUTPUT_KEEP = 256 * 1024  # characters of terminal output kept per run (live and after it ends)
# How often a dispatcher looks for runs admitted by another server on the same store, and for what
# another server asked of the runs it executes (a kill, an answer): the longest these wait.
POLL_S = 2.0
# How many times a kill or an answer meant for another server's run looks again at a run that changed
# while it was being asked (it was claimed, it ended...): statuses only move forward, so this is ample.
FORWARD_TRIES = 3
# How often a server looks for runs whose server has stopped (another server on the same data dir that
# crashed): it ends them as a restart would, so that they hold no slot and no concurrency key.
WATCH_S = 5.0
# How long a run's last transition waits before it is stored again when the store refused it.
STORE_RETRY_S = 1.0
# The longest Retry-After a refusal at the cap advises (runs mostly end well before their limit).
RETRY_AFTER_MAX_S = 60


class CapReached(RunLimitReached):
    """At the cap of active runs; `retry_after_s` is when trying again is worth it."""

    def __init__(self, cap: int, retry_after_s: int) -> None:
        super().__init__(cap)
        self.retry_after_s = retry_after_s


def retry_after_s(active: list[ActiveSlot], now: float) -> int:
    """Seconds until the first started run reaches its `max_duration_s` (a slot is then sure to free),
    at most `RETRY_AFTER_MAX_S` (runs mostly end sooner), at least 1; the most without a started run."""
    waits = [
        slot.started_at + slot.max_duration_s - now
        for slot in active
        if slot.started_at is not None and slot.max_duration_s is not None
    ]
    if not waits:
        return RETRY_AFTER_MAX_S
    return max(1, min(RETRY_AFTER_MAX_S, math.ceil(min(waits))))


class RunNotActive(Exception):
    """The run has ended (or never existed): nothing to kill or answer."""

    def __init__(self, run_id: int, status: str | None) -> None:
        super().__init__(f"run {run_id} is {status or 'unknown'}")
        self.run_id, self.status = run_id, status


class RunNotWaiting(Exception):
    """Input was sent to a run that does not wait for any."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"run {run_id} is {status}, not waiting_input")
        self.run_id, self.status = run_id, status


class WebhookSender(Protocol):
    async def send(self, kind: str, url: str, payload: Any, *, subject: str | None = None) -> Any: ...


@dataclass(slots=True)
class Outcome:
    """How an executor says a run ended."""

    status: RunStatus  # completed | failed | killed
    exit_reason: ExitReason
    error: str | None = None
    result: dict[str, Any] | None = None
    retryable: bool = True  # False: a retry cannot help (a task's run then gets none)


class Executor(Protocol):
    """Executes runs of one kind (e.g. "job"): prepares, starts, watches and finishes them."""

    async def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The normalised spec, or raise a domain error naming the bad field (before admission)."""
        ...

    async def execute(self, run: Run, ctx: RunContext) -> Outcome: ...

    async def recover(self, run: Run) -> dict[str, Any] | None:
        """Tidy what a run left behind when its server died (its worktree...); the result if any."""
        ...


@dataclass(eq=False)
class RunContext:
    """What an executor may do to its run while executing it."""

    run: Run
    service: Runs
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    kill_reason: ExitReason = "user_cancelled"
    _answers: asyncio.Queue[str] | None = None  # made when the run first waits for input

    @property
    def _input(self) -> asyncio.Queue[str]:
        if self._answers is None:
            self._answers = asyncio.Queue()
        return self._answers

    async def running(self, **fields: Any) -> None:
        """The run's agent has started (or resumed after input): status running.

        Its store write is not waited for (the run is already claimed: a crash from here on ends
        it the same way) unless a status webhook must be sent: it is queued with the writes around
        it, so a run that ends at once has its start and its end written in one update, and its
        event is published once it is stored."""
        for name, value in fields.items():
            setattr(self.run, name, value)
        if self.run.started_at is None:
            self.run.started_at = self.service.clock.time()
        self.run.waiting_for = None
        if self.run.webhook_url and self.service.webhooks is not None:
            await self.service._transition(self.run, "running")
        else:
            self.service._transition_behind(self.run, "running")

    async def note(self, **fields: Any) -> None:
        """Store changed fields (worktree path, branch...) without a transition."""
        for name, value in fields.items():
            setattr(self.run, name, value)
        await self.service._save(self.run)

    def output(self, text: str) -> None:
        """Terminal output of the run: kept (bounded) and published live."""
        run = self.run
        run.output = (run.output + text)[-OUTPUT_KEEP:]
        self.service._publish(run, "run_output", {"text": text})

    async def auto_accepted(self, question: str, answer: str) -> None:
        self.run.auto_accepts.append(
            {"at": iso(self.service.clock.time()), "question": question, "answer": answer}
        )
        self.service._publish(self.run, "run_auto_accepted", {"question": question})
        await self.service._save(self.run)

    async def wait_input(self, question: str) -> str:
        """Pause the run (waiting_input) until a human answers through the API; returns the answer."""
        self.run.waiting_for = question
        await self.service._transition(self.run, "waiting_input")
        self.service._publish(self.run, "run_input_needed", {"question": question})
        answer = await self._input.get()
        await self.running()
        return answer


class Runs:
    """Admits, lists, kills and answers runs; dispatches them to their kind's executor."""

    def __init__(
        self,
        store: Callable[[], RunStore],
        events: EventBus,
        clock: Clock,
        executors: dict[str, Executor],
        *,
        cap: int = 5,
        instance: str = "default",
        webhooks: WebhookSender | None = None,
        key_limits: Mapping[str, int] | None = None,
        default_key_limit: int = 1,
    ) -> None:
        self._store = store
        self.events = events
        self.clock = clock
        self.executors = executors
        self.cap = cap
        # This server process: the instance id plus the pid and start time, so another server on the
        # same data dir can tell whether the claimer of a run is still alive.
        self.owner = server_owner(instance)
        self.instance = instance
        self.webhooks = webhooks
        # Most busy runs per concurrency key (a run's `concurrency_key`), enforced by each claim.
        self.key_limits: dict[str, int] = dict(key_limits or {})
        self.default_key_limit = default_key_limit
        # Called (synchronously) with each run this server ended, once its final status is stored.
        self.on_finished: list[Callable[[Run], None]] = []
        self._contexts: dict[int, RunContext] = {}
        self._early_kills: dict[int, ExitReason] = {}  # runs killed between their claim and execution
        # Runs whose last transition was stored behind (`_transition_behind`) and not yet
        # announced: the call that publishes its event (once stored).
        self._behind: dict[int, Callable[[], None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def store(self) -> RunStore:
        return self._store()

    # -- admission and queries --------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        spec: dict[str, Any],
        *,
        trigger: Trigger = "api",
        display_name: str | None = None,
        webhook_url: str | None = None,
        priority: int = 5,
        task_id: str | None = None,
        attempt: int = 1,
        capped: bool = True,
    ) -> Run:
        """Validate and admit a run (pending); with `capped`, refuse it when the cap is reached
        (`CapReached`), otherwise it waits for a slot."""
        if capped:  # refused before validation's git commands; `admit` counts again, authoritatively
            await self._check_cap()
        executor = self.executors[kind]
        normalised = await executor.validate(spec)
        run = Run(
            id=0,
            kind=kind,
            trigger=trigger,
            status="pending",
            spec=normalised,
            display_name=display_name or "",
            created_at=self.clock.time(),
            webhook_url=webhook_url,
            priority=priority,
            task_id=task_id,
            attempt=attempt,
        )
        try:
            await self.store.admit(run, self.cap if capped else None)
        except RunLimitReached:  # reached since the first count: refuse with a Retry-After
            active = await self.store.active_slots()
            wait = retry_after_s(active, self.clock.time()) if len(active) >= self.cap else 1
            raise CapReached(self.cap, wait) from None
        self.admitted(run)
        return run

    def admitted(self, run: Run) -> None:
        """Announce a run another part stored (a scheduled task's, in the transaction of its fire)
        and let the dispatcher look for it."""
        log.info("run.created run=%s kind=%s trigger=%s", run.id, run.kind, run.trigger)
        self._publish(run, "run_created", {"run": run_summary(run)})
        self._wake.set()

    async def _check_cap(self) -> None:
        active = await self.store.active_slots()
        if len(active) >= self.cap:
            raise CapReached(self.cap, retry_after_s(active, self.clock.time()))

    async def get(self, run_id: int) -> Run:
        ctx = self._contexts.get(run_id)
        if ctx is not None:
            return ctx.run  # the live record (output and all) of a run this server executes
        run = await self.store.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def listing(self, where: RunFilter) -> list[Run]:
        runs = await self.store.listing(where)
        return [self._contexts[r.id].run if r.id in self._contexts else r for r in runs]

    async def kill(
        self, run_id: int, reason: ExitReason = "user_cancelled", tries: int = FORWARD_TRIES
    ) -> Run:
        """Stop an active run (its agent is stopped, its work kept); `RunNotActive` otherwise.

        A run another live server executes is killed by that server, at its next dispatcher pass
        (within `POLL_S`): the kill is left for it in the store."""
        ctx = self._contexts.get(run_id)
        if ctx is not None:
            ctx.kill_reason = reason
            ctx.killed.set()
            return ctx.run
        run = await self.store.get(run_id)
        ctx = self._contexts.get(run_id)
        if ctx is not None:  # claimed here while the store was read
            return await self.kill(run_id, reason, tries)
        if run is None or run.status not in ACTIVE:
            raise RunNotActive(run_id, None if run is None else run.status)
        if run.status == "pending" and run.owner == self.owner:
            # Claimed by this server, its execution not set up yet: it starts killed.
            self._early_kills[run_id] = reason
            return run
        if run.owner is None:
            # Still queued: nobody executes it, so it ends here.
            run.finished_at = self.clock.time()
            run.exit_reason = reason
            try:
                await self._transition(run, "killed", expect=("pending",))
            except RunChanged:
                return await self._kill_again(run_id, reason, tries)  # claimed meanwhile: kill it there
            return run
        if not owner_alive(run.owner):
            raise RunNotActive(
                run_id,
                f"{run.status} on a server that has stopped (a live server ends it within {WATCH_S:g} s)",
            )
        if await self.store.request_kill(run_id, run.owner, reason):
            log.info("run.kill_forwarded run=%s owner=%s reason=%s", run_id, run.owner, reason)
            return run
        return await self._kill_again(run_id, reason, tries)  # it changed meanwhile: look again

    async def _kill_again(self, run_id: int, reason: ExitReason, tries: int) -> Run:
        """`kill` of a run that changed while it was being killed: looked at again, `tries` at most."""
        if tries <= 1:
            raise RunNotActive(run_id, "changing too fast to kill: try again")
        return await self.kill(run_id, reason, tries - 1)

    async def answer(self, run_id: int, text: str) -> Run:
        """Give a run that waits for input its answer (one that another live server executes gets
        it from that server, at its next dispatcher pass: it is left for it in the store)."""
        ctx = self._contexts.get(run_id)
        if ctx is None:
            run = await self.store.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            if run.status != "waiting_input" or run.owner is None or run.owner == self.owner:
                raise RunNotWaiting(run_id, run.status)
            if not owner_alive(run.owner):
                raise RunNotWaiting(run_id, f"{run.status} on a server that has stopped")
            if await self.store.request_answer(run_id, run.owner, text):
                log.info("run.answer_forwarded run=%s owner=%s", run_id, run.owner)
                return run
            now = await self.store.get(run_id)
            status: str = "unknown" if now is None else now.status
            if status == "waiting_input":
                status = "waiting_input, with an answer already on its way"
            raise RunNotWaiting(run_id, status)
        if ctx.run.status != "waiting_input":
            raise RunNotWaiting(run_id, ctx.run.status)
        ctx._input.put_nowait(text)
        return ctx.run

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover runs a dead server left active, then start dispatching (and watching for servers
        that stop while this one runs)."""
        await self._recover()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="coral-run-dispatcher")
        self._watcher = asyncio.create_task(self._watch(), name="coral-run-watcher")

    async def close(self) -> None:
        """Stop dispatching; stop every run this server executes (work kept, status failed)."""
        self._closing = True
        for task in (self._watcher, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for ctx in list(self._contexts.values()):
            ctx.kill_reason = "server_shutdown"
            ctx.killed.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _recover(self, owner: str | None = None) -> int:
        """End the active runs (of `owner`, else of any server) whose server has stopped; how many.
        Each is first taken over in the store (compare-and-set on its owner), so of two servers
        recovering at once only one tidies a run up."""
        recovered = 0
        for run in await self.store.active(owner):
            if run.owner is None or run.owner == self.owner or owner_alive(run.owner):
                continue  # queued, or executed by a live server
            taken = await self.store.take_over(run.id, run.owner, self.owner)
            if taken is None:
                continue  # ended, or taken over by another server meanwhile
            log.warning("run.recovering run=%s status=%s owner=%s", run.id, run.status, run.owner)
            await self._end_orphan(taken)
            recovered += 1
        return recovered

    async def _end_orphan(self, run: Run) -> None:
        executor = self.executors.get(run.kind)
        try:
            result = await executor.recover(run) if executor is not None else None
        except Exception as exc:
            log.exception("run.recover_failed run=%s", run.id)
            run.error = f"recovery failed: {exc}"
            result = None
        if result is not None:
            run.result = result
        run.finished_at = self.clock.time()
        run.exit_reason = "server_restart"
        run.error = run.error or "the server stopped while the run was active"
        run.retry_pending = run.task_id is not None  # not its fault: its task may retry it
        await self._transition(run, "failed")
        self._finished(run)

    async def _watch(self) -> None:
        """Every `WATCH_S`: recover the runs of servers (on this store) that stopped meanwhile."""
        while True:
            # Real time, as the dispatcher's poll: how soon another process's death is noticed.
            await asyncio.sleep(WATCH_S)
            try:
                for owner in await self.store.busy_owners():
                    if owner != self.owner and not owner_alive(owner):
                        await self._recover(owner)
            except StoreUnavailable:  # counted and logged by the store; look again later
                pass
            except Exception:
                log.exception("run.watch_failed")

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            due: float | None = None
            if not self._closing:
                now = self.clock.time()
                try:
                    claimed, due, requests = await self.store.claim_next(
                        self.owner,
                        self.cap,
                        self.cap,
                        now=now,
                        key_limits=self.key_limits,
                        default_key_limit=self.default_key_limit,
                    )
                    for run in claimed:  # at once: a kill finds its context from now on
                        log.info("run.claimed run=%s", run.id)
                        self._execute(run)
                    for request in requests:
                        self._carry_out(request)
                except StoreUnavailable:  # counted and logged by the store; queued runs wait
                    pass
                except Exception:
                    log.exception("run.claim_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    # A run held back until a time (a retry's backoff) is claimable then.
                    await wait_for_event(self.clock, self._wake, due)

    def _carry_out(self, request: RunRequest) -> None:
        """What another server asked of a run this one executes: kill it, answer it."""
        ctx = self._contexts.get(request.run_id)
        if ctx is None:  # it ended before the request came
            log.info("run.request_late run=%s", request.run_id)
            return
        if request.kill is not None:
            log.info("run.kill_received run=%s reason=%s", request.run_id, request.kill)
            ctx.kill_reason = request.kill
            ctx.killed.set()
        if request.answer is not None:
            if ctx.run.status != "waiting_input":  # answered here meanwhile, or killed
                log.info("run.answer_late run=%s status=%s", request.run_id, ctx.run.status)
            else:
                log.info("run.answer_received run=%s", request.run_id)
                ctx._input.put_nowait(request.answer)

    def _execute(self, run: Run) -> None:
        ctx = RunContext(run, self)
        self._contexts[run.id] = ctx
        reason = self._early_kills.pop(run.id, None)
        if reason is not None:
            ctx.kill_reason = reason
            ctx.killed.set()
        task = asyncio.create_task(self._drive(ctx), name=f"coral-run-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, ctx: RunContext) -> None:
        run = ctx.run
        try:
            outcome = await self.executors[run.kind].execute(run, ctx)
        except Exception as exc:
            log.exception("run.executor_failed run=%s", run.id)
            outcome = Outcome("failed", "error", f"internal error: {exc}")
        try:
            run.finished_at = self.clock.time()
            run.exit_reason = outcome.exit_reason
            run.error = outcome.error
            run.result = outcome.result
            run.waiting_for = None
            run.retryable = outcome.retryable
            # A failed task run awaits its task's retry decision, stored with its final status.
            run.retry_pending = outcome.status == "failed" and outcome.retryable and run.task_id is not None
            await self._finish(run, outcome.status)
            self._finished(run)
        except Exception:
            log.exception("run.finish_failed run=%s", run.id)
        finally:
            self._contexts.pop(run.id, None)
            self._wake.set()  # a slot is free

    async def _finish(self, run: Run, status: RunStatus) -> None:
        """The run's last transition, tried again while the store refuses it (disk full...): an
        ended run is not left active in the store, nor its status webhook unsent. At shutdown one
        more try; then the next start's recovery ends it."""
        while True:
            try:
                await self._transition(run, status)
                return
            except StoreUnavailable as exc:
                log.error("run.status_unstored run=%s status=%s error=%s", run.id, status, exc)
                if self._closing:
                    raise
                await asyncio.sleep(STORE_RETRY_S)

    def _finished(self, run: Run) -> None:
        for listener in self.on_finished:
            try:
                listener(run)
            except Exception:
                log.exception("run.finished_listener_failed run=%s", run.id)

    # -- transitions ------------------------------------------------------------------------------

    async def _save(self, run: Run) -> None:
        await self.store.update(run)

    async def _transition(
        self, run: Run, status: RunStatus, expect: tuple[RunStatus, ...] | None = None
    ) -> None:
        previous = run.status
        if previous == status:
            return
        check_transition(run.id, previous, status)
        run.status = status
        written = self.store.queue_update(run, expect)
        if status in FINAL:
            # A slot frees once this is stored: the dispatcher's claim, queued after this write,
            # is made after it (in its commit, when they are stored together): a pass saved.
            self._wake.set()
        try:
            await written
        except Exception:  # RunChanged, StoreUnavailable...: the run keeps the status the store has
            run.status = previous
            raise
        behind = self._behind.get(run.id)
        if behind is not None:
            behind()  # its write was committed with or before this one: its event goes first
        log.info("run.status run=%s from=%s to=%s reason=%s", run.id, previous, status, run.exit_reason)
        self._publish(
            run, "run_status", {"status": status, "previousStatus": previous, "run": run_summary(run)}
        )
        if status in FINAL:
            self.events.close_topic(topic(run.id))
        if run.webhook_url and self.webhooks is not None:
            payload = status_webhook(run, previous)
            try:
                await self.webhooks.send(WEBHOOK_KIND, run.webhook_url, payload, subject=topic(run.id))
            except Exception:
                log.exception("run.webhook_failed run=%s status=%s", run.id, status)

    def _transition_behind(self, run: Run, status: RunStatus) -> None:
        """`_transition` without waiting for its store write (nor sending a webhook): its status
        event is published once the write is committed (at the latest just before the event of the
        run's next transition, whose write comes after it); a write that fails is logged (the
        run's next transition writes its status again)."""
        previous = run.status
        if previous == status:
            return
        check_transition(run.id, previous, status)
        run.status = status
        body = {"status": status, "previousStatus": previous, "run": run_summary(run)}
        written = self.store.queue_update(run)

        def announce(_: object = None) -> None:
            if not written.done() or self._behind.get(run.id) is not announce:
                return  # not yet stored, or announced already
            del self._behind[run.id]
            if written.cancelled() or written.exception() is not None:
                error = "cancelled" if written.cancelled() else written.exception()
                log.error("run.status_unstored run=%s status=%s error=%s", run.id, status, error)
                return
            log.info("run.status run=%s from=%s to=%s reason=%s", run.id, previous, status, run.exit_reason)
            self._publish(run, "run_status", body)

        self._behind[run.id] = announce
        written.add_done_callback(announce)

    def _publish(self, run: Run, type: str, data: dict[str, Any]) -> None:
        # One body for both topics (events are never changed once published): built once.
        body = {"runId": run.id, **data}
        self.events.publish(topic(run.id), type, body)
        if type != "run_output":  # the feed carries lifecycle, not terminal output
            self.events.publish(SERVER_TOPIC, type, body)


def topic(run_id: int) -> str:
    """A run's topic on the event bus."""
    return f"runs/{run_id}"


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso(unix_s: float | None) -> str | None:
    """`unix_s` as ISO 8601 UTC to the millisecond (truncated, as `datetime.isoformat` does after
    rounding to the microsecond). A run's times are formatted in every event it is in, and runs come
    in bursts: the part up to the second is kept formatted for recent seconds."""
    if unix_s is None:
        return None
    fraction, second = math.modf(unix_s)  # split and rounded as `datetime.fromtimestamp` does
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    return f"{_iso_second(int(second))}.{micros // 1000:03d}Z"


def run_summary(run: Run) -> dict[str, Any]:
    """A run's lifecycle fields (no output), for events."""
    return {
        "id": run.id,
        "run_id": run.id,
        "kind": run.kind,
        "status": run.status,
        "trigger_type": run.trigger,
        "display_name": run.display_name,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "exit_reason": run.exit_reason,
        "error_msg": run.error,
    }


def status_webhook(run: Run, previous: str) -> dict[str, Any]:
    """The status webhook's body: the original system's fields plus ours."""
    return {
        "run_id": run.id,
        "session_id": f"run-{run.id}",
        "status": run.status,
        "previous_status": previous,
        "exit_reason": run.exit_reason,
        "error_msg": run.error,
        "display_name": run.display_name,
        "trigger_type": run.trigger,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": run.duration_s,
        "result": run.result,
        "source": "coral",
    }
