"""SQL for the `runs` table; synchronous functions run on the store's writer thread."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections.abc import Container, Iterator, Mapping
from dataclasses import fields
from typing import Any, cast

import orjson

from coral_server.store.runs import (
    ActiveSlot,
    ExitReason,
    Run,
    RunChanged,
    RunFilter,
    RunLimitReached,
    RunRequest,
    RunStatus,
    TaskRunQuery,
    Trigger,
    WaitingReason,
    Written,
)
from coral_server.store.writer import Writer

log = logging.getLogger("coral_server.store")

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


_FIELDS = tuple(f.name for f in fields(Run))
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM runs"  # a run's columns in `Run`'s order
_JSON = tuple(_FIELDS.index(name) for name in ("spec", "auto_accepts"))
_RESULT = _FIELDS.index("result")
_FLAGS = tuple(_FIELDS.index(name) for name in ("retryable", "retry_pending"))


def _run(row: tuple[Any, ...]) -> Run:
    """A run from a row of `_SELECT` (as `_row`, without looking each column up by name)."""
    values = list(row)
    for i in _JSON:
        values[i] = orjson.loads(values[i])
    if values[_RESULT] is not None:
        values[_RESULT] = orjson.loads(values[_RESULT])
    for i in _FLAGS:
        values[i] = bool(values[i])
    return Run(*values)


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
    admit_many(conn, [run])
    return run


def next_run_id(conn: sqlite3.Connection) -> int:
    """The id the next admitted run gets: above every id the table ever gave (AUTOINCREMENT never
    reuses one). Taken in a write transaction, which holds the write lock: no other writer takes it."""
    (last,) = conn.execute(
        "SELECT MAX(n) FROM (SELECT MAX(id) AS n FROM runs"
        " UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'runs')"
    ).fetchone()
    return int(last or 0) + 1


def admission(run: Run, run_id: int) -> tuple[Any, ...]:
    """`run` admitted as `run_id` (its id, waiting reason and default name set): its row for
    `insert_admitted`."""
    run.id = run_id
    if run.status == "pending":
        due_later = run.not_before is not None and run.not_before > run.created_at
        run.waiting_reason = "not_before" if due_later else "capacity"
    if not run.display_name:
        run.display_name = f"Task #{run_id}"
    return (
        run_id,
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
        run.not_before,
        run.concurrency_key,
        run.dedupe_key,
        run.waiting_reason,
        int(run.retryable),
        int(run.retry_pending),
        run.retry_of,
    )


_INSERT_ROWS = 500  # rows per INSERT statement (its values stay under SQLite's 32,766 variables)


def insert_admitted(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert the rows of runs `admission` prepared: a statement per `_INSERT_ROWS` rows."""
    for chunk, values in _chunks(rows, _INSERT_ROWS):
        conn.execute(_insert_sql(len(chunk)), values)


@functools.lru_cache(maxsize=16)
def _insert_sql(n: int) -> str:
    return f"INSERT INTO runs (id, {', '.join(_ADMITTED)}) {_values_sql(n, len(_ADMITTED) + 1)}"


def _chunks(rows: list[tuple[Any, ...]], size: int) -> Iterator[tuple[list[tuple[Any, ...]], list[Any]]]:
    """`rows` `size` at a time, each chunk with its values in one list: the arguments of a
    statement of many rows (`_values_sql`)."""
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        yield chunk, [value for row in chunk for value in row]


def _values_sql(n: int, width: int) -> str:
    """`VALUES` of `n` rows of `width` placeholders each."""
    row = f"({', '.join('?' * width)})"
    return f"VALUES {', '.join([row] * n)}"


def _update_rows_sql(table: str, columns: tuple[str, ...], keys: tuple[str, ...], n: int) -> str:
    """An UPDATE of `n` rows of `table` in one statement: each row's values are its `columns`, then
    its `keys` (the row they are written to)."""
    sets = ", ".join(f"{c} = v.column{i}" for i, c in enumerate(columns, 1))
    where = " AND ".join(f"{table}.{k} = v.column{i}" for i, k in enumerate(keys, len(columns) + 1))
    return f"UPDATE {table} SET {sets} FROM ({_values_sql(n, len(columns) + len(keys))}) AS v WHERE {where}"


def admit_many(conn: sqlite3.Connection, runs: list[Run]) -> None:
    """Insert `runs` (no cap; the caller's transaction), their ids assigned."""
    first = next_run_id(conn)
    insert_admitted(conn, [admission(run, first + i) for i, run in enumerate(runs)])


