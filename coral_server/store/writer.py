"""The SQLite connection and the one thread that uses it; each unit of work is one hop to that thread.

Every call queues its work for one thread (reads run outside a transaction). Work is therefore
serialised in submission order and never interleaves, unlike a connection shared between
tasks. WAL journal, synchronous=NORMAL by default: a process crash never loses a committed
transaction.

Writes are group-committed: the writes queued while the thread is busy run in one
`BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint, so each is still all-or-nothing (one
that raises is rolled back alone and raises to its caller) and no caller hears of its write before
the commit that holds it. A write waits for nothing: a lone write is a transaction of its own. This
spares a commit (and a thread hop) per write when many arrive together (a scheduler pass's runs
starting and ending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from coral_server.store.base import StoreClosed, StoreUnavailable
from coral_server.store.health import StoreHealth
from coral_server.store.migrations import apply_migrations
from coral_server.store.transaction import immediate

log = logging.getLogger("coral_server.store")

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]
GROUP_MAX = 1000  # writes committed together at most
_Work = Callable[[sqlite3.Connection], Any]
_Unit = tuple[bool, _Work, "asyncio.Future[Any]"]  # (a write?, the work, its caller's future)
_Outcome = tuple[bool, Any]  # (True, the value) or (False, the exception)


def _connect(path: Path, synchronous: Synchronous, now: float | None) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: transactions are explicit
    try:
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        applied = apply_migrations(conn, now=now)
        if applied:
            log.info("store.migrated path=%s versions=%s", path, applied)
    except BaseException:
        conn.close()
        raise
    return conn


class Writer:
    """One SQLite connection, used only by one thread; `read` and `write` are one hop each."""

    def __init__(
        self,
        path: Path,
        executor: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        health: StoreHealth | None = None,
    ) -> None:
        """Use `await Writer.open(path)`; this wires an already opened connection."""
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False
        self.health = health if health is not None else StoreHealth(path)
        self._queued: list[_Unit] = []  # work waiting for the thread, in submission order
        self._drain_submitted = False
        self._lock = threading.Lock()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        now: float | None = None,
        health: StoreHealth | None = None,
    ) -> Writer:
        """Open (creating if needed) the database at `path` and bring its schema up to date (migrations
        are stamped with `now`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coral-store")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                executor, _connect, path, synchronous, now
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, conn, health)

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Finish the work already submitted, then close the connection and stop the thread."""
        if self._closed:
            return
        self._closed = True
        # Single thread, FIFO: this runs after every job submitted before it.
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection's thread, outside a transaction."""
        return await self._submit(False, work)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection's thread as one write transaction (rolled back if it raises;
        it may share the commit of other writes queued with it: see the module).

        A write the database cannot make (disk full, read-only file, I/O error) raises
        `StoreUnavailable` and is counted in `health`; the next write that succeeds clears it.
        """
        result = await self._submit(True, work)
        self.health.succeeded()
        return result

    async def _submit(self, write: bool, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed(str(self.path))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued.append((write, work, future))
            submit, self._drain_submitted = not self._drain_submitted, True
        if submit:
            self._executor.submit(self._drain, loop)
        with self._mapped():
            return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the thread: run the work queued so far in submission order, consecutive writes
        committed together (at most `GROUP_MAX` a group), and hand back the outcomes."""
        with self._lock:
            units, self._queued = self._queued, []
            self._drain_submitted = False
        start = 0
        while start < len(units):
            end = start + 1
            if units[start][0]:
                while end < len(units) and end - start < GROUP_MAX and units[end][0]:
                    end += 1
            group = units[start:end]
            try:
                if group[0][0]:
                    outcomes = _commit(self._conn, [work for _, work, _ in group])
                else:
                    outcomes = [(True, group[0][1](self._conn))]
            except BaseException as exc:  # never leave a caller waiting
                outcomes = [(False, exc)] * len(group)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_deliver, group, outcomes)
            start = end

    @contextlib.contextmanager
    def _mapped(self) -> Any:
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a rule of the schema, not the database failing
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            self.health.failed(exc)
            raise StoreUnavailable(f"the store cannot keep it ({exc})") from exc


def _commit(conn: sqlite3.Connection, works: list[_Work]) -> list[_Outcome]:
    """Run `works` in one transaction, each all-or-nothing (a savepoint each when there are several)."""
    if len(works) == 1:
        try:
            with immediate(conn):
                return [(True, works[0](conn))]
        except Exception as exc:
            return [(False, exc)]
    outcomes: list[_Outcome] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for i, work in enumerate(works):
            conn.execute("SAVEPOINT unit")
            try:
                value = work(conn)
            except Exception as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (an I/O error, a full disk): the writes
                    # before this one are lost with it; those after it get a transaction of their own.
                    return [(False, exc)] * (i + 1) + _commit(conn, works[i + 1 :])
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE unit")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except Exception as exc:  # BEGIN, a savepoint or COMMIT failed: nothing of the group is kept
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        return [(False, exc)] * len(works)
    return outcomes


def _deliver(group: list[_Unit], outcomes: list[_Outcome]) -> None:
    for (_, _, future), (ok, value) in zip(group, outcomes, strict=True):
        if future.done():
            continue  # its caller was cancelled; the write itself stands
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
