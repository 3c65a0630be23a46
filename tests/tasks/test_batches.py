"""The scheduler's batch paths over real store files: a pass's fires in one transaction (two servers
racing on one database never fire a task twice; a crash mid-batch loses nothing), and the start-up
planning pass (stale plans corrected, due and snoozed tasks left to the fire rule)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from coral_server.store import tasks_sql
from coral_server.store.runs import RunFilter
from coral_server.store.tasks import Replan, Task
from tests.tasks.conftest import T0, World, body

NINE = (T0 + timedelta(hours=1)).timestamp()
TASKS = 60


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