def take(
    conn: sqlite3.Connection,
    owner: str,
    cap: int,
    limit: int,
    now: float | None = None,
    key_limits: Mapping[str, int] | None = None,
    default_key_limit: int = 1,
) -> list[int]:
    """Take the runs a claim may (owner set, waiting reason cleared); their ids in claim order."""
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
    taken: list[int] = []
    if room > 0:
        full = sorted(key for key, count in key_busy.items() if count >= key_limit(key))
        where = "status = 'pending' AND owner IS NULL"
        args: list[Any] = []
        if now is not None:
            where += " AND (not_before IS NULL OR not_before <= ?)"
            args.append(now)
        if full:
            where += (
                f" AND (concurrency_key IS NULL OR concurrency_key NOT IN ({', '.join('?' * len(full))}))"
            )
            args.extend(full)
        offset = 0
        while len(taken) < room:
            page = _queue_page(conn, where, args, room, offset)
            for run_id, key in page:
                if key is not None and key_busy.get(key, 0) >= key_limit(key):
                    continue  # its key filled up in this very claim
                taken.append(run_id)
                if key is not None:
                    key_busy[key] = key_busy.get(key, 0) + 1
                if len(taken) == room:
                    break
            if len(page) < room:
                break  # the queue is read to its end
            offset += len(page)
    for chunk, ids in _chunks([(run_id,) for run_id in taken], _IN_ROWS):
        conn.execute(
            f"UPDATE runs SET owner = ?, waiting_reason = NULL WHERE id IN ({', '.join('?' * len(chunk))})",
            (owner, *ids),
        )
    _note_waiting(conn, now, sorted(key for key, count in key_busy.items() if count >= key_limit(key)))
    return taken


def _queue_page(
    conn: sqlite3.Connection, where: str, args: list[Any], size: int, offset: int
) -> list[tuple[int, str | None]]:
    """`size` queued runs matching `where` from `offset` on, in claim order: (id, concurrency key).

    One row, one step: read row by row, each row's step lets the event loop take the interpreter
    and the claim waits to get it back (a burst's claims waited longer than they worked). Each
    run's due time is printed exactly (JSON keeps 15 digits) to restore the order after the
    aggregate, which SQLite does not promise to keep."""
    (text,) = conn.execute(
        "SELECT json_group_array(json_array(id, concurrency_key, priority, printf('%!.17g', due)))"
        " FROM (SELECT id, concurrency_key, priority, COALESCE(not_before, created_at) AS due"
        f" FROM runs INDEXED BY runs_queue WHERE {where}"
        " ORDER BY priority, COALESCE(not_before, created_at), id LIMIT ? OFFSET ?)",
        (*args, size, offset),
    ).fetchone()
    rows = orjson.loads(text)
    rows.sort(key=lambda row: (row[2], float(row[3]), row[0]))
    return [(row[0], row[1]) for row in rows]


_IN_ROWS = 500  # ids per `IN (...)` list (under SQLite's 32,766 variables)


def _read_in_order(conn: sqlite3.Connection, ids: list[int]) -> list[Run]:
    read = {run.id: run for run in _read(conn, ids)}
    return [read[run_id] for run_id in ids]


def _read(conn: sqlite3.Connection, ids: list[int]) -> list[Run]:
    """The runs of `ids`, as stored (in no particular order)."""
    runs: list[Run] = []
    for chunk, values in _chunks([(run_id,) for run_id in ids], _IN_ROWS):
        cursor = conn.cursor()
        cursor.row_factory = None
        runs.extend(
            map(_run, cursor.execute(f"{_SELECT} WHERE id IN ({', '.join('?' * len(chunk))})", values))
        )
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


def take_requests(conn: sqlite3.Connection, owner: str) -> list[RunRequest]:
    """The requests other servers left for `owner`'s runs, cleared as they are taken."""
    rows = conn.execute(
        "SELECT id, kill_request, input_request FROM runs INDEXED BY runs_requests"
        " WHERE owner = ? AND (kill_request IS NOT NULL OR input_request IS NOT NULL)",
        (owner,),
    ).fetchall()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    marks = ", ".join("?" * len(ids))
    conn.execute(f"UPDATE runs SET kill_request = NULL, input_request = NULL WHERE id IN ({marks})", ids)
    return [RunRequest(row[0], cast("ExitReason | None", row[1]), row[2]) for row in rows]


def busy_owners(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        f"SELECT DISTINCT owner FROM runs INDEXED BY runs_busy WHERE {_BUSY_SQL} AND owner IS NOT NULL"
    ).fetchall()
    return [row[0] for row in rows]


def take_over(conn: sqlite3.Connection, run_id: int, dead: str, owner: str) -> Run | None:
    cursor = conn.execute(
        f"UPDATE runs SET owner = ? WHERE id = ? AND owner = ? AND {_ACTIVE_SQL}", (owner, run_id, dead)
    )
    return get(conn, run_id) if cursor.rowcount == 1 else None


