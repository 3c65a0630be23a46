"""SQL for the `runs` table; synchronous functions run on the store's writer thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
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
    TaskRunQuery,
    Trigger,
    WaitingReason,
)
from coral_server.store.writer import Writer

_ACTIVE_SQL = "status IN ('pending', 'running', 'waiting_input')"
# Runs that hold a slot: started ones, and pending ones a dispatcher has claimed (being prepared).
# Word for word the condition of the `runs_busy` index, so that counting them reads only them.
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
    "waiting_reason",
    "retryable",
    "retry_pending",
)
# Columns written when a run is admitted (besides its id).
_ADMITTED = (
    "kind",
    "trigger",
    "status",
    "spec",
    "display_name",
    "created_at",
    "webhook_url",
    "priority",
    "task_id",
    "attempt",
    "not_before",
    "concurrency_key",
    "dedupe_key",
    "waiting_reason",
    "retryable",
    "retry_pending",
    "retry_of",
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
        not_before=row["not_before"],
        concurrency_key=row["concurrency_key"],
        dedupe_key=row["dedupe_key"],
        waiting_reason=cast("WaitingReason | None", row["waiting_reason"]),
        retryable=bool(row["retryable"]),
        retry_pending=bool(row["retry_pending"]),
        retry_of=row["retry_of"],
    )


def _value(run: Run, column: str) -> Any:
    value = getattr(run, column)
    if column == "result":
        return None if value is None else orjson.dumps(value).decode()
    if column in ("auto_accepts", "spec"):
        return orjson.dumps(value).decode()
    if column in ("retryable", "retry_pending"):
        return int(value)
    return value


def admit(conn: sqlite3.Connection, run: Run, cap: int | None) -> Run:
    if cap is not None:
        (active,) = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {_ACTIVE_SQL}").fetchone()
        if active >= cap:
            raise RunLimitReached(cap)
    if run.status == "pending":
        due_later = run.not_before is not None and run.not_before > run.created_at
        run.waiting_reason = "not_before" if due_later else "capacity"
    cursor = conn.execute(
        f"INSERT INTO runs ({', '.join(_ADMITTED)}) VALUES ({', '.join('?' * len(_ADMITTED))})",
        tuple(_value(run, column) for column in _ADMITTED),
    )
    run.id = int(cursor.lastrowid or 0)
    if not run.display_name:
        run.display_name = f"Task #{run.id}"
        conn.execute("UPDATE runs SET display_name = ? WHERE id = ?", (run.display_name, run.id))
    return run


def claim(
    conn: sqlite3.Connection,
    owner: str,
    cap: int,
    limit: int,
    now: float | None = None,
    key_limits: Mapping[str, int] | None = None,
    default_key_limit: int = 1,
) -> list[Run]:
    limits = key_limits or {}

    def key_limit(key: str) -> int:
        return limits.get(key, default_key_limit)

    (busy,) = conn.execute(f"SELECT COUNT(*) FROM runs INDEXED BY runs_busy WHERE {_BUSY_SQL}").fetchone()
    key_busy: dict[str, int] = {
        key: count
        for key, count in conn.execute(
            "SELECT concurrency_key, COUNT(*) FROM runs INDEXED BY runs_busy"
            f" WHERE concurrency_key IS NOT NULL AND {_BUSY_SQL} GROUP BY concurrency_key"
        )
    }
    room = min(limit, cap - busy)
    runs: list[Run] = []
    if room > 0:
        full = sorted(key for key, count in key_busy.items() if count >= key_limit(key))
        sql = "SELECT * FROM runs INDEXED BY runs_queue WHERE status = 'pending' AND owner IS NULL"
        args: list[Any] = []
        if now is not None:
            sql += " AND (not_before IS NULL OR not_before <= ?)"
            args.append(now)
        if full:
            sql += f" AND (concurrency_key IS NULL OR concurrency_key NOT IN ({', '.join('?' * len(full))}))"
            args.extend(full)
        sql += " ORDER BY priority, COALESCE(not_before, created_at), id"
        cursor = conn.execute(sql, args)
        while len(runs) < room and (row := cursor.fetchone()) is not None:
            key = row["concurrency_key"]
            if key is not None and key_busy.get(key, 0) >= key_limit(key):
                continue  # its key filled up in this very claim
            runs.append(_row(row))
            if key is not None:
                key_busy[key] = key_busy.get(key, 0) + 1
        cursor.close()
    for run in runs:
        run.owner = owner
        run.waiting_reason = None
        conn.execute("UPDATE runs SET owner = ?, waiting_reason = NULL WHERE id = ?", (owner, run.id))
    _note_waiting(conn, now, sorted(key for key, count in key_busy.items() if count >= key_limit(key)))
    return runs


def _note_waiting(conn: sqlite3.Connection, now: float | None, full_keys: list[str]) -> None:
    """Say why the runs left pending wait. A run is admitted waiting for `capacity` (a slot under the
    cap) or, due later, for `not_before`; here a due time that came turns into `capacity`, a key with
    no free slot into `concurrency_key`, and one with a free slot back into `capacity`. Each update
    reads only the runs it changes (the `runs_waiting` and `runs_concurrency` indexes)."""
    pending = "status = 'pending' AND owner IS NULL"
    if now is not None:
        conn.execute(
            f"UPDATE runs SET waiting_reason = 'capacity'"
            f" WHERE waiting_reason = 'not_before' AND {pending} AND not_before <= ?",
            (now,),
        )
    marks = ", ".join("?" * len(full_keys))
    conn.execute(
        f"UPDATE runs SET waiting_reason = 'capacity' WHERE waiting_reason = 'concurrency_key' AND {pending}"
        + (f" AND concurrency_key NOT IN ({marks})" if full_keys else ""),
        full_keys,
    )
    if full_keys:
        due = "" if now is None else " AND (not_before IS NULL OR not_before <= ?)"
        conn.execute(
            f"UPDATE runs SET waiting_reason = 'concurrency_key'"
            f" WHERE concurrency_key IN ({marks}) AND {pending}{due}"
            " AND waiting_reason IS NOT 'concurrency_key'",
            (*full_keys, *(() if now is None else (now,))),
        )


def next_not_before(conn: sqlite3.Connection, now: float) -> float | None:
    (at,) = conn.execute(
        "SELECT MIN(not_before) FROM runs INDEXED BY runs_not_before"
        " WHERE status = 'pending' AND owner IS NULL AND not_before > ?",
        (now,),
    ).fetchone()
    return None if at is None else float(at)


def update(conn: sqlite3.Connection, run: Run, expect: tuple[RunStatus, ...] | None) -> None:
    if expect is not None:
        # Compare-and-set on the status and on who holds the run: a queued run claimed meanwhile
        # (still pending, now owned) has changed too.
        row = conn.execute("SELECT status, owner FROM runs WHERE id = ?", (run.id,)).fetchone()
        actual = "missing" if row is None else row["status"]
        if actual not in expect:
            raise RunChanged(run.id, expect, actual)
        if row["owner"] != run.owner:
            raise RunChanged(run.id, expect, f"{actual} (claimed by {row['owner']})")
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


def task_runs(conn: sqlite3.Connection, where: TaskRunQuery) -> tuple[list[Run], int]:
    clauses = ["task_id IS NOT NULL"]
    args: list[Any] = []
    if where.task_id is not None:
        clauses.append("task_id = ?")
        args.append(where.task_id)
    if where.success is not None:
        clauses.append("status = 'completed'" if where.success else "status IN ('failed', 'killed')")
    if where.created_from is not None:
        clauses.append("created_at >= ?")
        args.append(where.created_from)
    if where.created_before is not None:
        clauses.append("created_at < ?")
        args.append(where.created_before)
    condition = " AND ".join(clauses)
    total = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {condition}", args).fetchone()[0]
    rows = conn.execute(
        f"SELECT * FROM runs WHERE {condition} ORDER BY id DESC LIMIT ? OFFSET ?",
        (*args, where.limit, where.offset),
    ).fetchall()
    return [_row(r) for r in rows], int(total)


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

    async def claim(
        self,
        owner: str,
        cap: int,
        limit: int,
        *,
        now: float | None = None,
        key_limits: Mapping[str, int] | None = None,
        default_key_limit: int = 1,
    ) -> list[Run]:
        return await self._writer.write(
            lambda c: claim(c, owner, cap, limit, now, key_limits, default_key_limit)
        )

    async def next_not_before(self, now: float) -> float | None:
        return await self._writer.read(lambda c: next_not_before(c, now))

    async def update(self, run: Run, expect: tuple[RunStatus, ...] | None = None) -> None:
        await self._writer.write(lambda c: update(c, run, expect))

    async def get(self, run_id: int) -> Run | None:
        return await self._writer.read(lambda c: get(c, run_id))

    async def listing(self, where: RunFilter) -> list[Run]:
        return await self._writer.read(lambda c: listing(c, where))

    async def task_runs(self, where: TaskRunQuery) -> tuple[list[Run], int]:
        return await self._writer.read(lambda c: task_runs(c, where))

    async def active(self, owner: str | None = None) -> list[Run]:
        return await self._writer.read(lambda c: active(c, owner))

    async def active_slots(self) -> list[ActiveSlot]:
        return await self._writer.read(active_slots)
