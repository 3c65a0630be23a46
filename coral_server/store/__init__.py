"""The one durable store: the `Store` interface, its records, and the SQLite implementation."""

from coral_server.store.base import (
    Delivery,
    DeliveryAttempt,
    DeliveryFilter,
    DeliveryFinished,
    DeliveryNotFound,
    DeliveryStatus,
    NewDelivery,
    Store,
    StoreClosed,
)
from coral_server.store.sqlite import SqliteStore

__all__ = [
    "Delivery",
    "DeliveryAttempt",
    "DeliveryFilter",
    "DeliveryFinished",
    "DeliveryNotFound",
    "DeliveryStatus",
    "NewDelivery",
    "SqliteStore",
    "Store",
    "StoreClosed",
]
