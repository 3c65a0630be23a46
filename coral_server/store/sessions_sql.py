"""Live sessions in SQLite: SQL for the `sessions` and `session_messages` tables and `SqliteSessions`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from coral_server.store.sessions import JournalEntry, SessionNotRecorded, SessionRecord
from coral_server.store.writer import Writer

_COLUMNS = "id, namespace, instance, created_at_ms, end_webhook, agents"


def _record(row: sqlite3.Row) -> SessionRecord:
    end_webhook = row["end_webhook"]
    return SessionRecord(
        id=row["id"],
        namespace=row["namespace"],
        instance=row["instance"],
        created_at_ms=row["created_at_ms"],
        end_webhook=None if end_webhook is None else bytes(end_webhook),
        agents=bytes(row["agents"]),
    )


def upsert(conn: sqlite3.Connection, r: SessionRecord) -> None:
    # ON CONFLICT … DO UPDATE, not REPLACE: a replace deletes the row first, and its journal with it.
    conn.execute(
        f"INSERT INTO sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        " namespace = excluded.namespace, instance = excluded.instance,"
        " created_at_ms = excluded.created_at_ms, end_webhook = excluded.end_webhook,"
        " agents = excluded.agents",
        (r.id, r.namespace, r.instance, r.created_at_ms, r.end_webhook, r.agents),
    )


def delete(conn: sqlite3.Connection, id: str) -> None:
    conn.execute("DELETE FROM sessions WHERE id = ?", (id,))  # its journal goes by ON DELETE CASCADE


def listing(conn: sqlite3.Connection, instance: str | None) -> list[SessionRecord]:
    if instance is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM sessions ORDER BY created_at_ms, id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE instance = ? ORDER BY created_at_ms, id", (instance,)
        ).fetchall()
    return [_record(r) for r in rows]


def append(conn: sqlite3.Connection, session_id: str, kind: str, body: bytes) -> int:
    row = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM session_messages WHERE session_id = ?", (session_id,)
    ).fetchone()
    seq = int(row[0])
    try:
        conn.execute(
            "INSERT INTO session_messages (session_id, seq, kind, body) VALUES (?, ?, ?, ?)",
            (session_id, seq, kind, body),
        )
    except sqlite3.IntegrityError as exc:
        if "FOREIGN KEY" not in str(exc):
            raise
        raise SessionNotRecorded(session_id) from None
    return seq


def append_many(conn: sqlite3.Connection, entries: Sequence[tuple[str, str, bytes]]) -> None:
    for session_id, kind, body in entries:
        append(conn, session_id, kind, body)


def journal(conn: sqlite3.Connection, id: str) -> list[JournalEntry]:
    rows = conn.execute(
        "SELECT seq, kind, body FROM session_messages WHERE session_id = ? ORDER BY seq", (id,)
    ).fetchall()
    return [JournalEntry(seq=r["seq"], kind=r["kind"], body=bytes(r["body"])) for r in rows]


class SqliteSessions:
    """The `SessionStore` of a SQLite store: each method is one hop to its writer thread."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def add(self, record: SessionRecord) -> None:
        """Record a live session (or replace the one with the same id, keeping its journal)."""
        await self._writer.write(lambda c: upsert(c, record))

    async def remove(self, id: str) -> None:
        """Forget a session and its journal; a no-op if it is not recorded."""
        await self._writer.write(lambda c: delete(c, id))

    async def listing(self, instance: str | None = None) -> list[SessionRecord]:
        """The recorded sessions of `instance` (None: every instance), oldest first."""
        return await self._writer.read(lambda c: listing(c, instance))

    async def append(self, session_id: str, kind: str, body: bytes) -> int:
        """Append one journal entry in one hop; its seq."""
        return await self._writer.write(lambda c: append(c, session_id, kind, body))

    async def append_many(self, entries: Sequence[tuple[str, str, bytes]]) -> None:
        """Append a batch of (session_id, kind, body) in one hop and one transaction."""
        batch = list(entries)
        if batch:
            await self._writer.write(lambda c: append_many(c, batch))

    async def journal(self, id: str) -> list[JournalEntry]:
        """A session's journal, oldest first."""
        return await self._writer.read(lambda c: journal(c, id))
