"""Deliveries in SQLite: SQL for `webhook_deliveries` (run on the writer thread) and `SqliteDeliveries`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import cast

import orjson

from coral_server.clock import Clock
from coral_server.store import leases
from coral_server.store.deliveries import (
    DELIVERY_STATUSES,
    Delivery,
    DeliveryAttempt,
    DeliveryFilter,
    DeliveryFinished,
    DeliveryNotFound,
    DeliveryStatus,
    NewDelivery,
)
from coral_server.store.writer import Writer

_COLUMNS = (
    "id, kind, url, headers, body, signature_header, status, attempts, max_attempts, "
    "next_attempt_at, last_error, last_status, created_at, delivered_at, subject"
)
# Deliveries about one subject (a session, a run) go out in the order they were made: one is
# claimable only once no earlier one of its subject is still pending (in flight or waiting to retry).
_FIRST_OF_SUBJECT = (
    "subject IS NULL OR NOT EXISTS (SELECT 1 FROM webhook_deliveries AS earlier"
    " WHERE earlier.subject = webhook_deliveries.subject AND earlier.status = 'pending'"
    " AND earlier.rowid < webhook_deliveries.rowid)"
)
# A pending delivery is due when its next attempt is; a claim leases that time itself.
DUE = leases.LeasedTable(
    table="webhook_deliveries",
    lease_column="next_attempt_at",
    where=f"status = 'pending' AND ({_FIRST_OF_SUBJECT})",
    order_by=("next_attempt_at", "created_at", "id"),
    columns=_COLUMNS,
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
    return [_delivery(r) for r in leases.due(conn, DUE, now=now, limit=limit)]


def claim(conn: sqlite3.Connection, now: float, limit: int, lease_until: float) -> list[Delivery]:
    rows = leases.claim(conn, DUE, now=now, limit=limit, lease_until=lease_until)
    return [_delivery(r) for r in rows]


def release(conn: sqlite3.Connection, ids: Sequence[str], at: float) -> None:
    leases.release(conn, DUE, ids, at=at)


def record_attempt(
    conn: sqlite3.Connection,
    id: str,
    *,
    ok: bool,
    status: int | None,
    error: str | None,
    next_attempt_at: float | None,
    at: float,
    duration_ms: float | None = None,
) -> Delivery:
    current = _require(conn, id)
    if current.status != "pending":
        raise DeliveryFinished(f"delivery {id} is already {current.status}")
    attempts = current.attempts + 1
    if ok:
        new_status, next_at, delivered_at, error = "delivered", None, at, None
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
        (id, attempts, at, status, error, duration_ms),
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
        "SELECT MIN(next_attempt_at) FROM webhook_deliveries"
        f" WHERE status = 'pending' AND ({_FIRST_OF_SUBJECT})"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _require(conn: sqlite3.Connection, id: str) -> Delivery:
    found = get(conn, id)
    if found is None:
        raise DeliveryNotFound(id)
    return found


class SqliteDeliveries:
    """The `DeliveryStore` of a SQLite store: each method is one hop to its writer thread."""

    def __init__(self, writer: Writer, clock: Clock) -> None:
        self._writer = writer
        self._clock = clock

    async def enqueue(self, new: NewDelivery) -> Delivery:
        """Persist a pending delivery; durable when this returns."""
        return await self._writer.write(lambda c: insert(c, new))

    async def due(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, earliest first."""
        return await self._writer.read(lambda c: due(c, now, limit))

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Delivery]:
        """Due deliveries, each leased (next attempt moved to `lease_until`) in the same transaction."""
        return await self._writer.write(lambda c: claim(c, now, limit, lease_until))

    async def release(self, ids: Sequence[str], at: float) -> None:
        """Make abandoned claims due again at `at`."""
        await self._writer.write(lambda c: release(c, ids, at))

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
        """Count one attempt and move the delivery to its next state (see `DeliveryStore`)."""
        when = self._clock.time() if at is None else at
        return await self._writer.write(
            lambda c: record_attempt(
                c,
                id,
                ok=ok,
                status=status,
                error=error,
                next_attempt_at=next_attempt_at,
                at=when,
                duration_ms=duration_ms,
            )
        )

    async def listing(self, where: DeliveryFilter | None = None) -> list[Delivery]:
        """Deliveries matching `where`, newest first."""
        return await self._writer.read(lambda c: listing(c, where or DeliveryFilter()))

    async def attempts(self, id: str) -> list[DeliveryAttempt]:
        """One delivery's attempts, oldest first."""
        return await self._writer.read(lambda c: attempts(c, id))

    async def retry(self, id: str, at: float, extra_attempts: int) -> Delivery:
        """Make a failed delivery pending again (see `DeliveryStore.retry`)."""
        return await self._writer.write(lambda c: retry(c, id, at, extra_attempts))

    async def get(self, id: str) -> Delivery | None:
        """One delivery, or None."""
        return await self._writer.read(lambda c: get(c, id))

    async def next_due_at(self) -> float | None:
        """When the earliest pending delivery is due, or None."""
        return await self._writer.read(next_due_at)
