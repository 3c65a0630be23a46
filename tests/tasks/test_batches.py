"""The scheduler's batch paths over real store files: a pass's fires in one transaction (two servers
racing on one database never fire a task twice; a crash mid-batch loses nothing), and the start-up
planning pass (stale plans corrected, due and snoozed tasks left to the fire rule)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from coral_server.store import runs_sql, tasks_sql
from coral_server.store.runs import RunFilter
from coral_server.store.tasks import Replan, Task
from tests.tasks.conftest import CREATOR, T0, World, body

NINE = (T0 + timedelta(hours=1)).timestamp()
TASKS = 60


@pytest.fixture
async def world_paused(worlds: Callable[..., Any]) -> World:
    """A server whose scheduler and dispatcher do not run: the test drives them."""
    world: World = await worlds(dispatch=False, schedule=False)
    return world


async def create_many(world: World, n: int = TASKS) -> list[str]:
    return [(await world.tasks.create(body(title=f"t{i}"))).task.id for i in range(n)]


async def runs_per_task(world: World) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for run in await world.store.runs.listing(RunFilter(limit=1000)):
        counts[run.task_id] = counts.get(run.task_id, 0) + 1
    return counts


async def test_two_servers_racing_on_one_batch_fire_each_task_once(worlds: Callable[..., Any]) -> None:
    a: World = await worlds(instance="i-1", dispatch=False, schedule=False)
    b: World = await worlds(instance="i-2", dispatch=False, schedule=False)
    ids = await create_many(a)
    a.clock.set(NINE)
    created = await asyncio.gather(a.tasks.loop.fire_due(), b.tasks.loop.fire_due())
    assert sum(created) == TASKS, created
    assert await runs_per_task(a) == dict.fromkeys(ids, 1)
    for task_id in ids:
        task = await a.tasks.get(task_id)
        assert task.fire_count == 1 and task.last_fire_at == NINE and task.next_fire_at == NINE + 86400
    assert await asyncio.gather(a.tasks.loop.fire_due(), b.tasks.loop.fire_due()) == [0, 0]


async def test_a_crash_mid_batch_loses_nothing(
    worlds: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    world: World = await worlds(dispatch=False, schedule=False)
    ids = await create_many(world)
    world.clock.set(NINE)
    real = tasks_sql.apply_fire
    calls = 0

    def crashing(conn: Any, fire: Any, known: Any = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == TASKS // 2:
            raise RuntimeError("the server dies mid-batch")
        return real(conn, fire, known)

    monkeypatch.setattr(tasks_sql, "apply_fire", crashing)
    with pytest.raises(RuntimeError):
        await world.tasks.loop.fire_due()
    assert calls == TASKS // 2  # half the batch was applied inside the transaction, then rolled back
    assert await runs_per_task(world) == {}
    for task_id in ids:
        task = await world.tasks.get(task_id)
        assert (task.fire_count, task.next_fire_at, task.version) == (0, NINE, 1)
    monkeypatch.setattr(tasks_sql, "apply_fire", real)
    assert await world.tasks.loop.fire_due() == TASKS
    # A server that restarts after the batch committed fires none of it again.
    again: World = await worlds(instance="i-2", dispatch=False, schedule=False)
    assert await again.tasks.loop.fire_due() == 0
    assert await runs_per_task(world) == dict.fromkeys(ids, 1)


async def test_planning_corrects_stale_plans_only(worlds: Callable[..., Any]) -> None:
    world: World = await worlds(dispatch=False, schedule=False)
    stale, due, snoozed, fine = [(await world.tasks.create(body(title=t))).task for t in "abcd"]
    await world.store.tasks.save(_with(stale, next_fire_at=NINE + 60), stale.version)
    await world.store.tasks.save(_with(due, next_fire_at=T0.timestamp() - 60), due.version)
    await world.tasks.snooze(snoozed.id, 600)
    before = {t.id: await world.tasks.get(t.id) for t in (stale, due, snoozed, fine)}
    assert await world.tasks.loop.plan() == 4
    after = {t.id: await world.tasks.get(t.id) for t in (stale, due, snoozed, fine)}
    assert after[stale.id].next_fire_at == NINE and after[stale.id].version == before[stale.id].version + 1
    for kept in (due, snoozed, fine):
        assert after[kept.id] == before[kept.id]
    assert await world.tasks.loop.plan() == 4  # nothing left to correct
    assert (await world.tasks.get(stale.id)).version == after[stale.id].version


async def test_a_replan_loses_to_a_concurrent_change(worlds: Callable[..., Any]) -> None:
    world: World = await worlds(dispatch=False, schedule=False)
    task = (await world.tasks.create(body())).task
    assert await world.store.tasks.replan([Replan(task.id, task.version + 1, NINE + 5)]) == 0
    assert await world.store.tasks.replan([Replan(task.id, task.version, NINE + 5)]) == 1
    assert (await world.tasks.get(task.id)).next_fire_at == NINE + 5


def _with(task: Task, **changes: Any) -> Task:
    for name, value in changes.items():
        setattr(task, name, value)
    return task


async def test_a_batch_fired_on_its_read_tasks_leaves_a_task_changed_since_alone(
    world_paused: World,
) -> None:
    world = world_paused
    ids = await create_many(world, 5)
    world.clock.set(NINE)
    due = await world.store.tasks.due(NINE, 100)  # what a pass read: the fires are decided on these
    edited = await world.tasks.get(ids[2])
    await world.store.tasks.save(_with(edited, title="edited"), edited.version)  # meanwhile
    fires = [world.tasks.loop._decide(task, NINE, {}) for task in due]
    fired = await world.store.tasks.fire_many(fires)
    assert [f is not None for f in fired] == [task.id != ids[2] for task in due]
    assert await runs_per_task(world) == {i: 1 for i in ids if i != ids[2]}
    assert [r.id for r in await world.store.runs.listing(RunFilter())] == sorted(
        (f.run.id for f in fired if f is not None and f.run is not None), reverse=True
    )
    left = await world.tasks.get(ids[2])
    assert (left.fire_count, left.next_fire_at, left.title) == (0, NINE, "edited")
    assert await world.tasks.loop.fire_due() == 1  # read again, it fires
    assert await runs_per_task(world) == dict.fromkeys(ids, 1)


async def test_a_batch_that_fails_while_writing_loses_and_doubles_nothing(
    world_paused: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = world_paused
    ids = await create_many(world)
    world.clock.set(NINE)

    def failing(conn: Any, rows: Any) -> None:
        raise RuntimeError("the disk fails while the batch's runs are written")

    monkeypatch.setattr(runs_sql, "insert_admitted", failing)
    with pytest.raises(RuntimeError):
        await world.tasks.loop.fire_due()
    assert await runs_per_task(world) == {}
    assert [(await world.tasks.get(i)).version for i in ids] == [1] * TASKS
    monkeypatch.undo()
    assert await world.tasks.loop.fire_due() == TASKS
    assert await runs_per_task(world) == dict.fromkeys(ids, 1)


async def test_in_one_batch_runs_queue_in_priority_order_and_dedupe_sees_the_batchs_own_runs(
    world_paused: World,
) -> None:
    world = world_paused
    prioritised = [
        (await world.tasks.create(body(title=f"p{p}", priority=p))).task.id for p in (9, 1, 5, 1, 3)
    ]
    deduped = [
        (await world.tasks.create(body(title=f"d{i}", dedupe_key="same", created_by=by))).task.id
        for i, by in enumerate((CREATOR, "5c1d6f0e-8a43-4b0e-9f55-0a7d2c3e4b21"))
    ]
    world.clock.set(NINE)
    assert await world.tasks.loop.fire_due() == len(prioritised) + 1
    runs = await runs_per_task(world)
    assert sum(runs.get(i, 0) for i in deduped) == 1  # the second of the key is a skip, not a run
    skipped = [t for i in deduped if (t := await world.tasks.get(i)).fire_count == 0]
    assert len(skipped) == 1 and (skipped[0].last_skip_reason or "").startswith("dedupe:")
    claimed = await world.store.runs.claim("me", cap=100, limit=100, now=NINE)
    assert [r.priority for r in claimed] == [1, 1, 3, 5, 5, 9]  # the deduped task's run is a 5
