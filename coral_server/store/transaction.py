"""The SQLite unit of work: `BEGIN IMMEDIATE … COMMIT`, rolled back if anything inside raises."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction; `conn` must be in autocommit mode (isolation_level=None).

    IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock upgrade.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
