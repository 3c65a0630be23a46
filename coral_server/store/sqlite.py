"""The SQLite store: one database file, one writer thread, one part per aggregate over it."""

from __future__ import annotations

import logging
from pathlib import Path

from coral_server.clock import Clock, SystemClock
from coral_server.store.deliveries_sql import SqliteDeliveries
from coral_server.store.health import StoreHealth
from coral_server.store.processes_sql import SqliteProcesses
from coral_server.store.runs_sql import SqliteRuns
from coral_server.store.sessions_sql import SqliteSessions
from coral_server.store.tasks_sql import SqliteTasks
from coral_server.store.writer import Synchronous, Writer

log = logging.getLogger("coral_server.store")


class SqliteStore:
    """The default `Store`: a SQLite file in WAL mode, written by one thread (see `writer`)."""

    def __init__(self, writer: Writer, clock: Clock) -> None:
        """Use `await SqliteStore.open(path)`; this wires an already opened writer."""
        self.path = writer.path
        self._writer = writer
        self.deliveries = SqliteDeliveries(writer, clock)
        self.processes = SqliteProcesses(writer)
        self.sessions = SqliteSessions(writer)
        self.runs = SqliteRuns(writer)
        self.tasks = SqliteTasks(writer)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        clock: Clock | None = None,
        health: StoreHealth | None = None,
    ) -> SqliteStore:
        """Open (creating if needed) the database at `path` and bring its schema up to date; write
        failures are counted in `health`."""
        clock = clock if clock is not None else SystemClock()
        writer = await Writer.open(path, synchronous=synchronous, now=clock.time(), health=health)
        log.info("store.opened path=%s synchronous=%s", path, synchronous)
        return cls(writer, clock)

    async def close(self) -> None:
        """Finish the work already submitted, then close the connection and stop the thread."""
        if self._writer.closed:
            return
        await self._writer.close()
        log.info("store.closed path=%s", self.path)
