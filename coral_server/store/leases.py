"""Claim-with-lease for any table: take due rows and push their lease in the same write transaction.

A row is claimable when its table's condition holds and its lease column is due (`<= now`). A claim
selects such rows in the table's order and sets their lease column to the lease's end, in one
`BEGIN IMMEDIATE` transaction, so two claimers (tasks, threads or processes on one database file)
never take the same row. The claimer owns the row until the lease ends: if it dies without finishing,
the row becomes claimable again by itself. Deliveries lease their `next_attempt_at`; runs will lease
a `lease_until` column (with an owner column, so only the holder renews).

These are synchronous functions for the store's writer thread; call them inside a write transaction.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ORDER_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*( (ASC|DESC))?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LeasedTable:
    """How one table's rows are claimed. Names are code, never input: they are checked, then quoted in.

    `lease_column` holds when the row is next claimable (Unix s; NULL: never); `where` is a constant SQL
    condition a claimable row also meets (e.g. "status = 'pending'"); `order_by` the claim order;
    `owner_column`, if any, records who holds the lease; `columns` what a claim returns.
    """

    table: str
    lease_column: str
    order_by: tuple[str, ...]
    where: str = ""
    key: str = "id"
    owner_column: str | None = None
    columns: str = "*"

    def __post_init__(self) -> None:
        names = [self.table, self.lease_column, self.key]
        if self.owner_column is not None:
            names.append(self.owner_column)
        for name in names:
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"not an SQL identifier: {name!r}")
        if not self.order_by or not all(_ORDER_TERM.fullmatch(term) for term in self.order_by):
            raise ValueError(f"order_by must be column names, each optionally ASC or DESC: {self.order_by!r}")

    def _condition(self, extra: str) -> str:
        return " AND ".join(f"({c})" for c in (self.where, extra) if c)


def _require_transaction(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        raise RuntimeError("leases are taken inside a write transaction (BEGIN IMMEDIATE)")


def due(conn: sqlite3.Connection, table: LeasedTable, *, now: float, limit: int) -> list[sqlite3.Row]:
    """The rows a claim at `now` would take, in order, without taking them (read only)."""
    if limit < 1:
        return []
    return conn.execute(
        f'SELECT {table.columns} FROM "{table.table}" WHERE {table._condition(f"{table.lease_column} <= ?")}'
        f" ORDER BY {', '.join(table.order_by)} LIMIT ?",
        (now, limit),
    ).fetchall()


def claim(
    conn: sqlite3.Connection,
    table: LeasedTable,
    *,
    now: float,
    limit: int,
    lease_until: float,
    owner: str | None = None,
    assign: Mapping[str, object] | None = None,
) -> list[sqlite3.Row]:
    """Claim up to `limit` rows due at `now`, in the table's order; each is leased until `lease_until`.

    `owner` is written to the owner column; `assign` sets more columns in the same update (e.g. a
    status). Returns the rows as they were before the claim.
    """
    _require_transaction(conn)
    if owner is not None and table.owner_column is None:
        raise ValueError(f"{table.table} has no owner column")
    settings: dict[str, object] = {table.lease_column: lease_until}
    if table.owner_column is not None and owner is not None:
        settings[table.owner_column] = owner
    for column, value in (assign or {}).items():
        if not _IDENTIFIER.fullmatch(column):
            raise ValueError(f"not an SQL identifier: {column!r}")
        settings[column] = value
    rows = due(conn, table, now=now, limit=limit)
    if rows:
        keys = [_key(row, table) for row in rows]
        assignments = ", ".join(f'"{column}" = ?' for column in settings)
        conn.executemany(
            f'UPDATE "{table.table}" SET {assignments} WHERE "{table.key}" = ?',
            [(*settings.values(), key) for key in keys],
        )
    return rows


def release(
    conn: sqlite3.Connection,
    table: LeasedTable,
    keys: Sequence[object],
    *,
    at: float,
    owner: str | None = None,
) -> int:
    """End the leases of `keys` (still meeting the table's condition): claimable again from `at`.

    With `owner`, only leases that owner holds are ended (and the owner column is cleared). Returns
    how many rows were released.
    """
    _require_transaction(conn)
    return _update_leases(conn, table, keys, at, owner, clear_owner=True)


def renew(
    conn: sqlite3.Connection,
    table: LeasedTable,
    keys: Sequence[object],
    *,
    lease_until: float,
    owner: str | None = None,
) -> int:
    """Extend the leases of `keys` to `lease_until` (only those `owner` holds, if given); how many."""
    _require_transaction(conn)
    return _update_leases(conn, table, keys, lease_until, owner, clear_owner=False)


def _update_leases(
    conn: sqlite3.Connection,
    table: LeasedTable,
    keys: Sequence[object],
    value: float,
    owner: str | None,
    *,
    clear_owner: bool,
) -> int:
    if owner is not None and table.owner_column is None:
        raise ValueError(f"{table.table} has no owner column")
    settings = f'"{table.lease_column}" = ?'
    params: tuple[object, ...] = (value,)
    condition = f'"{table.key}" = ?'
    if owner is not None:
        condition += f' AND "{table.owner_column}" = ?'
        if clear_owner:
            settings += f', "{table.owner_column}" = NULL'
    where = table._condition(condition)
    changed = 0
    for key in keys:
        cursor = conn.execute(
            f'UPDATE "{table.table}" SET {settings} WHERE {where}',
            (*params, key, *((owner,) if owner is not None else ())),
        )
        changed += cursor.rowcount
    return changed


def _key(row: sqlite3.Row, table: LeasedTable) -> object:
    try:
        return row[table.key]
    except (IndexError, KeyError, TypeError):  # TypeError: the connection does not return sqlite3.Row
        raise ValueError(f"claims need sqlite3.Row rows that include the key {table.key!r}") from None
