"""The SQLite store as a whole: one writer thread for every part, durability across reopening, close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from coral_server.store import DeliveryFilter, SqliteStore, StoreClosed

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
