"""`store.processes`: what the supervisor started, per instance, kept across a restart of the store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from coral_server.store import SqliteStore

from .conftest import process_record


async def test_added_records_are_listed_oldest_first_per_instance(store: SqliteStore) -> None:
    a = process_record("p-a", started_at=30.0)
    b = process_record("p-b", started_at=10.0, owner_kind="run", owner_id="17", name="cli")
    other = process_record(
        "p-c", instance="i-2", runtime="docker", pid=None, proc_start=None, container="f00d", started_at=20.0
    )
    for record in (a, b, other):
        await store.processes.add(record)
    assert await store.processes.listing() == [b, other, a]
    assert await store.processes.listing("i-1") == [b, a]
    assert await store.processes.listing("i-2") == [other]
    assert await store.processes.listing("i-none") == []


async def test_adding_the_same_id_again_replaces_the_record(store: SqliteStore) -> None:
    starting = process_record("p1", runtime="docker", pid=None, proc_start=None, container=None)
    await store.processes.add(starting)
    running = replace(starting, container="c0ffee")
    await store.processes.add(running)
    assert await store.processes.listing() == [running]


async def test_remove_forgets_one_record_and_ignores_unknown_ids(store: SqliteStore) -> None:
    await store.processes.add(process_record("p1"))
    await store.processes.add(process_record("p2"))
    await store.processes.remove("p1")
    await store.processes.remove("p1")  # twice: nothing happens
    await store.processes.remove("never")
    assert [p.id for p in await store.processes.listing()] == ["p2"]


async def test_records_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "coral.db"
    record = process_record("p1", pid=2**31 + 5, proc_start=2**40)  # large pids and tick counts fit
    first = await SqliteStore.open(path)
    await first.processes.add(record)
    await first.close()  # as a crash would leave it: nothing removed
    second = await SqliteStore.open(path)
    try:
        assert await second.processes.listing("i-1") == [record]
    finally:
        await second.close()
