"""The SQLite connection and the one thread that uses it; each unit of work is one hop to that thread.

Every call submits a single function to a single-thread executor; writes run inside
`BEGIN IMMEDIATE … COMMIT` (reads run outside a transaction). Work is therefore serialised in
submission order and never interleaves, unlike a connection shared between tasks. WAL journal,
synchronous=NORMAL by default: a process crash never loses a committed transaction.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from coral_server.store.base import StoreClosed, StoreUnavailable
from coral_server.store.health import StoreHealth
from coral_server.store.migrations import apply_migrations
from coral_server.store.transaction import immediate

log = logging.getLogger("coral_server.store")

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]


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
        return await self._run(work)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection's thread as one write transaction (rolled back if it raises).

        A write the database cannot make (disk full, read-only file, I/O error) raises
        `StoreUnavailable` and is counted in `health`; the next write that succeeds clears it.
        """

        def unit(conn: sqlite3.Connection) -> T:
            with immediate(conn):
                return work(conn)

        result = await self._run(unit)
        self.health.succeeded()
        return result

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed(str(self.path))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, self._conn)
        except sqlite3.IntegrityError:
            raise  # a rule of the schema, not the database failing
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            self.health.failed(exc)
            raise StoreUnavailable(f"the store cannot keep it ({exc})") from exc