def request_kill(conn: sqlite3.Connection, run_id: int, owner: str, reason: ExitReason) -> bool:
    cursor = conn.execute(
        f"UPDATE runs SET kill_request = ? WHERE id = ? AND owner = ? AND {_ACTIVE_SQL}",
        (reason, run_id, owner),
    )
    return cursor.rowcount == 1


def request_answer(conn: sqlite3.Connection, run_id: int, owner: str, answer: str) -> bool:
    cursor = conn.execute(
        "UPDATE runs SET input_request = ? WHERE id = ? AND owner = ? AND status = 'waiting_input'"
        " AND input_request IS NULL",
        (answer, run_id, owner),
    )
    return cursor.rowcount == 1


_UPDATE_SQL = f"UPDATE runs SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE id = ?"


def mutable(run: Run) -> tuple[Any, ...]:
    """What `update` writes of `run` (`_MUTABLE`, then its id), taken when the update is asked for
    (the run changes after). Spelled out: a dispatcher's every run start and end makes one."""
    result = run.result
    return (
        run.status,
        run.display_name,
        run.started_at,
        run.finished_at,
        run.exit_reason,
        run.error,
        None if result is None else orjson.dumps(result).decode(),
        run.worktree_path,
        run.branch,
        run.owner,
        orjson.dumps(run.auto_accepts).decode() if run.auto_accepts else "[]",
        run.waiting_for,
        run.output,
        run.waiting_reason,
        int(run.retryable),
        int(run.retry_pending),
        run.id,
    )


def update(conn: sqlite3.Connection, run: Run, expect: tuple[RunStatus, ...] | None) -> None:
    (failure,) = update_many(conn, [(mutable(run), expect)])
    if failure is not None:
        raise failure


def update_many(
    conn: sqlite3.Connection, updates: list[tuple[tuple[Any, ...], tuple[RunStatus, ...] | None]]
) -> list[RunChanged | None]:
    """Apply `updates` (`mutable` values, and the statuses the stored run must have, if any) in order;
    for each, None or the `RunChanged` that left it unapplied. Consecutive unconditional updates are
    one statement (per `_UPDATE_ROWS`)."""
    failures: list[RunChanged | None] = []
    plain: dict[int, tuple[Any, ...]] = {}  # run id -> its latest values
    for values, expect in updates:
        if expect is not None:
            _update_plain(conn, plain)
            plain = {}
            failure = _changed(conn, values, expect)
            if failure is None:
                conn.execute(_UPDATE_SQL, values)
            failures.append(failure)
        else:
            plain[values[-1]] = values
            failures.append(None)
    _update_plain(conn, plain)
    return failures


def _changed(
    conn: sqlite3.Connection, values: tuple[Any, ...], expect: tuple[RunStatus, ...]
) -> RunChanged | None:
    """Compare-and-set on the status and on who holds the run: a queued run claimed meanwhile
    (still pending, now owned) has changed too."""
    run_id = values[-1]
    row = conn.execute("SELECT status, owner FROM runs WHERE id = ?", (run_id,)).fetchone()
    actual = "missing" if row is None else row["status"]
    if actual not in expect:
        return RunChanged(run_id, expect, actual)
    if row["owner"] != values[_OWNER]:
        return RunChanged(run_id, expect, f"{actual} (claimed by {row['owner']})")
    return None


_OWNER = _MUTABLE.index("owner")
_UPDATE_ROWS = 500  # runs per UPDATE statement (its values stay under SQLite's 32,766 variables)


def _update_plain(conn: sqlite3.Connection, updates: dict[int, tuple[Any, ...]]) -> None:
    for chunk, values in _chunks(list(updates.values()), _UPDATE_ROWS):
        conn.execute(_update_sql(len(chunk)), values)


@functools.lru_cache(maxsize=16)
def _update_sql(n: int) -> str:
    """`_UPDATE_SQL` for `n` runs (`mutable` values each) in one statement."""
    return _update_rows_sql("runs", _MUTABLE, ("id",), n)


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


