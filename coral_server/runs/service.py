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
import logging
import math
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from coral_server.clock import Clock, wait_for_event
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.runs.bodies import iso, run_summary, status_webhook
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
# Runs the dispatcher keeps as they were admitted, to claim them without reading them again.
KEPT_MAX = 20_000
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
    kill_reason: ExitReason = "user_cancelled"
    _answers: asyncio.Queue[str] | None = None  # made when the run first waits for input
    _killed: asyncio.Event | None = None  # made when first asked for (most runs are never killed)

    @property
    def killed(self) -> asyncio.Event:
        """Set when the run is to stop (killed, or the server stops): its executor ends it."""
        if self._killed is None:
            self._killed = asyncio.Event()
        return self._killed

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
        self._behind: dict[int, Callable[[BaseException | None], None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Runs admitted here and not yet claimed, as admitted (`admitted(keep=True)`): by id.
        self._kept: dict[int, Run] = {}
        self._released = asyncio.Event()  # set each time a run has ended here (see `close`)
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

    def admitted(self, run: Run, *, keep: bool = False) -> None:
        """Announce a run another part stored (a scheduled task's, in the transaction of its fire)
        and let the dispatcher look for it. With `keep`, the caller lets go of `run`: the dispatcher
        keeps it (at most `KEPT_MAX`) and claims it without reading it again."""
        log.info("run.created run=%s kind=%s trigger=%s", run.id, run.kind, run.trigger)
        self._publish(run, "run_created", {"run": run_summary(run)})
        if keep:
            self._kept[run.id] = run  # trimmed by the dispatcher, between its claims
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
        # Every run's task, then the ends still being stored (a refused one is tried again by a task).
        while self._tasks or self._contexts:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                self._released.clear()
                await self._released.wait()

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
                        known=self._kept,
                    )
                    unread: list[int] = []
                    for item in claimed:  # at once: a kill finds its context from now on
                        run = self._claimed(item)
                        if run is None:
                            unread.append(item if isinstance(item, int) else item.id)
                            continue
                        log.info("run.claimed run=%s", run.id)
                        self._execute(run)
                    for request in requests:
                        self._carry_out(request)
                    while len(self._kept) > KEPT_MAX:  # the oldest: claimed by another server...
                        del self._kept[next(iter(self._kept))]
                    for run_id in unread:
                        await self._execute_stored(run_id)
                except StoreUnavailable:  # counted and logged by the store; queued runs wait
                    pass
                except Exception:
                    log.exception("run.claim_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    # A run held back until a time (a retry's backoff) is claimable then.
                    await wait_for_event(self.clock, self._wake, due)

    def _claimed(self, item: Run | int) -> Run | None:
        """A claimed run: as the claim read it, or as kept since its admission (by its id; only the
        dispatcher lets go of kept runs, and never while it claims: None cannot happen)."""
        if isinstance(item, Run):
            self._kept.pop(item.id, None)
            return item
        run = self._kept.pop(item, None)
        if run is not None:
            run.owner, run.waiting_reason = self.owner, None  # what the claim changed
        return run

    async def _execute_stored(self, run_id: int) -> None:
        try:
            run = await self.store.get(run_id)
        except Exception:
            log.exception("run.claimed_unread run=%s", run_id)  # the next start's recovery ends it
            return
        if run is not None:
            log.info("run.claimed run=%s", run.id)
            self._execute(run)

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
        self._spawn(self._drive(ctx), f"coral-run-{run.id}")

    async def _drive(self, ctx: RunContext) -> None:
        run = ctx.run
        try:
            outcome = await self.executors[run.kind].execute(run, ctx)
        except Exception as exc:
            log.exception("run.executor_failed run=%s", run.id)
            outcome = Outcome("failed", "error", f"internal error: {exc}")
        storing = False  # its end is on its way to the store: released once stored
        try:
            run.finished_at = self.clock.time()
            run.exit_reason = outcome.exit_reason
            run.error = outcome.error
            run.result = outcome.result
            run.waiting_for = None
            run.retryable = outcome.retryable
            # A failed task run awaits its task's retry decision, stored with its final status.
            run.retry_pending = outcome.status == "failed" and outcome.retryable and run.task_id is not None
            if run.webhook_url and self.webhooks is not None:
                await self._finish(run, outcome.status)  # its webhook is queued once its end is stored
                self._finished(run)
            else:
                self._end_behind(run, outcome.status)
                storing = True
        except Exception:
            log.exception("run.finish_failed run=%s", run.id)
        finally:
            if not storing:
                self._release(run)

    def _end_behind(self, run: Run, status: RunStatus) -> None:
        """The run's last transition, not waited for: once it is stored, its event, the listeners
        and its slot freed here (a run that ends at once costs its task no second step). A write
        the store refuses is tried again as `_finish` does, except at shutdown."""
        previous = run.status
        check_transition(run.id, previous, status)
        run.status = status

        def written(error: BaseException | None) -> None:
            if error is None:
                try:
                    self._announce(run, previous, status)
                    self._finished(run)
                finally:
                    self._release(run)
                return
            run.status = previous  # as the store has it
            log.error("run.status_unstored run=%s status=%s error=%s", run.id, status, error)
            if isinstance(error, StoreUnavailable) and not self._closing:
                self._spawn(self._finish_later(run, status), f"coral-run-{run.id}-end")  # releases it
            else:
                self._release(run)

        self.store.queue_write(run, written)
        self._wake.set()  # a slot frees once this is stored: the next claim, queued after it, sees it

    async def _finish_later(self, run: Run, status: RunStatus) -> None:
        try:
            await asyncio.sleep(STORE_RETRY_S)
            await self._finish(run, status)
            self._finished(run)
        except Exception:
            log.exception("run.finish_failed run=%s", run.id)
        finally:
            self._release(run)

    def _release(self, run: Run) -> None:
        """The run has ended here (stored, or given up at shutdown): its slot is free."""
        self._contexts.pop(run.id, None)
        self._released.set()
        self._wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        self._announce(run, previous, status)
        if run.webhook_url and self.webhooks is not None:
            payload = status_webhook(run, previous)
            try:
                await self.webhooks.send(WEBHOOK_KIND, run.webhook_url, payload, subject=topic(run.id))
            except Exception:
                log.exception("run.webhook_failed run=%s status=%s", run.id, status)

    def _announce(self, run: Run, previous: RunStatus, status: RunStatus) -> None:
        """A transition is stored: its event (after that of the transition stored behind before it)."""
        behind = self._behind.get(run.id)
        if behind is not None:
            behind(None)  # its write was committed with or before this one: its event goes first
        log.info("run.status run=%s from=%s to=%s reason=%s", run.id, previous, status, run.exit_reason)
        self._publish(
            run, "run_status", {"status": status, "previousStatus": previous, "run": run_summary(run)}
        )
        if status in FINAL:
            self.events.close_topic(topic(run.id))

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

        def announce(error: BaseException | None) -> None:
            if self._behind.get(run.id) is not announce:
                return  # announced already
            del self._behind[run.id]
            if error is not None:
                log.error("run.status_unstored run=%s status=%s error=%s", run.id, status, error)
                return
            log.info("run.status run=%s from=%s to=%s reason=%s", run.id, previous, status, run.exit_reason)
            self._publish(run, "run_status", body)

        self._behind[run.id] = announce
        self.store.queue_write(run, announce)

    def _publish(self, run: Run, type: str, data: dict[str, Any]) -> None:
        # One body for both topics (events are never changed once published): built once.
        body = {"runId": run.id, **data}
        if type == "run_output":  # the feed carries lifecycle, not terminal output
            self.events.publish(topic(run.id), type, body)
        else:
            self.events.publish_each((topic(run.id), SERVER_TOPIC), type, body)


def topic(run_id: int) -> str:
    """A run's topic on the event bus."""
    return f"runs/{run_id}"
