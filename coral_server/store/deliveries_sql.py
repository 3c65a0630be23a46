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
    DeliveryAttempt,
    DeliveryFilter,
    DeliveryFinished,
    DeliveryNotFound,
    DeliveryStatus,
    NewDelivery,
)

_COLUMNS = (
    "id, kind, url, headers, body, signature_header, status, attempts, max_attempts, "
    "next_attempt_at, last_error, last_status, created_at, delivered_at, subject"
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
        subject=row["subject"],
    )


def get(conn: sqlite3.Connection, id: str) -> Delivery | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE id = ?", (id,)).fetchone()
    return None if row is None else _delivery(row)


def insert(conn: sqlite3.Connection, new: NewDelivery) -> Delivery:
    if new.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    conn.execute(
        "INSERT INTO webhook_deliveries (id, kind, url, headers, body, signature_header, status, attempts,"
        " max_attempts, next_attempt_at, created_at, subject)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
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
            new.subject,
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
    duration_ms: float | None = None,
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
    conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, number, at, status, error, duration_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (id, attempts, when, status, error, duration_ms),
    )
    return _require(conn, id)


def listing(conn: sqlite3.Connection, where: DeliveryFilter) -> list[Delivery]:
    if where.status is not None and where.status not in DELIVERY_STATUSES:
        raise ValueError(f"unknown delivery status {where.status!r}")
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("status", where.status), ("kind", where.kind), ("subject", where.subject)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.subject_prefix is not None:
        clauses.append("substr(subject, 1, ?) = ?")
        params.extend((len(where.subject_prefix), where.subject_prefix))
    condition = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM webhook_deliveries {condition}ORDER BY created_at DESC, id DESC LIMIT ?",
        (*params, where.limit),
    ).fetchall()
    return [_delivery(r) for r in rows]


def attempts(conn: sqlite3.Connection, id: str) -> list[DeliveryAttempt]:
    _require(conn, id)
    rows = conn.execute(
        "SELECT number, at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = ?"
        " ORDER BY number",
        (id,),
    ).fetchall()
    return [
        DeliveryAttempt(
            number=r["number"], at=r["at"], status=r["status"], error=r["error"], duration_ms=r["duration_ms"]
        )
        for r in rows
    ]


def retry(conn: sqlite3.Connection, id: str, at: float, extra_attempts: int) -> Delivery:
    if extra_attempts < 1:
        raise ValueError("extra_attempts must be at least 1")
    current = _require(conn, id)
    if current.status != "failed":
        raise DeliveryFinished(f"delivery {id} is {current.status}; only a failed delivery can be retried")
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, max_attempts = ?"
        " WHERE id = ?",
        (at, current.attempts + extra_attempts, id),
    )
    return _require(conn, id)


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
