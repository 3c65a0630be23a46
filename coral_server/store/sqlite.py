"""The SQLite store: one connection owned by one dedicated thread; each unit of work is one hop to it.

Every method submits a single function to the single-thread executor, which runs it inside
`BEGIN IMMEDIATE … COMMIT` (reads run outside a transaction). Work is therefore serialised in
submission order and never interleaves, unlike a connection shared between tasks. WAL journal,
synchronous=NORMAL by default: a process crash never loses a committed transaction.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from coral_server.store import deliveries_sql
from coral_server.store.base import Delivery, DeliveryAttempt, DeliveryFilter, NewDelivery, StoreClosed
from coral_server.store.migrations import apply_migrations
from coral_server.store.transaction import immediate

log = logging.getLogger("coral_server.store")

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]


def _connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: transactions are explicit
    try:
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        applied = apply_migrations(conn)
        if applied:
            log.info("store.migrated path=%s versions=%s", path, applied)
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore:
    """The default `Store`: a SQLite file in WAL mode, written by one thread."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        """Use `await SqliteStore.open(path)`; this wires an already opened connection."""
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, synchronous: Synchronous = "NORMAL") -> SqliteStore:
        """Open (creating if needed) the database at `path` and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coral-store")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect, path, synchronous)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        log.info("store.opened path=%s synchronous=%s", path, synchronous)
        return cls(path, executor, conn)

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
        log.info("store.closed path=%s", self.path)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed(str(self.path))
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, self._conn)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def unit(conn: sqlite3.Connection) -> T:
            with immediate(conn):
                return work(conn)

        return await self._read(unit)

    async def enqueue_delivery(self, new: NewDelivery) -> Delivery:
        """Persist a pending delivery; durable when this returns."""
        return await self._write(lambda c: deliveries_sql.insert(c, new))

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, earliest first."""
        return await self._read(lambda c: deliveries_sql.due(c, now, limit))

    async def claim_due_deliveries(self, now: float, limit: int, lease_until: float) -> list[Delivery]:
        """Due deliveries, each leased (next attempt moved to `lease_until`) in the same transaction."""
        return await self._write(lambda c: deliveries_sql.claim(c, now, limit, lease_until))

    async def release_deliveries(self, ids: Sequence[str], at: float) -> None:
        """Make abandoned claims due again at `at`."""
        await self._write(lambda c: deliveries_sql.release(c, ids, at))

    async def record_attempt(
        self,
        id: str,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: float | None,
        at: float | None = None,
        duration_ms: float | None = None,
    ) -> Delivery:
        """Count one attempt and move the delivery to its next state (see `Store.record_attempt`)."""
        return await self._write(
            lambda c: deliveries_sql.record_attempt(
                c,
                id,
                ok=ok,
                status=status,
                error=error,
                next_attempt_at=next_attempt_at,
                at=at,
                duration_ms=duration_ms,
            )
        )

    async def list_deliveries(self, where: DeliveryFilter | None = None) -> list[Delivery]:
        """Deliveries matching `where`, newest first."""
        return await self._read(lambda c: deliveries_sql.listing(c, where or DeliveryFilter()))

    async def delivery_attempts(self, id: str) -> list[DeliveryAttempt]:
        """One delivery's attempts, oldest first."""
        return await self._read(lambda c: deliveries_sql.attempts(c, id))

    async def retry_delivery(self, id: str, at: float, extra_attempts: int) -> Delivery:
        """Make a failed delivery pending again (see `Store.retry_delivery`)."""
        return await self._write(lambda c: deliveries_sql.retry(c, id, at, extra_attempts))

    async def get_delivery(self, id: str) -> Delivery | None:
        """One delivery, or None."""
        return await self._read(lambda c: deliveries_sql.get(c, id))

    async def next_due_at(self) -> float | None:
        """When the earliest pending delivery is due, or None."""
        return await self._read(deliveries_sql.next_due_at)
