"""The Tasks service: create (with task dedupe), get, listing, update, actions and their errors, views."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from coral_server.scheduler import TaskFieldInvalid
from coral_server.tasks import TaskCanceled, TaskNotFound, TaskReadOnly
from tests.tasks.conftest import T0, World, body

OTHER = "5f0c9a9e-1111-4c1e-9a55-0d6a3b9e2c01"
HOUR = timedelta(hours=1)


async def test_create_get_and_the_view(world: World) -> None:
    created = await world.tasks.create(body())
    assert not created.deduplicated
    task = await world.tasks.get(created.task.id)
    assert task == created.task
    assert (task.status, task.source, task.priority, task.max_retries) == ("active", "api", 5, 3)
    assert task.payload == {"params": {"who": "x"}, "pipeline": body()["payload"]["pipeline"]}  # normalised
    assert world.tasks.next_fires(task) == [T0 + HOUR + timedelta(days=d) for d in range(5)]
    counts = await world.tasks.run_counts(task.id)
    assert counts.total == 0 and counts.last is None


async def test_unknown_ids(world: World) -> None:
    for call in (
        world.tasks.get("nope"),
        world.tasks.update("nope", {"title": "x"}),
        world.tasks.run_now("nope"),
        world.tasks.snooze("nope", 10),
        world.tasks.pause("nope"),
        world.tasks.resume("nope"),
        world.tasks.cancel("nope"),
        world.tasks.runs("nope"),
        world.tasks.run_counts("nope"),
    ):
        with pytest.raises(TaskNotFound):
            await call


async def test_a_bad_payload_is_refused_by_the_pipeline_executor(world: World) -> None:
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.tasks.create(body(payload={"pipeline": [{"uses": "teleport"}]}))
    assert caught.value.field == "payload.pipeline[0].uses"
    assert await world.tasks.count() == 0


async def test_task_dedupe_inside_and_outside_the_window(world: World) -> None:
    first = await world.tasks.create(body(dedupe_key="nightly", dedupe_window_seconds=300))
    world.clock.advance(300)
    again = await world.tasks.create(body(dedupe_key="nightly", dedupe_window_seconds=300, title="x"))
    assert again.deduplicated and again.task.id == first.task.id and again.task.title == "nightly"
    other = await world.tasks.create(body(dedupe_key="nightly", dedupe_window_seconds=300, created_by=OTHER))
    assert not other.deduplicated  # another creator's key
    world.clock.advance(1)
    later = await world.tasks.create(body(dedupe_key="nightly", dedupe_window_seconds=300))
    assert not later.deduplicated and later.task.id != first.task.id
    # A cancelled task no longer stands for its key.
    await world.tasks.cancel(later.task.id)
    await world.tasks.cancel(first.task.id)
    assert not (await world.tasks.create(body(dedupe_key="nightly", dedupe_window_seconds=300))).deduplicated


async def test_listing_filters_and_counts(world: World) -> None:
    a = (await world.tasks.create(body())).task
    world.clock.advance(1)
    b = (await world.tasks.create(body(schedule_kind="event", schedule_expr="t", created_by=OTHER))).task
    world.clock.advance(1)
    c = (await world.tasks.create(body())).task
    await world.tasks.pause(c.id)
    assert [t.id for t in await world.tasks.listing()] == [a.id, b.id, c.id]
    assert [t.id for t in await world.tasks.listing(status="paused")] == [c.id]
    assert [t.id for t in await world.tasks.listing(created_by=OTHER)] == [b.id]
    assert [t.id for t in await world.tasks.listing(schedule_kind="cron", limit=1, offset=1)] == [c.id]
    assert await world.tasks.count() == 3 and await world.tasks.count(status="active") == 2
    for kwargs, field in (
        ({"status": "sleeping"}, "status"),
        ({"schedule_kind": "weekly"}, "schedule_kind"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        with pytest.raises(TaskFieldInvalid) as caught:
            await world.tasks.listing(**kwargs)
        assert caught.value.field == field


async def test_update_changes_only_what_is_given(world: World) -> None:
    task = (await world.tasks.create(body(dedupe_key="k"))).task
    world.clock.advance(10)
    changed = await world.tasks.update(task.id, {"title": "renamed", "dedupe_key": None, "max_retries": 0})
    assert (changed.title, changed.dedupe_key, changed.max_retries) == ("renamed", None, 0)
    assert changed.schedule_expr == task.schedule_expr and changed.next_fire_at == task.next_fire_at
    assert changed.updated_at == task.updated_at + 10 and changed.version == task.version + 1
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.tasks.update(task.id, {"priority": 0})
    assert caught.value.field == "priority"
    with pytest.raises(TaskFieldInvalid):
        await world.tasks.update(task.id, {"payload": {"pipeline": "nope"}})
    moved = await world.tasks.update(task.id, {"timezone": "America/New_York"})
    assert (
        moved.next_fire_at == (T0 + 6 * HOUR).timestamp()
    )  # 09:00 in New York is 14:00 UTC... in March: EST
    assert world.tasks.next_fires(moved, 1)[0].hour == 14


async def test_a_cancelled_task_refuses_every_action(world: World) -> None:
    task = (await world.tasks.create(body())).task
    canceled = await world.tasks.cancel(task.id)
    assert canceled.status == "canceled" and world.tasks.next_fires(canceled) == []
    for call in (
        world.tasks.update(task.id, {"title": "x"}),
        world.tasks.run_now(task.id),
        world.tasks.snooze(task.id, 10),
        world.tasks.pause(task.id),
        world.tasks.resume(task.id),
        world.tasks.cancel(task.id),
    ):
        with pytest.raises(TaskCanceled):
            await call
    assert (await world.tasks.get(task.id)).status == "canceled"


async def test_a_file_task_is_read_only(world: World) -> None:
    task = (await world.tasks.create(body())).task
    task.source = "file"
    await world.store.tasks.save(task, task.version)
    with pytest.raises(TaskReadOnly):
        await world.tasks.update(task.id, {"title": "x"})
    with pytest.raises(TaskReadOnly):
        await world.tasks.pause(task.id)
    assert (await world.tasks.run_now(task.id)).trigger == "manual"  # running it is fine


async def test_snooze_rules(world: World) -> None:
    task = (await world.tasks.create(body())).task
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.tasks.snooze(task.id, 7 * 24 * 3600 + 1)
    assert caught.value.field == "delay_seconds"
    once = await world.tasks.snooze(task.id, 60, "a")
    twice = await world.tasks.snooze(task.id, 60, "b")  # snoozes add up
    assert once.next_fire_at == (T0 + HOUR).timestamp() + 60
    assert twice.next_fire_at == twice.snoozed_until == (T0 + HOUR).timestamp() + 120
    assert twice.snooze_reason == "b"


async def test_a_snoozed_event_task_ignores_its_topic_until_then(world: World) -> None:
    task = (await world.tasks.create(body(schedule_kind="event", schedule_expr="t"))).task
    snoozed = await world.tasks.snooze(task.id, 600)
    assert snoozed.snoozed_until == world.clock.time() + 600 and snoozed.next_fire_at is None
    assert await world.tasks.fire_event("t", {}) == []
    skipped = await world.tasks.get(task.id)
    assert skipped.skip_count == 1 and "snoozed" in (skipped.last_skip_reason or "")
    world.clock.advance(600)
    assert len(await world.tasks.fire_event("t", {})) == 1


async def test_event_fan_out(world: World) -> None:
    a = (await world.tasks.create(body(schedule_kind="event", schedule_expr="deploy"))).task
    b = (await world.tasks.create(body(schedule_kind="event", schedule_expr="deploy", created_by=OTHER))).task
    await world.tasks.create(body(schedule_kind="event", schedule_expr="other"))
    paused = (await world.tasks.create(body(schedule_kind="event", schedule_expr="deploy", title="p"))).task
    await world.tasks.pause(paused.id)
    runs = await world.tasks.fire_event("deploy", {"v": 2}, source="ci")
    assert sorted(r.task_id or "" for r in runs) == sorted([a.id, b.id])
    assert all(r.spec["event"] == {"topic": "deploy", "payload": {"v": 2}, "source": "ci"} for r in runs)
    assert await world.tasks.fire_event("nobody-listens", {}) == []


async def test_run_now_and_the_task_s_runs(world: World) -> None:
    task = (await world.tasks.create(body(priority=2, concurrency_key="ck"))).task
    await world.tasks.pause(task.id)
    run = await world.tasks.run_now(task.id)  # paused tasks may be run by hand
    assert (run.trigger, run.priority, run.concurrency_key, run.task_id) == ("manual", 2, "ck", task.id)
    second = await world.tasks.run_now(task.id)
    assert [r.id for r in await world.tasks.runs(task.id)] == [second.id, run.id]
    counts = await world.tasks.run_counts(task.id)
    assert counts.total == 2 and counts.last is not None and counts.last.id == second.id
    assert (await world.tasks.get(task.id)).last_run_id == second.id


async def test_without_a_pipeline_executor_tasks_are_refused(worlds: Callable[..., Any]) -> None:
    world: World = await worlds()
    del world.runs.executors["pipeline"]
    with pytest.raises(TaskFieldInvalid) as caught:
        await world.tasks.create(body())
    assert caught.value.field == "payload"
