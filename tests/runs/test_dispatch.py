"""The runs dispatcher: a run is claimed as soon as it can be (a slot frees, a run is admitted), never
only at the next poll, and the claims do not overshoot the cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coral_server.clock import Clock, FakeClock, wait_for_event
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.runs import service
from coral_server.runs.service import Outcome, Runs
from coral_server.store import SqliteStore
from coral_server.store.runs import Run
from tests.conftest import wait_until
from tests.fakes.pipeline import FakePipeline

SPEC = {"pipeline": [{"uses": "webhook"}]}


@dataclass
class Dispatching:
    runs: Runs
    pipeline: FakePipeline
    idle: asyncio.Event  # set each time the dispatcher goes to sleep after a pass


@pytest.fixture
async def dispatching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Dispatching]:
    """A runs service with a cap of 2 over a real SQLite store, whose dispatcher only wakes when told:
    its poll (for other servers' runs) is an hour, so a test that passes cannot have waited for it."""
    monkeypatch.setattr(service, "POLL_S", 3600.0)
    idle = asyncio.Event()

    async def watched(clock: Clock, event: asyncio.Event, until: float | None) -> bool:
        idle.set()
        return await wait_for_event(clock, event, until)

    monkeypatch.setattr(service, "wait_for_event", watched)
    clock = FakeClock(1_780_000_000.0)
    store = await SqliteStore.open(tmp_path / "coral.db", clock=clock)
    pipeline = FakePipeline()
    runs = Runs(lambda: store.runs, EventBus(clock=clock), clock, {"pipeline": pipeline}, cap=2)
    await runs.start()
    try:
        yield Dispatching(runs, pipeline, idle)
    finally:
        await runs.close()
        await store.close()


async def running(d: Dispatching, ids: list[int]) -> None:
    await wait_until(lambda: sorted(d.pipeline.running()) == sorted(ids), what=f"runs {ids} running")


async def test_a_freed_slot_is_refilled_at_once(dispatching: Dispatching) -> None:
    d = dispatching
    first, second, third = [(await d.runs.submit("pipeline", SPEC, capped=False)).id for _ in range(3)]
    await running(d, [first, second])
    await wait_until(d.idle.is_set, what="the dispatcher asleep")
    assert (await d.runs.get(third)).status == "pending"  # beyond the cap: it waits

    d.idle.clear()
    d.pipeline.finish(first)
    # Only the end of `first` can wake the dispatcher now (its poll is an hour; the clock stands still).
    await running(d, [second, third])
    assert (await d.runs.get(first)).status == "completed"


async def test_a_run_admitted_while_the_dispatcher_sleeps_is_claimed_at_once(
    dispatching: Dispatching,
) -> None:
    d = dispatching
    await wait_until(d.idle.is_set, what="the dispatcher asleep")
    d.idle.clear()
    run = await d.runs.submit("pipeline", SPEC)
    await running(d, [run.id])


async def test_several_freed_slots_are_refilled_together_without_overshooting_the_cap(
    dispatching: Dispatching,
) -> None:
    d = dispatching
    ids = [(await d.runs.submit("pipeline", SPEC, capped=False)).id for _ in range(5)]
    await running(d, ids[:2])
    for done in ids[:2]:
        d.pipeline.finish(done)
    await running(d, ids[2:4])
    assert (await d.runs.get(ids[4])).status == "pending"


async def test_a_kill_between_the_claim_and_its_context_is_not_lost(
    dispatching: Dispatching, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim is stored (owner: this server) before its answer reaches the dispatcher; a kill in
    that window is this server's to carry out, not a 404 for "another server"."""
    d = dispatching
    store = d.runs.store
    claimed, release = asyncio.Event(), asyncio.Event()
    real_claim = store.claim_next

    async def held_claim(*args: Any, **kwargs: Any) -> Any:
        found = await real_claim(*args, **kwargs)
        if found[0]:
            claimed.set()
            await release.wait()  # the claim is committed; the dispatcher has not heard of it yet
        return found

    monkeypatch.setattr(store, "claim_next", held_claim)
    d.runs._wake.set()  # the dispatcher sleeping in the real claim's wait picks up the patched one
    run = await d.runs.submit("pipeline", SPEC)
    await asyncio.wait_for(claimed.wait(), 10)
    stored = await store.get(run.id)
    assert stored is not None and stored.owner == d.runs.owner and run.id not in d.runs._contexts

    await d.runs.kill(run.id)  # before the fix: RunNotActive("pending on another server")
    release.set()
    await wait_until(
        lambda: _status(d, run.id, "killed"), what=f"run {run.id} killed after its claim came back"
    )


async def _status(d: Dispatching, run_id: int, status: str) -> bool:
    return (await d.runs.get(run_id)).status == status


async def test_a_runs_start_is_stored_behind_and_announced_once_stored_before_its_end(
    dispatching: Dispatching,
) -> None:
    d = dispatching
    feed = d.runs.events.subscribe(SERVER_TOPIC)
    slow = await d.runs.submit("pipeline", SPEC)
    await running(d, [slow.id])
    # Its start is stored (not waited for by the executor, but written) while it runs.
    stored = await wait_until(
        lambda: _stored_status(d, slow.id, "running"), what=f"run {slow.id} stored as running"
    )
    assert stored.started_at is not None
    d.pipeline.auto = Outcome("completed", "agent_done")
    quick = await d.runs.submit("pipeline", SPEC)  # ends at once: start and end in one write
    d.pipeline.finish(slow.id)
    for run_id in (slow.id, quick.id):
        done = await wait_until(lambda r=run_id: _stored_status(d, r, "completed"), what=f"run {run_id} done")
        assert done.started_at is not None and done.finished_at is not None
    seen: dict[int, list[str]] = {}
    while (event := feed.poll()) is not None:
        seen.setdefault(event.data["runId"], []).append(event.data.get("status", event.type))
    feed.close()
    assert seen == {
        slow.id: ["run_created", "running", "completed"],
        quick.id: ["run_created", "running", "completed"],
    }


async def _stored_status(d: Dispatching, run_id: int, status: str) -> Run | None:
    run = await d.runs.store.get(run_id)
    return run if run is not None and run.status == status else None
