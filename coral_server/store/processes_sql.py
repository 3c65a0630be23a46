"""Supervised processes in SQLite: SQL for the `processes` table and `SqliteProcesses`."""

from __future__ import annotations

import sqlite3

from coral_server.store.processes import ProcessRecord
from coral_server.store.writer import Writer

_COLUMNS = "id, instance, owner_kind, owner_id, name, runtime, pid, proc_start, container, started_at"


def _record(row: sqlite3.Row) -> ProcessRecord:
    return ProcessRecord(
        id=row["id"],
        instance=row["instance"],
        owner_kind=row["owner_kind"],
        owner_id=row["owner_id"],
        name=row["name"],
        runtime=row["runtime"],
        pid=row["pid"],
        proc_start=row["proc_start"],
        container=row["container"],
        started_at=row["started_at"],
    )


def upsert(conn: sqlite3.Connection, r: ProcessRecord) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO processes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            r.id,
            r.instance,
            r.owner_kind,
            r.owner_id,
            r.name,
            r.runtime,
            r.pid,
            r.proc_start,
            r.container,
            r.started_at,
        ),
    )


def delete(conn: sqlite3.Connection, id: str) -> None:
    conn.execute("DELETE FROM processes WHERE id = ?", (id,))


def listing(conn: sqlite3.Connection, instance: str | None) -> list[ProcessRecord]:
    if instance is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM processes ORDER BY started_at, id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM processes WHERE instance = ? ORDER BY started_at, id", (instance,)
        ).fetchall()
    return [_record(r) for r in rows]


class SqliteProcesses:
    """The `ProcessStore` of a SQLite store: each method is one hop to its writer thread."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def add(self, record: ProcessRecord) -> None:
        """Record a started unit (or replace the one with the same id)."""
        await self._writer.write(lambda c: upsert(c, record))

    async def remove(self, id: str) -> None:
        """Forget a unit; a no-op if it is not recorded."""
        await self._writer.write(lambda c: delete(c, id))

    async def listing(self, instance: str | None = None) -> list[ProcessRecord]:
        """The recorded units of `instance` (None: every instance), oldest first."""
        return await self._writer.read(lambda c: listing(c, instance))
