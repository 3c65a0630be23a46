"""The SQLite store as a whole: one writer thread for every part, durability across reopening, close."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from coral_server.store import DeliveryFilter, SqliteStore, StoreClosed, StoreHealth, StoreUnavailable

from .conftest import new_delivery, process_record, session_record


async def test_concurrent_enqueues_from_many_tasks_all_persist(tmp_path: Path) -> None:
    path = tmp_path / "coral.db"
    store = await SqliteStore.open(path)
    await asyncio.gather(*(store.deliveries.enqueue(new_delivery(f"d{i:03}", due=i)) for i in range(200)))
    await store.close()
    reopened = await SqliteStore.open(path)
    try:
        listed = await reopened.deliveries.listing(DeliveryFilter(limit=1000))
        assert sorted(d.id for d in listed) == [f"d{i:03}" for i in range(200)]
    finally:
        await reopened.close()


async def test_one_writer_thread_serves_every_call(store: SqliteStore) -> None:
    seen: set[str] = set()
    original = store._writer._executor.submit

    def spy(fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        def run():  # type: ignore[no-untyped-def]
            seen.add(threading.current_thread().name)
            return fn(*args, **kwargs)

        return original(run)

    store._writer._executor.submit = spy  # type: ignore[method-assign]
    await asyncio.gather(*(store.deliveries.enqueue(new_delivery(f"d{i}")) for i in range(20)))
    await store.deliveries.due(1000, 5)
    await store.processes.listing()
    await store.sessions.add(session_record("s1"))
    await store.sessions.append("s1", "message", b"{}")
    assert len(seen) == 1 and next(iter(seen)).startswith("coral-store")


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "coral.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosed):
        await store.deliveries.get("d")
    with pytest.raises(StoreClosed):
        await store.processes.add(process_record("p1"))
    with pytest.raises(StoreClosed):
        await store.sessions.journal("s1")


async def test_writes_the_database_refuses_are_store_unavailable_and_counted(tmp_path: Path) -> None:
    """A write SQLite cannot make (here: a read-only connection; a full disk is the same error class)
    raises StoreUnavailable, nothing is written, and the store's health says so until a write works."""
    health = StoreHealth(tmp_path / "coral.db")
    told: list[tuple[bool, str | None]] = []
    health.listeners.append(lambda available, error: told.append((available, error)))
    store = await SqliteStore.open(tmp_path / "coral.db", health=health)
    try:
        await store._writer.read(lambda c: c.execute("PRAGMA query_only=ON"))
        for i in range(3):
            with pytest.raises(StoreUnavailable, match="readonly database"):
                await store.deliveries.enqueue(new_delivery(f"d{i}"))
        assert (health.failing, health.failures) == (True, 3)
        assert told == [(False, "attempt to write a readonly database")]  # once, not per write
        assert health.to_json()["available"] is False
        await store._writer.read(lambda c: c.execute("PRAGMA query_only=OFF"))
        await store.deliveries.enqueue(new_delivery("ok"))
        assert not health.failing and told[-1] == (True, None)
        assert [d.id for d in await store.deliveries.listing(DeliveryFilter())] == ["ok"]
        with pytest.raises(sqlite3.IntegrityError):  # a broken rule is not an unavailable store
            await store.deliveries.enqueue(new_delivery("ok"))
        assert not health.failing
    finally:
        await store.close()
