"""The writer's group commit: writes queued together share one commit, each still all-or-nothing,
each caller answered only once its write is committed, a read sees the writes submitted before it,
and a group the database refuses fails each of its writes (StoreUnavailable, none kept)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from coral_server.store import StoreUnavailable
from coral_server.store.writer import Writer


@pytest.fixture
async def writer(tmp_path: Path) -> Any:
    w = await Writer.open(tmp_path / "coral.db")
    await w.write(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
    yield w
    await w.close()


def insert(k: str, v: int = 0) -> Any:
    return lambda c: c.execute("INSERT INTO t VALUES (?, ?)", (k, v)).rowcount


async def rows(writer: Writer) -> dict[str, int]:
    return dict(await writer.read(lambda c: c.execute("SELECT k, v FROM t").fetchall()))


_held: set[asyncio.Future[None]] = set()


async def hold_thread(writer: Writer) -> threading.Event:
    """Block the writer's thread until the returned event is set (so writes queue up behind it)."""
    release, holding = threading.Event(), threading.Event()

    def block(_: sqlite3.Connection) -> None:
        holding.set()
        release.wait(10)

    held = asyncio.ensure_future(writer.read(block))
    _held.add(held)
    held.add_done_callback(_held.discard)
    await asyncio.get_running_loop().run_in_executor(None, holding.wait, 10)
    return release


async def test_queued_writes_share_one_commit_each_all_or_nothing(writer: Writer) -> None:
    commits: list[int] = []
    await writer.read(lambda c: c.set_trace_callback(lambda sql: sql == "COMMIT" and commits.append(1)))
    release = await hold_thread(writer)

    def half_then_fail(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES ('half', 1)")
        raise ValueError("this write fails after changing a row")

    futures = [
        asyncio.ensure_future(writer.write(insert("a"))),
        asyncio.ensure_future(writer.write(half_then_fail)),
        asyncio.ensure_future(writer.write(insert("a"))),  # a duplicate key: IntegrityError
        asyncio.ensure_future(writer.write(insert("b"))),
    ]
    await asyncio.sleep(0)
    assert not any(f.done() for f in futures)  # nobody is answered before the commit
    release.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == 1 and results[3] == 1
    assert isinstance(results[1], ValueError) and isinstance(results[2], sqlite3.IntegrityError)
    assert await rows(writer) == {"a": 0, "b": 0}  # the failed writes left nothing behind
    assert commits == [1]  # four writes, one commit


async def test_a_read_sees_every_write_submitted_before_it(writer: Writer) -> None:
    release = await hold_thread(writer)
    writes = [asyncio.ensure_future(writer.write(insert(f"k{i}", i))) for i in range(50)]
    read = asyncio.ensure_future(rows(writer))
    later = asyncio.ensure_future(writer.write(insert("later")))
    release.set()
    seen = await read
    assert {f"k{i}" for i in range(50)} <= set(seen)
    await asyncio.gather(*writes, later)


async def test_a_group_the_database_refuses_fails_each_write_and_keeps_none(writer: Writer) -> None:
    release = await hold_thread(writer)
    futures = [asyncio.ensure_future(writer.write(insert(f"g{i}"))) for i in range(3)]
    readonly = asyncio.ensure_future(writer.read(lambda c: c.execute("PRAGMA query_only=ON")))
    after = [asyncio.ensure_future(writer.write(insert(f"h{i}"))) for i in range(3)]
    release.set()
    assert all(r == 1 for r in await asyncio.gather(*futures))
    await readonly
    results = await asyncio.gather(*after, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert writer.health.failing
    await writer.read(lambda c: c.execute("PRAGMA query_only=OFF"))
    assert set(await rows(writer)) == {"g0", "g1", "g2"}
    await writer.write(insert("ok"))
    assert not writer.health.failing
