"""SQL for the `tasks` table and its runs' scheduling; synchronous, run on the store's writer thread."""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import fields
from typing import Any, cast

import orjson

from coral_server.store import runs_sql
from coral_server.store.runs import Run, RunStatus
from coral_server.store.tasks import (
    Fire,
    Fired,
    PendingRetry,
    Plan,
    Replan,
    Task,
    TaskChanged,
    TaskFilter,
    TaskRunCounts,
    TaskSource,
    TaskStatus,
)
from coral_server.store.writer import Writer

_COLUMNS = tuple(f.name for f in fields(Task))
_ACTIVE_RUN_SQL = "status IN ('pending', 'running', 'waiting_input')"
_IN_CHUNK = 500  # ids per `IN (...)` query


def _row(row: sqlite3.Row) -> Task:
    values = {name: row[name] for name in _COLUMNS}
    values["payload"] = orjson.loads(row["payload"])
    values["status"] = cast(TaskStatus, row["status"])
    values["source"] = cast(TaskSource, row["source"])
    return Task(**values)


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM tasks"  # a task's columns in `Task`'s order
_PAYLOAD = _COLUMNS.index("payload")


def _plain(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor answering plain tuples (for `_SELECT`: many rows read)."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor


def _task(row: tuple[Any, ...]) -> Task:
    """A task from a row of `_SELECT`."""
    values = list(row)
    values[_PAYLOAD] = orjson.loads(values[_PAYLOAD])
    return Task(*values)


def _values(task: Task) -> tuple[Any, ...]:
    return tuple(
        orjson.dumps(task.payload).decode() if name == "payload" else getattr(task, name) for name in _COLUMNS
    )


def _where(where: TaskFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column in ("status", "created_by", "schedule_kind"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def insert(conn: sqlite3.Connection, task: Task) -> tuple[Task, bool]:
    if task.dedupe_key is not None:
        sql = "SELECT * FROM tasks WHERE dedupe_key = ? AND created_by = ? AND status = 'active'"
        args: list[Any] = [task.dedupe_key, task.created_by]
        if task.dedupe_window_seconds is not None:
            sql += " AND created_at >= ?"
            args.append(task.created_at - task.dedupe_window_seconds)
        existing = conn.execute(sql + " ORDER BY created_at DESC LIMIT 1", args).fetchone()
        if existing is not None:
            return _row(existing), True
    conn.execute(
        f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", _values(task)
    )
    return task, False


def get(conn: sqlite3.Connection, task_id: str) -> Task | None:
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else _row(row)


def listing(conn: sqlite3.Connection, where: TaskFilter) -> list[Task]:
    clause, args = _where(where)
    rows = conn.execute(
        f"SELECT * FROM tasks{clause} ORDER BY created_at, id LIMIT ? OFFSET ?",
        (*args, where.limit, where.offset),
    ).fetchall()
    return [_row(r) for r in rows]


def count(conn: sqlite3.Connection, where: TaskFilter) -> int:
    clause, args = _where(where)
    (n,) = conn.execute(f"SELECT COUNT(*) FROM tasks{clause}", args).fetchone()
    return int(n)


def save(conn: sqlite3.Connection, task: Task, expect_version: int) -> Task:
    task.version = expect_version + 1
    assignments = ", ".join(f"{c} = ?" for c in _COLUMNS if c != "id")
    values = [v for c, v in zip(_COLUMNS, _values(task), strict=True) if c != "id"]
    cursor = conn.execute(
        f"UPDATE tasks SET {assignments} WHERE id = ? AND version = ?", (*values, task.id, expect_version)
    )
    if cursor.rowcount != 1:
        task.version = expect_version
        raise TaskChanged(task.id)
    return task


def due(conn: sqlite3.Connection, now: float, limit: int) -> list[Task]:
    rows = _plain(conn).execute(
        # `+status`: walk the due index in fire order (the status index would sort every active task).
        f"{_SELECT} WHERE next_fire_at IS NOT NULL AND next_fire_at <= ? AND +status = 'active'"
        " ORDER BY next_fire_at, priority, id LIMIT ?",
        (now, limit),
    )
    return list(map(_task, rows))


def next_fire_at(conn: sqlite3.Connection) -> float | None:
    (at,) = conn.execute(
        "SELECT MIN(next_fire_at) FROM tasks WHERE next_fire_at IS NOT NULL AND +status = 'active'"
    ).fetchone()
    return None if at is None else float(at)


def upcoming(conn: sqlite3.Connection, limit: int) -> tuple[float | None, list[Task]]:
    rows = _plain(conn).execute(
        f"{_SELECT} WHERE next_fire_at = (SELECT MIN(next_fire_at) FROM tasks"
        " WHERE next_fire_at IS NOT NULL AND +status = 'active') AND +status = 'active'"
        " ORDER BY priority, id LIMIT ?",
        (limit,),
    )
    tasks = list(map(_task, rows))  # one statement: the earliest one's row is among them
    return (tasks[0].next_fire_at, tasks) if tasks else (None, [])


def plans(conn: sqlite3.Connection, after: str, limit: int) -> list[Plan]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: planning reads many rows
    rows = cursor.execute(
        "SELECT id, version, schedule_kind, schedule_expr, timezone, next_fire_at, snoozed_until FROM tasks"
        # `+status`: walk the primary key from the cursor on (the status index would sort every
        # active task again for each page).
        " WHERE id > ? AND +status = 'active' AND schedule_kind != 'event' ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [Plan(*row) for row in rows]


def replan(conn: sqlite3.Connection, replans: list[Replan]) -> int:
    applied = 0
    for item in replans:
        cursor = conn.execute(
            "UPDATE tasks SET next_fire_at = ?, version = version + 1"
            " WHERE id = ? AND version = ? AND status = 'active'",
            (item.next_fire_at, item.task_id, item.version),
        )
        applied += cursor.rowcount
    return applied


def by_topic(conn: sqlite3.Connection, topic: str) -> list[Task]:
    rows = conn.execute(
        "SELECT * FROM tasks WHERE schedule_kind = 'event' AND schedule_expr = ? AND status = 'active'"
        " ORDER BY created_at, id",
        (topic,),
    ).fetchall()
    return [_row(r) for r in rows]


def _duplicate(conn: sqlite3.Connection, task: Task, at: float) -> Run | None:
    """The run that stands for a new run of `task` under its dedupe rule: one with the same key
    created inside the window, or (no window) one with the key still active."""
    if task.dedupe_key is None:
        return None
    sql = "SELECT * FROM runs WHERE dedupe_key = ?"
    args: list[Any] = [task.dedupe_key]
    if task.dedupe_window_seconds is not None:
        sql += " AND created_at >= ?"
        args.append(at - task.dedupe_window_seconds)
    else:
        sql += f" AND {_ACTIVE_RUN_SQL}"
    row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
    return None if row is None else runs_sql._row(row)


class _Stale(Exception):
    """A task of a batch fired on trust (`FireBatch.trusted`) changed since its fire was decided."""


class FireBatch(dict[str, Task]):
    """A batch of fires in one transaction: their tasks (by id), and the writes the fires applied
    so far defer, made with one statement each for all of them (`flush`).

    `trusted`: the tasks are those the fires were decided on, not read in this transaction; the
    tasks' update (a compare-and-set on each one's version) then says whether they were current."""

    __slots__ = ("next_run_id", "run_rows", "task_rows", "trusted")

    def __init__(self, *, trusted: bool = False) -> None:
        super().__init__()
        self.trusted = trusted
        self.next_run_id: int | None = None
        self.run_rows: list[tuple[Any, ...]] = []
        self.task_rows: list[tuple[Any, ...]] = []

    def admit(self, conn: sqlite3.Connection, run: Run) -> None:
        if self.next_run_id is None:
            self.next_run_id = runs_sql.next_run_id(conn)
        self.run_rows.append(runs_sql.admission(run, self.next_run_id))
        self.next_run_id += 1

    def save(self, task: Task, expect_version: int) -> None:
        """`_save_fire`, deferred: the task's version is the new one at once (a second fire of it in
        the batch finds it changed)."""
        task.version = expect_version + 1
        self.task_rows.append((*_fire_values(task), task.id, expect_version))

    def flush(self, conn: sqlite3.Connection) -> None:
        runs_sql.insert_admitted(conn, self.run_rows)
        for chunk, values in runs_sql._chunks(self.task_rows, _IN_CHUNK):
            cursor = conn.execute(_save_fires_sql(len(chunk)), values)
            if cursor.rowcount != len(chunk):
                if self.trusted:
                    raise _Stale
                raise TaskChanged(chunk[0][-2])  # cannot happen: read in this transaction
        self.run_rows, self.task_rows = [], []


def fire_many(conn: sqlite3.Connection, fires: list[Fire]) -> list[Fired | None]:
    """`apply_fire` for each of `fires` (one transaction: the caller's), their runs inserted and
    their tasks updated in one statement each. Still one compare-and-set per task: a task changed
    since its fire was decided (another server fired it, a user edited it) is left alone and
    answers None.

    When every fire carries the task it was decided on (`Fire.task`, one fire per task), the fires
    are first applied to those, unread: the tasks' update, a compare-and-set on every version, finds
    them all current (the usual case: done) or not (that try is rolled back; the tasks are read)."""
    given = {fire.task_id: fire.task for fire in fires if fire.task is not None}
    if given and len(given) == len(fires):
        conn.execute("SAVEPOINT fires")
        trusted = FireBatch(trusted=True)
        trusted.update(given)
        try:
            fired = [apply_fire(conn, fire, trusted) for fire in fires]
            trusted.flush(conn)
        except _Stale:
            conn.execute("ROLLBACK TO fires")
            fires = [_untried(fire) for fire in fires]
        else:
            conn.execute("RELEASE fires")
            return fired
        conn.execute("RELEASE fires")
    batch = FireBatch()
    ids = list(dict.fromkeys(fire.task_id for fire in fires))
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        rows = _plain(conn).execute(f"{_SELECT} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        batch.update((task.id, task) for task in map(_task, rows))
    fired = [apply_fire(conn, fire, batch) for fire in fires]
    batch.flush(conn)
    return fired


def _untried(fire: Fire) -> Fire:
    """`fire` as it was before a try that was rolled back (its run not admitted)."""
    run = fire.run
    if run is not None:
        if run.display_name == f"Task #{run.id}":
            run.display_name = ""  # named after the id it had
        run.id, run.waiting_reason = 0, None
    return fire


def apply_fire(conn: sqlite3.Connection, fire: Fire, known: dict[str, Task] | None = None) -> Fired | None:
    """Apply one fire; `known` holds its task as read in this transaction (else it is read here).
    When `known` is a `FireBatch`, the fire's writes wait for its `flush`."""
    task = known.get(fire.task_id) if known is not None else get(conn, fire.task_id)
    if task is None or task.version != fire.expect_version or task.status not in fire.statuses:
        return None
    batch = known if isinstance(known, FireBatch) else None
    run = fire.run
    duplicate: Run | None = None
    skip_reason = fire.skip_reason
    if run is not None:
        if fire.dedupe and task.dedupe_key is not None:
            if batch is not None:
                batch.flush(conn)  # the runs this batch fired before count
            duplicate = _duplicate(conn, task, fire.at)
        if duplicate is not None:
            window = task.dedupe_window_seconds
            skip_reason = (
                f"dedupe: run {duplicate.id} with dedupe_key '{task.dedupe_key}' was created"
                f" {fire.at - duplicate.created_at:.0f} s before"
                + (f" (window {window} s)" if window is not None else " and is still active")
            )
            run = None
        else:
            run.task_id = task.id
            run.priority = task.priority
            run.concurrency_key = task.concurrency_key
            run.dedupe_key = task.dedupe_key
            if batch is not None:
                batch.admit(conn, run)
            else:
                runs_sql.admit(conn, run, None)
            task.fire_count += 1
            task.last_run_id = run.id
    if fire.replan:
        task.next_fire_at = fire.next_fire_at
    if fire.fired_for is not None:
        task.last_fire_at = fire.fired_for
    if fire.clear_snooze:
        task.snoozed_until = task.snooze_reason = None
    if skip_reason is not None:
        task.skip_count += 1
        task.last_skip_at = fire.at
        task.last_skip_reason = skip_reason
    if batch is not None:
        batch.save(task, fire.expect_version)
    else:
        _save_fire(conn, task, fire.expect_version)
    return Fired(task=task, run=run, duplicate_of=duplicate)


# What a fire changes: written alone, so the tasks' other columns (and their indexes) are not rewritten.
_FIRE_COLUMNS = (
    "next_fire_at",
    "last_fire_at",
    "last_run_id",
    "fire_count",
    "skip_count",
    "last_skip_at",
    "last_skip_reason",
    "snoozed_until",
    "snooze_reason",
)
_SAVE_FIRE_SQL = (
    f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in _FIRE_COLUMNS)}, version = ?"
    " WHERE id = ? AND version = ?"
)


@functools.lru_cache(maxsize=16)
def _save_fires_sql(n: int) -> str:
    """`_SAVE_FIRE_SQL` for `n` tasks in one statement (`_fire_values`, id, expected version each)."""
    return runs_sql._update_rows_sql("tasks", (*_FIRE_COLUMNS, "version"), ("id", "version"), n)


def _fire_values(task: Task) -> tuple[Any, ...]:
    """A fired task's `_FIRE_COLUMNS` and its new version."""
    return (*(getattr(task, c) for c in _FIRE_COLUMNS), task.version)


def _save_fire(conn: sqlite3.Connection, task: Task, expect_version: int) -> None:
    task.version = expect_version + 1
    cursor = conn.execute(_SAVE_FIRE_SQL, (*_fire_values(task), task.id, expect_version))
    if cursor.rowcount != 1:
        task.version = expect_version
        raise TaskChanged(task.id)  # cannot happen: read in this same transaction


def pending_retries(conn: sqlite3.Connection, after: int, limit: int) -> list[PendingRetry]:
    rows = conn.execute(
        "SELECT * FROM runs WHERE retry_pending = 1 AND id > ? ORDER BY id LIMIT ?", (after, limit)
    ).fetchall()
    found: list[PendingRetry] = []
    for row in rows:
        run = runs_sql._row(row)
        task = None if run.task_id is None else get(conn, run.task_id)
        found.append(PendingRetry(run, task))
    return found


def retry(conn: sqlite3.Connection, failed_run_id: int, run: Run | None) -> Run | None:
    cursor = conn.execute(
        "UPDATE runs SET retry_pending = 0 WHERE id = ? AND retry_pending = 1", (failed_run_id,)
    )
    if cursor.rowcount != 1 or run is None:
        return None
    run.retry_of = failed_run_id
    runs_sql.admit(conn, run, None)
    if run.task_id is not None:
        conn.execute(
            "UPDATE tasks SET last_run_id = ?, fire_count = fire_count + 1, version = version + 1"
            " WHERE id = ?",
            (run.id, run.task_id),
        )
    return run


def run_counts(conn: sqlite3.Connection, task_id: str) -> TaskRunCounts:
    by_status = {
        cast(RunStatus, status): int(n)
        for status, n in conn.execute(
            "SELECT status, COUNT(*) FROM runs WHERE task_id = ? GROUP BY status", (task_id,)
        )
    }
    row = conn.execute("SELECT * FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT 1", (task_id,)).fetchone()
    return TaskRunCounts(by_status, None if row is None else runs_sql._row(row))


class SqliteTasks:
    """The `TaskStore` of a SQLite store: each method is one hop to its writer thread."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def insert(self, task: Task) -> tuple[Task, bool]:
        return await self._writer.write(lambda c: insert(c, task))

    async def insert_many(self, tasks: list[Task]) -> list[tuple[Task, bool]]:
        return await self._writer.write(lambda c: [insert(c, task) for task in tasks])

    async def get(self, task_id: str) -> Task | None:
        return await self._writer.read(lambda c: get(c, task_id))

    async def listing(self, where: TaskFilter) -> list[Task]:
        return await self._writer.read(lambda c: listing(c, where))

    async def count(self, where: TaskFilter) -> int:
        return await self._writer.read(lambda c: count(c, where))

    async def save(self, task: Task, expect_version: int) -> Task:
        return await self._writer.write(lambda c: save(c, task, expect_version))

    async def due(self, now: float, limit: int) -> list[Task]:
        return await self._writer.read(lambda c: due(c, now, limit))

    async def next_fire_at(self) -> float | None:
        return await self._writer.read(next_fire_at)

    async def upcoming(self, limit: int) -> tuple[float | None, list[Task]]:
        return await self._writer.read(lambda c: upcoming(c, limit))

    async def plans(self, after: str, limit: int) -> list[Plan]:
        return await self._writer.read(lambda c: plans(c, after, limit))

    async def replan(self, replans: list[Replan]) -> int:
        return await self._writer.write(lambda c: replan(c, replans))

    async def by_topic(self, topic: str) -> list[Task]:
        return await self._writer.read(lambda c: by_topic(c, topic))

    async def fire(self, fire: Fire) -> Fired | None:
        return await self._writer.write(lambda c: apply_fire(c, fire))

    async def fire_many(self, fires: list[Fire]) -> list[Fired | None]:
        return await self._writer.write(lambda c: fire_many(c, fires))

    async def pending_retries(self, after: int, limit: int) -> list[PendingRetry]:
        return await self._writer.read(lambda c: pending_retries(c, after, limit))

    async def retry(self, failed_run_id: int, run: Run | None) -> Run | None:
        return await self._writer.write(lambda c: retry(c, failed_run_id, run))

    async def run_counts(self, task_id: str) -> TaskRunCounts:
        return await self._writer.read(lambda c: run_counts(c, task_id))
