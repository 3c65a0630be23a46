"""A run's end as the dispatcher stores it: not waited for by the run's task, announced, released and
listened to once stored; kept in memory until then (a full disk included); waited for at close; and
runs a scheduled fire admitted are claimed as they were kept, not read again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coral_server.clock import FakeClock
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.runs import service
from coral_server.runs.service import Outcome, Runs
from coral_server.store import SqliteStore
from coral_server.store.runs import Run
from tests.conftest import wait_until
from tests.fakes.pipeline import FakePipeline
from tests.fulldisk import FullDisk, small_filesystem

SPEC = {"pipeline": [{"uses": "webhook"}]}


async def opened(path: Path, cap: int = 2) -> tuple[SqliteStore, Runs, FakePipeline]:
    clock = FakeClock(1_780_000_000.0)
    store = await SqliteStore.open(path, clock=clock)
    pipeline = FakePipeline()
    runs = Runs(lambda: store.runs, EventBus(clock=clock), clock, {"pipeline": pipeline}, cap=cap)
    return store, runs, pipeline


@pytest.fixture
def disk(tmp_path: Path) -> AsyncIterator[FullDisk]:
    with small_filesystem(tmp_path / "small") as disk:
        yield disk


def queued(name: str, created_at: float = 1_780_000_000.0) -> Run:
    return Run(
        id=0,
        kind="pipeline",
        trigger="cron",
        status="pending",
        spec={"pipeline": []},
        display_name=name,
        created_at=created_at,
    )


async def keep(store: SqliteStore, runs: Runs, run: Run) -> None:
    """Admit `run` and hand it to the dispatcher, as a scheduled fire does."""
    await store.runs.admit(run, None)
    runs.admitted(run, keep=True)


@contextlib.asynccontextmanager
async def serving(store: SqliteStore, runs: Runs) -> AsyncIterator[None]:
    await runs.start()
    try:
        yield
    finally:
        await runs.close()
        await store.close()


async def stored(store: SqliteStore, run_id: int, status: str) -> Run | None:
    run = await store.runs.get(run_id)
    return run if run is not None and run.status == status else None


async def test_an_end_the_full_disk_refuses_is_kept_live_and_stored_once_there_is_room(
    disk: FullDisk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service, "STORE_RETRY_S", 0.05)
    caplog.set_level(logging.ERROR, logger="coral_server")
    store, runs, pipeline = await opened(disk.root / "coral.db")
    ended: list[int] = []
    runs.on_finished.append(lambda run: ended.append(run.id))
    await runs.start()
    try:
        run = await runs.submit("pipeline", SPEC)  # no webhook: its end is not waited for
        await wait_until(lambda: stored(store, run.id, "running"), what="the run stored as running")
        feed = runs.events.subscribe(SERVER_TOPIC)
        disk.fill()
        pipeline.finish(run.id)
        await wait_until(lambda: "run.status_unstored" in caplog.text, what="the end refused")
        # Not ended yet for anyone: the store keeps it running, the live record is its context's,
        # no listener heard of it, no event said it, and its slot is still held.
        assert (await store.runs.get(run.id)).status == "running"  # type: ignore[union-attr]
        assert (await runs.get(run.id)).status == "running"
        assert ended == [] and feed.poll() is None
        disk.free()
        done = await wait_until(lambda: stored(store, run.id, "completed"), what="the end stored")
        assert done.finished_at is not None
        await wait_until(lambda: ended == [run.id], what="its listener")
        event = feed.poll()
        assert event is not None and (event.data["runId"], event.data["status"]) == (run.id, "completed")
        assert (await runs.get(run.id)).status == "completed"
    finally:
        disk.free()
        await runs.close()
        await store.close()


async def test_close_waits_for_the_ends_still_being_stored(tmp_path: Path) -> None:
    store, runs, pipeline = await opened(tmp_path / "coral.db", cap=6)
    ended: list[int] = []
    runs.on_finished.append(lambda run: ended.append(run.id))
    await runs.start()
    ids = [(await runs.submit("pipeline", SPEC)).id for _ in range(6)]
    await wait_until(lambda: sorted(pipeline.running()) == ids, what="six runs running")
    # The store's thread is kept busy, so that the runs' ends wait behind it when close is called.
    busy = threading.Event()
    held = asyncio.ensure_future(store.runs._writer.read(lambda _: busy.wait(10)))
    for run_id in ids:
        pipeline.finish(run_id)
    await wait_until(lambda: not pipeline.running(), what="the six runs' ends queued")
    assert ended == []
    closing = asyncio.ensure_future(runs.close())
    # Its runs' tasks are over: close now waits for their ends (without it, it would have returned).
    await wait_until(lambda: closing.done() or bool(runs._released._waiters), what="close waiting")
    assert not closing.done()
    busy.set()
    await closing
    assert sorted(ended) == ids
    await held
    for run_id in ids:
        assert await stored(store, run_id, "completed") is not None
    await store.close()


async def test_a_run_kept_at_admission_is_claimed_as_kept(tmp_path: Path) -> None:
    store, runs, pipeline = await opened(tmp_path / "coral.db")
    kept, other = queued("k"), queued("o")
    await keep(store, runs, kept)
    await store.runs.admit(other, None)
    runs.admitted(other)  # not kept: read by its claim
    async with serving(store, runs):
        await wait_until(lambda: len(pipeline.started) == 2, what="both claimed")
        by_id = {run.id: run for run in pipeline.started}
        assert by_id[kept.id] is kept  # not read again
        assert by_id[other.id] is not other  # read as the claim took it
        for run in by_id.values():
            assert (run.owner, run.waiting_reason) == (runs.owner, None)
        claimed = await store.runs.get(kept.id)
        assert claimed is not None and claimed.owner == runs.owner
        assert runs._kept == {}


async def test_kept_runs_are_let_go_beyond_the_most_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "KEPT_MAX", 3)
    store, runs, pipeline = await opened(tmp_path / "coral.db")
    pipeline.auto = Outcome("completed", "agent_done")
    admitted: list[Run] = []
    for i in range(8):
        run = queued(f"r{i}", 1_780_000_000.0 + i)
        await keep(store, runs, run)
        admitted.append(run)
    async with serving(store, runs):
        await wait_until(lambda: len(pipeline.started) == 8, what="all eight run")
        # A cap of 2: the first claim takes r0 and r1 as kept; then the dispatcher keeps the three
        # newest (r5, r6, r7) and lets go of r2, r3 and r4, which their claims read again.
        started = {run.id: run for run in pipeline.started}
        same = [i for i, run in enumerate(admitted) if started[run.id] is run]
        assert same == [0, 1, 5, 6, 7]
        assert runs._kept == {}


async def test_a_claimed_run_no_longer_kept_is_read_and_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the dispatcher lets go of kept runs, never during a claim: should one be missing all the
    same, the claimed run is read from the store and executed, not left holding its slot."""
    store, runs, pipeline = await opened(tmp_path / "coral.db")
    run = queued("lost")
    await keep(store, runs, run)
    claimed = runs._claimed

    def losing(item: Run | int) -> Run | None:
        runs._kept.clear()  # as if let go of while the claim was made
        return claimed(item)

    monkeypatch.setattr(runs, "_claimed", losing)
    async with serving(store, runs):
        await wait_until(lambda: [r.id for r in pipeline.started] == [run.id], what="the lost run started")
        assert pipeline.started[0] is not run  # read again
        assert pipeline.started[0].owner == runs.owner