class _Updates:
    """Run updates written together: those asked for until the writer thread takes the batch (a
    pass of the dispatcher's runs starting and ending) are one statement in one write. Each is
    taken as it was asked (`mutable`); a run's unconditional update replaces the one it asked for
    just before in the same batch (its values are newer and complete). Each caller is told its own
    outcome after the commit, in the order the updates were asked for."""

    __slots__ = ("_last", "_taking", "items", "taken", "waiters")

    def __init__(self, taking: threading.Lock) -> None:
        self._taking = taking  # held to join a batch, and to take it
        self.items: list[tuple[tuple[Any, ...], tuple[RunStatus, ...] | None]] = []
        self.waiters: list[tuple[int, Written]] = []
        self._last: dict[int, int] = {}  # run id -> the index of its latest update
        self.taken = False

    def join(self, values: tuple[Any, ...], expect: tuple[RunStatus, ...] | None) -> int | None:
        """The index of the update in the batch, or None when the batch was taken (under the lock)."""
        if self.taken:
            return None
        run_id = values[-1]
        index = self._last.get(run_id)
        if index is not None and expect is None and self.items[index][1] is None:
            self.items[index] = (values, None)
            return index
        index = self._last[run_id] = len(self.items)
        self.items.append((values, expect))
        return index

    def apply(self, conn: sqlite3.Connection) -> list[RunChanged | None]:
        with self._taking:  # on the writer thread: an update asked for from now on opens a new batch
            self.taken = True
            items = list(self.items)
        return update_many(conn, items)

    def deliver(self, done: asyncio.Future[list[RunChanged | None]]) -> None:
        """Tell each waiter its outcome (on the event loop, once the write is over)."""
        failures: list[RunChanged | None] | None = None
        error: BaseException | None = None
        if done.cancelled():
            error = asyncio.CancelledError()
        elif done.exception() is not None:
            error = done.exception()
        else:
            failures = done.result()
        for index, written in self.waiters:
            try:
                written(error if failures is None else failures[index])
            except Exception:
                log.exception("store.write_listener_failed")


def _settle(waiter: asyncio.Future[None], failure: BaseException | None) -> None:
    if waiter.done():
        return  # its caller was cancelled; the write itself stands
    if failure is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(failure)


class SqliteRuns:
    """The `RunStore` of a SQLite store: each method is one hop to its writer thread."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._updates: _Updates | None = None  # the batch still open to more updates
        self._taking = threading.Lock()
        self._flushes: set[asyncio.Future[list[RunChanged | None]]] = set()

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
        def work(conn: sqlite3.Connection) -> list[Run]:
            return _read_in_order(conn, take(conn, owner, cap, limit, now, key_limits, default_key_limit))

        return await self._writer.write(work)

    async def claim_next(
        self,
        owner: str,
        cap: int,
        limit: int,
        *,
        now: float,
        key_limits: Mapping[str, int] | None = None,
        default_key_limit: int = 1,
        known: Container[int] = (),
    ) -> tuple[list[Run | int], float | None, list[RunRequest]]:
        def work(conn: sqlite3.Connection) -> tuple[list[Run | int], float | None, list[RunRequest]]:
            taken = take(conn, owner, cap, limit, now, key_limits, default_key_limit)
            read = {run.id: run for run in _read(conn, [run_id for run_id in taken if run_id not in known])}
            claimed = [read.get(run_id, run_id) for run_id in taken]  # a run in `known`: its id, unread
            return claimed, next_not_before(conn, now), take_requests(conn, owner)

        return await self._writer.write(work)

    async def busy_owners(self) -> list[str]:
        return await self._writer.read(busy_owners)

    async def take_over(self, run_id: int, dead: str, owner: str) -> Run | None:
        return await self._writer.write(lambda c: take_over(c, run_id, dead, owner))

    async def request_kill(self, run_id: int, owner: str, reason: ExitReason) -> bool:
        return await self._writer.write(lambda c: request_kill(c, run_id, owner, reason))

    async def request_answer(self, run_id: int, owner: str, answer: str) -> bool:
        return await self._writer.write(lambda c: request_answer(c, run_id, owner, answer))

    async def next_not_before(self, now: float) -> float | None:
        return await self._writer.read(lambda c: next_not_before(c, now))

    async def update(self, run: Run, expect: tuple[RunStatus, ...] | None = None) -> None:
        await self.queue_update(run, expect)

    def queue_update(self, run: Run, expect: tuple[RunStatus, ...] | None = None) -> asyncio.Future[None]:
        """Joins the updates asked for until the writer takes them (see `_Updates`)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(run, expect, functools.partial(_settle, waiter))
        return waiter

    def queue_write(self, run: Run, written: Written) -> None:
        """`queue_update` without a future: `written` is called with the outcome (see the protocol)."""
        self._queue(run, None, written)

    def _queue(self, run: Run, expect: tuple[RunStatus, ...] | None, written: Written) -> None:
        values = mutable(run)
        with self._taking:
            batch = self._updates
            index = None if batch is None else batch.join(values, expect)
            opened = batch is None or index is None  # none open, or the writer took it
            if batch is None or index is None:
                batch = self._updates = _Updates(self._taking)
                index = batch.join(values, expect)
                assert index is not None  # a new batch is not taken
        batch.waiters.append((index, written))
        if opened:
            done = asyncio.ensure_future(self._writer.write(batch.apply))
            self._flushes.add(done)
            done.add_done_callback(self._flushes.discard)
            done.add_done_callback(batch.deliver)

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
