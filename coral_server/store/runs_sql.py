"""SQL for the `runs` table; synchronous functions run on the store's writer thread."""

from __future__ import annotations

import sqlite3
from typing import Any, cast

import orjson

from coral_server.store.runs import (
    ActiveSlot,
    ExitReason,
    Run,
    RunChanged,
    RunFilter,
    RunLimitReached,
    RunStatus,
    Trigger,
)
from coral_server.store.writer import Writer

_ACTIVE_SQL = "status IN ('pending', 'running', 'waiting_input')"
# Runs that hold a slot: started ones, and pending ones a dispatcher has claimed (being prepared).
_BUSY_SQL = "(status IN ('running', 'waiting_input') OR (status = 'pending' AND owner IS NOT NULL))"
_MUTABLE = (
    "status",
    "display_name",
    "started_at",
    "finished_at",
    "exit_reason",
    "error",
    "result",
    "worktree_path",
    "branch",
    "owner",
    "auto_accepts",
    "waiting_for",
    "output",
)


def _row(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        kind=row["kind"],
        trigger=cast(Trigger, row["trigger"]),
        status=cast(RunStatus, row["status"]),
        spec=orjson.loads(row["spec"]),
        display_name=row["display_name"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_reason=cast("ExitReason | None", row["exit_reason"]),
        error=row["error"],
        result=None if row["result"] is None else orjson.loads(row["result"]),
        worktree_path=row["worktree_path"],
        branch=row["branch"],
        webhook_url=row["webhook_url"],
        priority=row["priority"],
        task_id=row["task_id"],
        attempt=row["attempt"],
        owner=row["owner"],
        auto_accepts=orjson.loads(row["auto_accepts"]),
        waiting_for=row["waiting_for"],
        output=row["output"],
    )


def _value(run: Run, column: str) -> Any:
    value = getattr(run, column)
    if column == "result":
        return None if value is None else orjson.dumps(value).decode()
    if column == "auto_accepts":
        return orjson.dumps(value).decode()
    return value


def admit(conn: sqlite3.Connection, run: Run, cap: int | None) -> Run:
    if cap is not None:
        (active,) = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {_ACTIVE_SQL}").fetchone()
        if active >= cap:
            raise RunLimitReached(cap)
    cursor = conn.execute(
        "INSERT INTO runs (kind, trigger, status, spec, display_name, created_at, webhook_url, priority,"
        " task_id, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run.kind,
            run.trigger,
            run.status,
            orjson.dumps(run.spec).decode(),
            run.display_name,
            run.created_at,
            run.webhook_url,
            run.priority,
            run.task_id,
            run.attempt,
        ),
    )
    run.id = int(cursor.lastrowid or 0)
    if not run.display_name:
        run.display_name = f"Task #{run.id}"
        conn.execute("UPDATE runs SET display_name = ? WHERE id = ?", (run.display_name, run.id))
    return run


def claim(conn: sqlite3.Connection, owner: str, cap: int, limit: int) -> list[Run]:
    (busy,) = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {_BUSY_SQL}").fetchone()
    room = min(limit, cap - busy)
    if room <= 0:
        return []
    rows = conn.execute(
        "SELECT * FROM runs WHERE status = 'pending' AND owner IS NULL ORDER BY priority, id LIMIT ?",
        (room,),
    ).fetchall()
    runs = [_row(r) for r in rows]
    for run in runs:
        run.owner = owner
        conn.execute("UPDATE runs SET owner = ? WHERE id = ?", (owner, run.id))
    return runs


def update(conn: sqlite3.Connection, run: Run, expect: tuple[RunStatus, ...] | None) -> None:
    if expect is not None:
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run.id,)).fetchone()
        actual = "missing" if row is None else row["status"]
        if actual not in expect:
            raise RunChanged(run.id, expect, actual)
    assignments = ", ".join(f"{c} = ?" for c in _MUTABLE)
    conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*(_value(run, c) for c in _MUTABLE), run.id))


def get(conn: sqlite3.Connection, run_id: int) -> Run | None:
    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else _row(row)


def listing(conn: sqlite3.Connection, where: RunFilter) -> list[Run]:
    clauses: list[str] = []
    args: list[Any] = []
    if where.status is not None:
        clauses.append("status = ?")
        args.append(where.status)
    if where.trigger is not None:
        clauses.append("trigger = ?")
        args.append(where.trigger)
    if where.task_id is not None:
        clauses.append("task_id = ?")
        args.append(where.task_id)
    if where.before is not None:
        clauses.append("id < ?")
        args.append(where.before)
    sql = "SELECT * FROM runs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(where.limit)
    return [_row(r) for r in conn.execute(sql, args).fetchall()]


def active(conn: sqlite3.Connection, owner: str | None) -> list[Run]:
    sql = f"SELECT * FROM runs WHERE {_ACTIVE_SQL}"
    args: tuple[Any, ...] = ()
    if owner is not None:
        sql += " AND owner = ?"
        args = (owner,)
    return [_row(r) for r in conn.execute(sql + " ORDER BY id", args).fetchall()]


def active_slots(conn: sqlite3.Connection) -> list[ActiveSlot]:
    rows = conn.execute(
        f"SELECT status, started_at, json_extract(spec, '$.max_duration_s') FROM runs WHERE {_ACTIVE_SQL}"
    ).fetchall()
    return [
        ActiveSlot(status, started, float(limit) if isinstance(limit, int | float) else None)
        for status, started, limit in rows
    ]


class SqliteRuns:
    """The `RunStore` of a SQLite store: each method is one hop to its writer thread."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def admit(self, run: Run, cap: int | None) -> Run:
        return await self._writer.write(lambda c: admit(c, run, cap))

    async def claim(self, owner: str, cap: int, limit: int) -> list[Run]:
        return await self._writer.write(lambda c: claim(c, owner, cap, limit))

    async def update(self, run: Run, expect: tuple[RunStatus, ...] | None = None) -> None:
        await self._writer.write(lambda c: update(c, run, expect))

    async def get(self, run_id: int) -> Run | None:
        return await self._writer.read(lambda c: get(c, run_id))

    async def listing(self, where: RunFilter) -> list[Run]:
        return await self._writer.read(lambda c: listing(c, where))

    async def active(self, owner: str | None = None) -> list[Run]:
        return await self._writer.read(lambda c: active(c, owner))

    async def active_slots(self) -> list[ActiveSlot]:
        return await self._writer.read(active_slots)
