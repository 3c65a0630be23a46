"""Schema migrations: applied once, in order, recorded in schema_version; a newer schema is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coral_server.store import SqliteStore
from coral_server.store.migrations import LATEST, Migration, SchemaTooNew, apply_migrations, current_version


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_apply_is_idempotent(tmp_path: Path) -> None:
    conn = raw(tmp_path / "db")
    try:
        assert apply_migrations(conn) == list(range(1, LATEST + 1))
        assert apply_migrations(conn) == []
        assert current_version(conn) == LATEST
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == LATEST
    finally:
        conn.close()


async def test_reopening_keeps_schema_and_data(tmp_path: Path) -> None:
    from .conftest import new_delivery

    path = tmp_path / "coral.db"
    first = await SqliteStore.open(path)
    await first.deliveries.enqueue(new_delivery("d1", headers={"X-A": "b"}, body=b"\x00\xffraw"))
    await first.close()
    second = await SqliteStore.open(path)
    try:
        got = await second.deliveries.get("d1")
        assert got is not None and got.body == b"\x00\xffraw" and got.headers == {"X-A": "b"}
    finally:
        await second.close()
    conn = raw(path)
    try:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, LATEST + 1)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_a_later_migration_applies_on_top(tmp_path: Path) -> None:
    conn = raw(tmp_path / "db")
    try:
        apply_migrations(conn)
        extra = Migration(LATEST + 1, ("CREATE TABLE extra (x INTEGER)",))
        from coral_server.store.migrations import MIGRATIONS

        assert apply_migrations(conn, (*MIGRATIONS, extra)) == [LATEST + 1]
        assert apply_migrations(conn, (*MIGRATIONS, extra)) == []
    finally:
        conn.close()


def test_failed_migration_rolls_back_whole(tmp_path: Path) -> None:
    conn = raw(tmp_path / "db")
    try:
        apply_migrations(conn)
        from coral_server.store.migrations import MIGRATIONS

        broken = Migration(LATEST + 1, ("CREATE TABLE half (x INTEGER)", "NOT SQL"))
        with pytest.raises(sqlite3.OperationalError):
            apply_migrations(conn, (*MIGRATIONS, broken))
        assert current_version(conn) == LATEST
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "half" not in tables
    finally:
        conn.close()


def test_version_1_database_is_upgraded_keeping_its_deliveries(tmp_path: Path) -> None:
    from coral_server.store.migrations import MIGRATIONS

    conn = raw(tmp_path / "db")
    try:
        apply_migrations(conn, MIGRATIONS[:1])
        conn.execute(
            "INSERT INTO webhook_deliveries (id, kind, url, headers, body, signature_header, status,"
            " max_attempts, next_attempt_at, created_at) VALUES ('old', 'k', 'http://x', '{}', x'00',"
            " 'X-Coral-Signature', 'pending', 3, 1.0, 1.0)"
        )
        assert apply_migrations(conn) == list(range(2, LATEST + 1))
        row = conn.execute("SELECT id, subject FROM webhook_deliveries").fetchone()
        assert tuple(row) == ("old", None)
        assert conn.execute("SELECT COUNT(*) FROM webhook_attempts").fetchone()[0] == 0
    finally:
        conn.close()


def test_version_2_database_is_upgraded_keeping_its_deliveries_and_attempts(tmp_path: Path) -> None:
    from coral_server.store.migrations import MIGRATIONS

    conn = raw(tmp_path / "db")
    try:
        apply_migrations(conn, MIGRATIONS[:2])
        conn.execute(
            "INSERT INTO webhook_deliveries (id, kind, url, headers, body, signature_header, status,"
            " max_attempts, next_attempt_at, created_at, subject) VALUES ('old', 'k', 'http://x', '{}',"
            " x'00', 'X-Coral-Signature', 'pending', 3, 1.0, 1.0, 'ns/s1')"
        )
        conn.execute(
            "INSERT INTO webhook_attempts (delivery_id, number, at, status) VALUES ('old', 1, 1.5, 500)"
        )
        assert apply_migrations(conn) == list(range(3, LATEST + 1))
        assert tuple(conn.execute("SELECT id, subject FROM webhook_deliveries").fetchone()) == (
            "old",
            "ns/s1",
        )
        assert conn.execute("SELECT COUNT(*) FROM webhook_attempts").fetchone()[0] == 1
        for table in ("processes", "sessions", "session_messages"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    finally:
        conn.close()


async def test_an_upgraded_database_serves_every_part(tmp_path: Path) -> None:
    from coral_server.store.migrations import MIGRATIONS

    from .conftest import process_record, session_record

    path = tmp_path / "coral.db"
    conn = raw(path)
    apply_migrations(conn, MIGRATIONS[:1])  # a database from the first release
    conn.close()
    store = await SqliteStore.open(path)
    try:
        await store.processes.add(process_record("p1"))
        await store.sessions.add(session_record("s1"))
        assert await store.sessions.append("s1", "message", b"{}") == 1
        assert [p.id for p in await store.processes.listing()] == ["p1"]
        assert [e.seq for e in await store.sessions.journal("s1")] == [1]
    finally:
        await store.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "coral.db"
    conn = raw(path)
    apply_migrations(conn)
    conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (LATEST + 1,))
    conn.close()
    with pytest.raises(SchemaTooNew):
        await SqliteStore.open(path)
