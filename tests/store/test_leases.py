"""Claim-with-lease on any table: order, conditions, owners, renewals, and no row claimed twice."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_server.store import SqliteStore, leases
from coral_server.store.leases import LeasedTable
from coral_server.store.transaction import immediate

from .conftest import new_delivery

RUNS = LeasedTable(
    table="runs",
    lease_column="lease_until",
    where="status IN ('pending', 'running')",
    order_by=("priority DESC", "id"),
    owner_column="owner",
)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "runs.db")
    conn.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, priority INTEGER NOT NULL,"
        " lease_until REAL, owner TEXT)"
    )
    for id, status, priority, lease in [
        ("a", "pending", 1, 0.0),
        ("b", "pending", 5, 0.0),
        ("c", "pending", 1, 50.0),  # not due before 50
        ("d", "done", 9, 0.0),  # fails the table's condition
        ("e", "pending", 3, None),  # NULL lease: never claimable
    ]:
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, NULL)", (id, status, priority, lease))
    yield conn
    conn.close()


def rows(conn: sqlite3.Connection) -> dict[str, tuple[str, float | None, str | None]]:
    found = conn.execute("SELECT id, status, lease_until, owner FROM runs").fetchall()
    return {r["id"]: (r["status"], r["lease_until"], r["owner"]) for r in found}


def test_claim_takes_due_rows_in_order_and_leases_them(db: sqlite3.Connection) -> None:
    assert [r["id"] for r in leases.due(db, RUNS, now=10.0, limit=10)] == ["b", "a"]
    with immediate(db):
        claimed = leases.claim(db, RUNS, now=10.0, limit=10, lease_until=40.0, owner="i-1")
    assert [(r["id"], r["lease_until"], r["owner"]) for r in claimed] == [("b", 0.0, None), ("a", 0.0, None)]
    after = rows(db)
    assert after["a"] == after["b"] == ("pending", 40.0, "i-1")
    assert after["c"] == ("pending", 50.0, None) and after["e"] == ("pending", None, None)
    with immediate(db):
        assert leases.claim(db, RUNS, now=39.0, limit=10, lease_until=99.0) == []  # all leased
    with immediate(db):
        again = leases.claim(db, RUNS, now=50.0, limit=2, lease_until=99.0, owner="i-2")
    assert [r["id"] for r in again] == ["b", "a"]  # the leases ended; "c" is due too, but limit 2


def test_a_claim_can_set_more_columns_in_the_same_update(db: sqlite3.Connection) -> None:
    with immediate(db):
        claimed = leases.claim(
            db, RUNS, now=10.0, limit=1, lease_until=40.0, owner="i-1", assign={"status": "running"}
        )
    assert [r["status"] for r in claimed] == ["pending"]  # as it was before the claim
    assert rows(db)["b"] == ("running", 40.0, "i-1")
    with immediate(db), pytest.raises(ValueError):
        leases.claim(db, RUNS, now=1, limit=1, lease_until=2, assign={"status; DROP TABLE runs": 1})


def test_only_the_owner_renews_or_releases(db: sqlite3.Connection) -> None:
    with immediate(db):
        leases.claim(db, RUNS, now=10.0, limit=2, lease_until=40.0, owner="i-1")
        assert leases.renew(db, RUNS, ["a", "b"], lease_until=70.0, owner="i-2") == 0
        assert leases.renew(db, RUNS, ["a", "b"], lease_until=70.0, owner="i-1") == 2
    assert rows(db)["a"] == ("pending", 70.0, "i-1")
    with immediate(db):
        assert leases.release(db, RUNS, ["a"], at=12.0, owner="i-2") == 0
        assert leases.release(db, RUNS, ["a", "zz"], at=12.0, owner="i-1") == 1
    assert rows(db)["a"] == ("pending", 12.0, None)
    assert [r["id"] for r in leases.due(db, RUNS, now=12.0, limit=10)] == ["a"]


def test_release_skips_rows_that_no_longer_meet_the_condition(db: sqlite3.Connection) -> None:
    with immediate(db):
        leases.claim(db, RUNS, now=10.0, limit=2, lease_until=40.0)
    db.execute("UPDATE runs SET status = 'done' WHERE id = 'b'")
    with immediate(db):
        assert leases.release(db, RUNS, ["a", "b"], at=11.0) == 1
    assert rows(db)["b"] == ("done", 40.0, None)


def test_leases_are_taken_inside_a_write_transaction(db: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError):
        leases.claim(db, RUNS, now=10.0, limit=1, lease_until=40.0)
    with pytest.raises(RuntimeError):
        leases.release(db, RUNS, ["a"], at=1.0)
    assert rows(db)["b"] == ("pending", 0.0, None)


def test_table_names_are_checked() -> None:
    with pytest.raises(ValueError):
        LeasedTable(table="runs; --", lease_column="lease_until", order_by=("id",))
    with pytest.raises(ValueError):
        LeasedTable(table="runs", lease_column="lease_until", order_by=("id; DROP TABLE runs",))
    with pytest.raises(ValueError):
        LeasedTable(table="runs", lease_column="lease_until", order_by=())
    no_owner = LeasedTable(table="runs", lease_column="lease_until", order_by=("id",))
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with immediate(conn), pytest.raises(ValueError):
        leases.claim(conn, no_owner, now=1, limit=1, lease_until=2, owner="i-1")


def test_threads_with_their_own_connections_never_claim_a_row_twice(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    setup = connect(path)
    setup.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, priority INTEGER NOT NULL,"
        " lease_until REAL, owner TEXT)"
    )
    with immediate(setup):
        setup.executemany(
            "INSERT INTO runs VALUES (?, 'pending', 0, 0.0, NULL)", [(f"r{i:03}",) for i in range(300)]
        )
    setup.close()
    claimed: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        conn = connect(path)
        mine = claimed.setdefault(name, [])
        start.wait()
        try:
            while True:
                with immediate(conn):
                    got = leases.claim(conn, RUNS, now=1.0, limit=3, lease_until=1e12, owner=name)
                if not got:
                    return
                mine.extend(r["id"] for r in got)
        finally:
            conn.close()

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    every = [id for ids in claimed.values() for id in ids]
    assert sorted(every) == [f"r{i:03}" for i in range(300)]  # each exactly once
    check = connect(path)
    try:
        owners = dict(check.execute("SELECT id, owner FROM runs").fetchall())
    finally:
        check.close()
    assert all(owners[id] == name for name, ids in claimed.items() for id in ids)


async def test_two_stores_on_one_file_never_claim_the_same_delivery(tmp_path: Path) -> None:
    path = tmp_path / "coral.db"
    first = await SqliteStore.open(path)
    second = await SqliteStore.open(path)
    try:
        await first.deliveries.enqueue(new_delivery("warm-up", due=1.0))  # both stores see one schema
        await asyncio.gather(
            *(first.deliveries.enqueue(new_delivery(f"d{i:03}", due=float(i))) for i in range(200))
        )

        async def drain(store: SqliteStore) -> list[str]:
            taken: list[str] = []
            while True:
                got = await store.deliveries.claim_due(1000.0, 5, lease_until=1e12)
                if not got:
                    return taken
                taken.extend(d.id for d in got)

        by_first, by_second = await asyncio.gather(drain(first), drain(second))
        assert not set(by_first) & set(by_second)
        assert sorted(by_first + by_second) == sorted(["warm-up", *(f"d{i:03}" for i in range(200))])
        assert len(by_first) + len(by_second) == 201  # nothing claimed twice by one store either
    finally:
        await first.close()
        await second.close()
