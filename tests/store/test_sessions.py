"""`store.sessions`: live sessions and their journals, enough to close a crashed instance's sessions."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from coral_server.store import JournalEntry, SessionNotRecorded, SqliteStore

from .conftest import session_record


async def test_added_sessions_are_listed_oldest_first_per_instance(store: SqliteStore) -> None:
    late = session_record("s-late", created_at_ms=300)
    early = session_record("s-early", created_at_ms=100, end_webhook=None)
    other = session_record("s-other", instance="i-2", created_at_ms=200)
    for record in (late, early, other):
        await store.sessions.add(record)
    assert await store.sessions.listing() == [early, other, late]
    assert await store.sessions.listing("i-1") == [early, late]
    assert (await store.sessions.listing("i-2"))[0].end_webhook == other.end_webhook
    assert await store.sessions.listing("i-none") == []


async def test_the_journal_keeps_entries_in_order_per_session(store: SqliteStore) -> None:
    await store.sessions.add(session_record("s1"))
    await store.sessions.add(session_record("s2"))
    assert await store.sessions.append("s1", "thread", b'{"id":"t1"}') == 1
    assert await store.sessions.append("s2", "message", b'{"n":0}') == 1
    assert await store.sessions.append("s1", "message", b"\x00raw bytes\xff") == 2
    assert await store.sessions.journal("s1") == [
        JournalEntry(1, "thread", b'{"id":"t1"}'),
        JournalEntry(2, "message", b"\x00raw bytes\xff"),
    ]
    assert await store.sessions.journal("s2") == [JournalEntry(1, "message", b'{"n":0}')]
    assert await store.sessions.journal("never") == []


async def test_concurrent_appends_get_distinct_seqs_in_call_order(store: SqliteStore) -> None:
    await store.sessions.add(session_record("s1"))
    seqs = await asyncio.gather(
        *(store.sessions.append("s1", "message", str(i).encode()) for i in range(100))
    )
    assert seqs == list(range(1, 101))
    assert [e.body for e in await store.sessions.journal("s1")] == [str(i).encode() for i in range(100)]


async def test_append_many_is_one_unit_all_or_none(store: SqliteStore) -> None:
    await store.sessions.add(session_record("s1"))
    await store.sessions.add(session_record("s2"))
    await store.sessions.append_many(
        [("s1", "thread", b"t"), ("s2", "message", b"a"), ("s1", "message", b"b")]
    )
    assert [(e.seq, e.body) for e in await store.sessions.journal("s1")] == [(1, b"t"), (2, b"b")]
    with pytest.raises(SessionNotRecorded):
        await store.sessions.append_many([("s1", "message", b"lost"), ("nobody", "message", b"x")])
    assert [e.body for e in await store.sessions.journal("s1")] == [b"t", b"b"]  # rolled back whole
    await store.sessions.append_many([])


async def test_appending_for_an_unrecorded_session_is_refused(store: SqliteStore) -> None:
    with pytest.raises(SessionNotRecorded):
        await store.sessions.append("nobody", "message", b"{}")


async def test_adding_again_replaces_the_record_and_keeps_the_journal(store: SqliteStore) -> None:
    first = session_record("s1", agents=b'[{"name":"alice","status":"running"}]')
    await store.sessions.add(first)
    await store.sessions.append("s1", "message", b"hi")
    updated = replace(first, agents=b'[{"name":"alice","status":"exited"}]')
    await store.sessions.add(updated)
    assert await store.sessions.listing() == [updated]
    assert [e.body for e in await store.sessions.journal("s1")] == [b"hi"]
    assert await store.sessions.append("s1", "message", b"again") == 2


async def test_remove_deletes_the_session_with_its_journal(store: SqliteStore) -> None:
    await store.sessions.add(session_record("s1"))
    await store.sessions.add(session_record("s2"))
    await store.sessions.append("s1", "message", b"x")
    await store.sessions.append("s2", "message", b"y")
    await store.sessions.remove("s1")
    await store.sessions.remove("s1")  # twice: nothing happens
    assert [s.id for s in await store.sessions.listing()] == ["s2"]
    assert await store.sessions.journal("s1") == []
    assert [e.body for e in await store.sessions.journal("s2")] == [b"y"]
    await store.sessions.add(session_record("s1"))  # the id can be used again, from seq 1
    assert await store.sessions.append("s1", "message", b"new") == 1


async def test_sessions_and_journals_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "coral.db"
    record = session_record("s1")
    first = await SqliteStore.open(path)
    await first.sessions.add(record)
    await first.sessions.append("s1", "message", b"before the crash")
    await first.close()
    second = await SqliteStore.open(path)
    try:
        assert await second.sessions.listing("i-1") == [record]
        assert await second.sessions.journal("s1") == [JournalEntry(1, "message", b"before the crash")]
    finally:
        await second.close()
