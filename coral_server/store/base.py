"""The one `Store` every implementation provides (SQLite now, PostgreSQL later): one part per aggregate."""

from __future__ import annotations

from typing import Protocol

from coral_server.store.deliveries import DeliveryStore
from coral_server.store.processes import ProcessStore
from coral_server.store.runs import RunStore
from coral_server.store.sessions import SessionStore
from coral_server.store.tasks import TaskStore


class StoreClosed(Exception):
    """The store was used after `close()`."""


class StoreUnavailable(Exception):
    """The store could not do what it was asked (disk full, read-only, I/O error): nothing changed."""


class Store(Protocol):
    """Everything durable, one small interface per record type, all over one database."""

    @property
    def deliveries(self) -> DeliveryStore:
        """Webhook deliveries and their attempts (the durable delivery queue)."""
        ...

    @property
    def processes(self) -> ProcessStore:
        """Processes and containers the supervisor started, per instance."""
        ...

    @property
    def sessions(self) -> SessionStore:
        """Live sessions and their journals, per instance."""
        ...

    @property
    def runs(self) -> RunStore:
        """Runs (one-time jobs, scheduled tasks' runs) and their state."""
        ...

    @property
    def tasks(self) -> TaskStore:
        """Scheduled tasks, their next fire times, and the runs they create."""
        ...

    async def close(self) -> None:
        """Finish queued work and release the database; later calls raise `StoreClosed`."""
        ...
