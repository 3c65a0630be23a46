"""The one durable store: `Store` (one part per record type), its records, and the SQLite implementation."""

from coral_server.store.base import Store, StoreClosed, StoreUnavailable
from coral_server.store.deliveries import (
    DELIVERY_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryFilter,
    DeliveryFinished,
    DeliveryNotFound,
    DeliveryStatus,
    DeliveryStore,
    NewDelivery,
)
from coral_server.store.health import StoreHealth
from coral_server.store.processes import ProcessRecord, ProcessStore
from coral_server.store.sessions import JournalEntry, SessionNotRecorded, SessionRecord, SessionStore
from coral_server.store.sqlite import SqliteStore

__all__ = [
    "DELIVERY_STATUSES",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryFilter",
    "DeliveryFinished",
    "DeliveryNotFound",
    "DeliveryStatus",
    "DeliveryStore",
    "JournalEntry",
    "NewDelivery",
    "ProcessRecord",
    "ProcessStore",
    "SessionNotRecorded",
    "SessionRecord",
    "SessionStore",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreHealth",
    "StoreUnavailable",
]
