"""The server's one store, opened at start-up and closed last (services built before it reach it here)."""

from __future__ import annotations

from pathlib import Path

from coral_server.clock import Clock
from coral_server.store.base import Store, StoreClosed
from coral_server.store.health import StoreHealth
from coral_server.store.sqlite import SqliteStore


class Database:
    """Holds the store of one server: a SQLite file (PostgreSQL will plug in behind the same `Store`)."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock
        self._store: SqliteStore | None = None
        # Exists before the store opens, so services can follow it from the start.
        self.health = StoreHealth(path)

    async def open(self) -> Store:
        if self._store is None:
            self._store = await SqliteStore.open(self.path, clock=self._clock, health=self.health)
        return self._store

    @property
    def is_open(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreClosed(f"{self.path} is not open")
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()
