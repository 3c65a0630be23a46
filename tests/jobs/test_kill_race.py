"""A kill that races a queued run's claim is never lost (a real SQLite store, the real runs service).

What happened once under load: the kill of a queued run read it unclaimed, the dispatcher claimed it,
the kill's compare-and-set (status only) then stored it `killed`, and the dispatcher executed it
anyway: its `running` overwrote `killed`, and nothing ever stopped it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coral_server.clock import FakeClock
from coral_server.events import EventBus
from coral_server.runs.service import Runs
from coral_server.store import SqliteStore
from coral_server.store.runs import RunChanged
from tests.conftest import wait_until
from tests.fakes.pipeline import FakePipeline

SPEC = {"pipeline": [{"uses": "webhook"}]}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "coral.db", clock=FakeClock(1_780_000_000.0))
    try:
        yield opened
    finally:
        await opened.close()


def service(store: SqliteStore, pipeline: FakePipeline) -> Runs:
    """A runs service whose dispatcher is not started: the test claims and executes by hand."""
    clock = FakeClock(1_780_000_000.0)
    return Runs(lambda: store.runs, EventBus(clock=clock), clock, {"pipeline": pipeline}, cap=2)


async def test_a_queued_kill_read_before_a_claim_cannot_overwrite_it(store: SqliteStore) -> None:
    runs = service(store, FakePipeline())
    run_id = (await runs.submit("pipeline", SPEC)).id
    stale = await store.runs.get(run_id)  # what the kill read: pending, nobody's
    assert stale is not None and stale.owner is None
    [claimed] = await store.runs.claim("another:1:2", 2, 2)
    assert claimed.id == run_id
    stale.status = "killed"
    with pytest.raises(RunChanged):
        await store.runs.update(stale, expect=("pending",))
    stored = await store.runs.get(run_id)
    assert stored is not None and (stored.status, stored.owner) == ("pending", "another:1:2")


async def test_a_kill_between_the_claim_here_and_the_execution_kills_the_run(store: SqliteStore) -> None:
    pipeline = FakePipeline()
    runs = service(store, pipeline)
    try:
        run_id = (await runs.submit("pipeline", SPEC)).id
        [claimed] = await store.runs.claim(runs.owner, 2, 2)  # the dispatcher's claim...
        killed = await runs.kill(run_id)  # ...a kill before it set the run's execution up...
        assert killed.id == run_id
        runs._execute(claimed)  # ...then the dispatcher's next step
        await wait_until(lambda: _status(store, run_id, "killed"), what="the run killed")
        stored = await store.runs.get(run_id)
        assert stored is not None and stored.exit_reason == "user_cancelled"
    finally:
        await runs.close()


async def _status(store: SqliteStore, run_id: int, status: str) -> bool:
    run = await store.runs.get(run_id)
    return run is not None and run.status == status
