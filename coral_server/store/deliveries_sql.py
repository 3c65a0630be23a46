"""SQL for the `webhook_deliveries` table; synchronous functions run on the store's writer thread."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import cast

import orjson

from coral_server.store.base import (
    DELIVERY_STATUSES,
    Delivery,
    DeliveryFinished,
    DeliveryNotFound,
    DeliveryStatus,
    NewDelivery,
)

_COLUMNS = (
    "id, kind, url, headers, body, signature_header, status, attempts, max_attempts, "
    "next_attempt_at, last_error, last_status, created_at, delivered_at"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        kind=row["kind"],
        url=row["url"],
        headers=orjson.loads(row["headers"]),
        body=bytes(row["body"]),
        signature_header=row["signature_header"],
        status=cast(DeliveryStatus, row["status"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        last_status=row["last_status"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


def get(conn: sqlite3.Connection, id: str) -> Delivery | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE id = ?", (id,)).fetchone()
    return None if row is None else _delivery(row)


def insert(conn: sqlite3.Connection, new: NewDelivery) -> Delivery:
    if new.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    conn.execute(
        "INSERT INTO webhook_deliveries (id, kind, url, headers, body, signature_header, status, attempts,"
        " max_attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        (
            new.id,
            new.kind,
            new.url,
            orjson.dumps(new.headers).decode(),
            new.body,
            new.signature_header,
            new.max_attempts,
            new.next_attempt_at,
            new.created_at,
        ),
    )
    return _require(conn, new.id)


def due(conn: sqlite3.Connection, now: float, limit: int) -> list[Delivery]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, created_at, id LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_delivery(r) for r in rows]


def claim(conn: sqlite3.Connection, now: float, limit: int, lease_until: float) -> list[Delivery]:
    found = due(conn, now, limit)
    conn.executemany(
        "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
        [(lease_until, d.id) for d in found],
    )
    return found


def release(conn: sqlite3.Connection, ids: Sequence[str], at: float) -> None:
    conn.executemany(
        "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ? AND status = 'pending'",
        [(at, id) for id in ids],
    )


def record_attempt(
    conn: sqlite3.Connection,
    id: str,
    *,
    ok: bool,
    status: int | None,
    error: str | None,
    next_attempt_at: float | None,
    at: float | None,
) -> Delivery:
    current = _require(conn, id)
    if current.status != "pending":
        raise DeliveryFinished(f"delivery {id} is already {current.status}")
    attempts = current.attempts + 1
    when = time.time() if at is None else at
    if ok:
        new_status, next_at, delivered_at, error = "delivered", None, when, None
    elif next_attempt_at is None or attempts >= current.max_attempts:
        new_status, next_at, delivered_at = "failed", None, None
    else:
        new_status, next_at, delivered_at = "pending", next_attempt_at, None
    conn.execute(
        "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ?,"
        " last_status = ?, delivered_at = ? WHERE id = ?",
        (new_status, attempts, next_at, error, status, delivered_at, id),
    )
    return _require(conn, id)


def listing(conn: sqlite3.Connection, status: DeliveryStatus | None, limit: int) -> list[Delivery]:
    if status is None:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM webhook_deliveries ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
        ).fetchall()
    else:
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}")
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE status = ?"
            " ORDER BY created_at DESC, id DESC LIMIT ?",
            (status, limit),
        ).fetchall()
    return [_delivery(r) for r in rows]


def next_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _require(conn: sqlite3.Connection, id: str) -> Delivery:
    found = get(conn, id)
    if found is None:
        raise DeliveryNotFound(id)
    return found
