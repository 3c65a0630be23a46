"""The tasks table: CRUD, compare-and-set, due tasks, fires with their run (dedupe, skips), retries."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from coral_server.store import SqliteStore, tasks_sql
from coral_server.store.migrations import apply_migrations
from coral_server.store.runs import Run
from coral_server.store.tasks import Fire, Task, TaskChanged, TaskFilter

CREATOR = "0b7e7a8e-2f35-4a53-9d3b-2b1c9f0c0a11"


def task(id: str, **extra: Any) -> Task:
    values: dict[str, Any] = {
        "id": id,
        "title": f"task {id}",
        "description": "d",
        "schedule_kind": "cron",
        "schedule_expr": "0 * * * *",
        "timezone": "UTC",
        "payload": {"params": {}, "pipeline": []},
        "created_by": CREATOR,
        "created_at": 100.0,
        "updated_at": 100.0,
        "next_fire_at": 3600.0,
    }
    values.update(extra)
    return Task(**values)


def run(**extra: Any) -> Run:
    values: dict[str, Any] = {
        "id": 0,
        "kind": "pipeline",
        "trigger": "cron",
        "status": "pending",
        "spec": {"pipeline": []},
        "display_name": "r",
        "created_at": 3600.0,
    }
    values.update(extra)
    return Run(**values)


async def test_insert_get_listing_count(store: SqliteStore) -> None:
    await store.tasks.insert(task("a", created_at=1.0))
    await store.tasks.insert(task("b", created_at=2.0, status="paused", schedule_kind="event"))
    await store.tasks.insert(task("c", created_at=3.0, created_by="someone-else"))
    got = await store.tasks.get("a")
    assert got == task("a", created_at=1.0)
    assert await store.tasks.get("nope") is None
    assert [t.id for t in await store.tasks.listing(TaskFilter())] == ["a", "b", "c"]
    assert [t.id for t in await store.tasks.listing(TaskFilter(status="active"))] == ["a", "c"]
    assert [t.id for t in await store.tasks.listing(TaskFilter(created_by=CREATOR))] == ["a", "b"]
    assert [t.id for t in await store.tasks.listing(TaskFilter(schedule_kind="event"))] == ["b"]
    assert [t.id for t in await store.tasks.listing(TaskFilter(limit=1, offset=1))] == ["b"]
    assert await store.tasks.count(TaskFilter(limit=1)) == 3
    assert await store.tasks.count(TaskFilter(status="paused")) == 1


async def test_task_dedupe_inside_and_outside_the_window(store: SqliteStore) -> None:
    _, dup = await store.tasks.insert(task("a", dedupe_key="k", dedupe_window_seconds=60, created_at=100.0))
    assert not dup
    same, dup = await store.tasks.insert(
        task("b", dedupe_key="k", dedupe_window_seconds=60, created_at=160.0)
    )
    assert dup and same.id == "a"
    later, dup = await store.tasks.insert(
        task("c", dedupe_key="k", dedupe_window_seconds=60, created_at=161.0)
    )
    assert not dup and later.id == "c"
    # Another creator's key is its own; without a window, any active task with the key counts.
    _, dup = await store.tasks.insert(task("d", dedupe_key="k", created_by="other", created_at=10_000.0))
    assert not dup
    found, dup = await store.tasks.insert(task("e", dedupe_key="k", created_by="other", created_at=99_999.0))
    assert dup and found.id == "d"


async def test_save_is_compare_and_set(store: SqliteStore) -> None:
    await store.tasks.insert(task("a"))
    one = await store.tasks.get("a")
    two = await store.tasks.get("a")
    assert one is not None and two is not None
    one.title = "first"
    saved = await store.tasks.save(one, one.version)
    assert saved.version == 2
    two.title = "second"
    with pytest.raises(TaskChanged):
        await store.tasks.save(two, two.version)
    stored = await store.tasks.get("a")
    assert stored is not None and stored.title == "first"


async def test_due_and_next_fire_at_see_only_armed_active_tasks(store: SqliteStore) -> None:
    await store.tasks.insert(task("late", next_fire_at=50.0))
    await store.tasks.insert(task("soon", next_fire_at=100.0))
    await store.tasks.insert(task("later", next_fire_at=200.0))
    await store.tasks.insert(task("paused", next_fire_at=10.0, status="paused"))
    await store.tasks.insert(task("event", schedule_kind="event", schedule_expr="t", next_fire_at=None))
    assert [t.id for t in await store.tasks.due(100.0, 10)] == ["late", "soon"]
    assert await store.tasks.next_fire_at() == 50.0
    assert [t.id for t in await store.tasks.by_topic("t")] == ["event"]
    assert await store.tasks.by_topic("other") == []


async def test_fire_admits_the_run_and_moves_the_task_in_one_step(store: SqliteStore) -> None:
    await store.tasks.insert(task("a", priority=2, concurrency_key="ck"))
    fired = await store.tasks.fire(
        Fire("a", 1, 3600.5, run=run(), replan=True, next_fire_at=7200.0, fired_for=3600.0)
    )
    assert fired is not None and fired.run is not None
    assert (fired.run.task_id, fired.run.priority, fired.run.concurrency_key) == ("a", 2, "ck")
    stored = await store.tasks.get("a")
    assert stored is not None
    assert (
        stored.next_fire_at,
        stored.last_fire_at,
        stored.last_run_id,
        stored.fire_count,
        stored.version,
    ) == (
        7200.0,
        3600.0,
        fired.run.id,
        1,
        2,
    )
    # The same decision again (a second server, a retried pass) changes nothing: the version moved.
    assert await store.tasks.fire(Fire("a", 1, 3600.6, run=run(), replan=True, next_fire_at=7200.0)) is None
    assert len(await store.runs.active()) == 1
    # A paused task is not fired.
    stored.status = "paused"
    await store.tasks.save(stored, stored.version)
    assert await store.tasks.fire(Fire("a", stored.version, 7200.0, run=run())) is None


async def test_run_dedupe_window_skips_and_records(store: SqliteStore) -> None:
    await store.tasks.insert(task("a", dedupe_key="k", dedupe_window_seconds=60))
    first = await store.tasks.fire(Fire("a", 1, 1000.0, run=run(created_at=1000.0)))
    assert first is not None and first.run is not None and first.run.dedupe_key == "k"
    second = await store.tasks.fire(Fire("a", 2, 1060.0, run=run(created_at=1060.0)))
    assert second is not None and second.run is None
    assert second.duplicate_of is not None and second.duplicate_of.id == first.run.id
    assert second.task.skip_count == 1 and second.task.last_skip_at == 1060.0
    assert "dedupe" in (second.task.last_skip_reason or "")
    third = await store.tasks.fire(Fire("a", 3, 1061.0, run=run(created_at=1061.0)))
    assert third is not None and third.run is not None
    # Dedupe off (a manual run): always admitted.
    manual = await store.tasks.fire(Fire("a", 4, 1062.0, run=run(created_at=1062.0), dedupe=False))
    assert manual is not None and manual.run is not None


async def test_run_dedupe_without_window_waits_for_the_active_run_to_end(store: SqliteStore) -> None:
    await store.tasks.insert(task("a", dedupe_key="k"))
    first = await store.tasks.fire(Fire("a", 1, 1000.0, run=run(created_at=1000.0)))
    assert first is not None and first.run is not None
    blocked = await store.tasks.fire(Fire("a", 2, 5000.0, run=run(created_at=5000.0)))
    assert blocked is not None and blocked.run is None
    first.run.status = "completed"
    await store.runs.update(first.run)
    again = await store.tasks.fire(Fire("a", 3, 5001.0, run=run(created_at=5001.0)))
    assert again is not None and again.run is not None


async def test_a_skip_without_a_run_advances_and_records(store: SqliteStore) -> None:
    await store.tasks.insert(task("a", snoozed_until=3600.0))
    fired = await store.tasks.fire(
        Fire("a", 1, 9000.0, replan=True, next_fire_at=10800.0, skip_reason="misfire", clear_snooze=True)
    )
    assert fired is not None and fired.run is None and fired.duplicate_of is None
    assert (fired.task.next_fire_at, fired.task.skip_count, fired.task.snoozed_until) == (10800.0, 1, None)


async def test_a_retry_is_decided_once(store: SqliteStore) -> None:
    await store.tasks.insert(task("a"))
    fired = await store.tasks.fire(Fire("a", 1, 1000.0, run=run(created_at=1000.0)))
    assert fired is not None and fired.run is not None
    failed = fired.run
    failed.status, failed.retry_pending, failed.finished_at = "failed", True, 1001.0
    await store.runs.update(failed)
    (pending,) = await store.tasks.pending_retries(0, 10)
    assert pending.run.id == failed.id and pending.task is not None and pending.task.id == "a"
    assert await store.tasks.pending_retries(failed.id, 10) == []
    retry = await store.tasks.retry(
        failed.id, run(attempt=2, task_id="a", created_at=1002.0, not_before=1011.0)
    )
    assert retry is not None and retry.retry_of == failed.id and retry.waiting_reason == "not_before"
    assert await store.tasks.retry(failed.id, run(attempt=2, task_id="a")) is None  # decided already
    assert await store.tasks.pending_retries(0, 10) == []
    counts = await store.tasks.run_counts("a")
    assert counts.by_status == {"failed": 1, "pending": 1} and counts.total == 2
    assert counts.last is not None and counts.last.id == retry.id


def test_the_due_reads_walk_the_due_index_in_fire_order(tmp_path: Path) -> None:
    """The next due tasks are read from the due index, in its order: never by sorting every task due
    then (10,000 in a burst) nor by scanning the active ones, whatever the other indexes."""
    conn = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    apply_migrations(conn)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    tasks_sql.due(conn, 5.0, 10)
    tasks_sql.upcoming(conn, 10)
    tasks_sql.next_fire_at(conn)
    conn.set_trace_callback(None)
    assert len(statements) == 3
    for statement in statements:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
        searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
        assert searches and all("USING INDEX tasks_due" in step for step in searches), (statement, plan)
        assert not any("TEMP B-TREE" in step for step in plan), (statement, plan)
    conn.close()
