"""A real SQLite store in a temp dir, a fake clock, the real runs service and `Tasks`, with a fake
pipeline executor (tests/fakes/pipeline.py) standing in for what the runs would do."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coral_server.clock import FakeClock
from coral_server.events import EventBus
from coral_server.runs.service import Runs
from coral_server.store import SqliteStore
from coral_server.store.runs import Run, RunFilter
from coral_server.tasks import Tasks, TaskSettings
from tests.conftest import wait_until
from tests.fakes.pipeline import FakePipeline

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday, 08:00 UTC
CREATOR = "0b7e7a8e-2f35-4a53-9d3b-2b1c9f0c0a11"
DROP = object()
PAYLOAD = {
    "params": {"who": "x"},
    "pipeline": [{"id": "s1", "uses": "webhook", "with": {"url": "http://127.0.0.1:9"}}],
}


def body(**fields: Any) -> dict[str, Any]:
    """A valid POST /tasks body (daily at 09:00 UTC), with `fields` replacing (DROP: removing) its own."""
    values: dict[str, Any] = {
        "title": "nightly",
        "description": "does things",
        "schedule_kind": "cron",
        "schedule_expr": "0 9 * * *",
        "payload": PAYLOAD,
        "created_by": CREATOR,
    }
    values.update(fields)
    return {k: v for k, v in values.items() if v is not DROP}


@dataclass
class World:
    """One server's scheduling parts over a database file."""

    store: SqliteStore
    clock: FakeClock
    runs: Runs
    tasks: Tasks
    pipeline: FakePipeline

    async def task_runs(self, task_id: str) -> list[Run]:
        """The task's runs, oldest first."""
        return list(reversed(await self.store.runs.listing(RunFilter(task_id=task_id, limit=200))))

    async def wait_runs(self, task_id: str, n: int) -> list[Run]:
        """Wait until the task has `n` runs; returns them, oldest first."""

        async def enough() -> list[Run] | None:
            runs = await self.task_runs(task_id)
            return runs if len(runs) >= n else None

        runs = await wait_until(enough, what=f"{n} runs of task {task_id}")
        assert len(runs) == n, runs
        return runs

    async def close(self) -> None:
        await self.tasks.close()
        await self.runs.close()
        await self.store.close()


Opener = Callable[..., Any]


async def open_world(
    path: Path,
    clock: FakeClock,
    *,
    cap: int = 5,
    settings: TaskSettings | None = None,
    key_limits: Mapping[str, int] | None = None,
    instance: str = "i-1",
    dispatch: bool = True,
    schedule: bool = True,
) -> World:
    store = await SqliteStore.open(path, clock=clock)
    pipeline = FakePipeline()
    runs = Runs(
        lambda: store.runs,
        EventBus(clock=clock),
        clock,
        {"pipeline": pipeline},
        cap=cap,
        instance=instance,
        key_limits=key_limits,
    )
    tasks = Tasks(lambda: store.tasks, runs, clock, settings, rng=random.Random(7))
    if dispatch:
        await runs.start()
    if schedule:
        await tasks.start()
    return World(store, clock, runs, tasks, pipeline)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0.timestamp())


@pytest.fixture
async def worlds(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    """Opens worlds on one database file (`await worlds(**options)`); closes them all at the end."""
    opened: list[World] = []

    async def open_one(**options: Any) -> World:
        world = await open_world(tmp_path / "coral.db", clock, **options)
        opened.append(world)
        return world

    yield open_one
    for world in reversed(opened):
        await world.close()


@pytest.fixture
async def world(worlds: Callable[..., Any]) -> World:
    result: World = await worlds()
    return result
