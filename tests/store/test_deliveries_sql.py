"""`store.deliveries` in SQLite: persistence, ordering, claims and state transitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from coral_server.clock import FakeClock
from coral_server.store import DeliveryFilter, DeliveryFinished, DeliveryNotFound, SqliteStore

from .conftest import new_delivery


async def test_enqueue_returns_the_pending_delivery(store: SqliteStore) -> None:
    d = await store.deliveries.enqueue(new_delivery("d1", headers={"X-Coral-Namespace": "ns"}))
    assert (d.status, d.attempts, d.max_attempts, d.next_attempt_at) == ("pending", 0, 3, 100.0)
    assert d.headers == {"X-Coral-Namespace": "ns"} and d.signature_header == "X-Coral-Signature"
    assert d.last_error is None and d.last_status is None and d.delivered_at is None
    assert await store.deliveries.get("d1") == d
    assert await store.deliveries.get("nope") is None


async def test_duplicate_id_is_rejected_and_nothing_half_written(store: SqliteStore) -> None:
    import sqlite3

    await store.deliveries.enqueue(new_delivery("d1"))
    with pytest.raises(sqlite3.IntegrityError):
        await store.deliveries.enqueue(new_delivery("d1", kind="other"))
    assert [d.kind for d in await store.deliveries.listing()] == ["session.end"]


async def test_due_ordering_and_limit(store: SqliteStore) -> None:
    for id, due in [("late", 30.0), ("early", 10.0), ("future", 99.0), ("mid", 20.0)]:
        await store.deliveries.enqueue(new_delivery(id, due=due))
    assert [d.id for d in await store.deliveries.due(50.0, 10)] == ["early", "mid", "late"]
    assert [d.id for d in await store.deliveries.due(50.0, 2)] == ["early", "mid"]
    assert await store.deliveries.due(5.0, 10) == []
    assert await store.deliveries.next_due_at() == 10.0


async def test_claim_leases_until_recorded(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("a", due=10.0))
    await store.deliveries.enqueue(new_delivery("b", due=20.0))
    claimed = await store.deliveries.claim_due(15.0, 10, lease_until=60.0)
    assert [d.id for d in claimed] == ["a"]
    again = await store.deliveries.claim_due(30.0, 10, lease_until=60.0)
    assert [d.id for d in again] == ["b"]  # "a" is leased, so only "b" is claimed
    assert [d.attempts for d in again] == [0]  # a claim is not an attempt
    assert await store.deliveries.due(59.0, 10) == []  # both leased
    assert [d.id for d in await store.deliveries.due(60.0, 10)] == ["a", "b"]  # lease ended
    assert await store.deliveries.next_due_at() == 60.0


async def test_release_ends_leases_of_pending_deliveries_only(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("a", due=10.0))
    await store.deliveries.enqueue(new_delivery("b", due=10.0))
    await store.deliveries.claim_due(10.0, 10, lease_until=60.0)
    await store.deliveries.record_attempt("b", ok=True, status=200, error=None, next_attempt_at=None)
    await store.deliveries.release(["a", "b"], at=11.0)
    assert [d.id for d in await store.deliveries.due(11.0, 10)] == ["a"]
    b = await store.deliveries.get("b")
    assert b is not None and (b.status, b.next_attempt_at) == ("delivered", None)


async def test_record_attempt_transitions(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("d", due=10.0))

    retry = await store.deliveries.record_attempt(
        "d", ok=False, status=500, error="HTTP 500", next_attempt_at=12.5
    )
    assert (retry.status, retry.attempts, retry.next_attempt_at) == ("pending", 1, 12.5)
    assert (retry.last_status, retry.last_error) == (500, "HTTP 500")

    done = await store.deliveries.record_attempt(
        "d", ok=True, status=200, error=None, next_attempt_at=None, at=13.0
    )
    assert (done.status, done.attempts, done.delivered_at, done.next_attempt_at) == (
        "delivered",
        2,
        13.0,
        None,
    )
    assert (done.last_status, done.last_error) == (200, None)
    assert await store.deliveries.next_due_at() is None

    with pytest.raises(DeliveryFinished):
        await store.deliveries.record_attempt("d", ok=True, status=200, error=None, next_attempt_at=None)
    with pytest.raises(DeliveryNotFound):
        await store.deliveries.record_attempt("nope", ok=True, status=200, error=None, next_attempt_at=None)


async def test_no_next_attempt_means_failed(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("d"))
    failed = await store.deliveries.record_attempt(
        "d", ok=False, status=None, error="refused", next_attempt_at=None
    )
    assert (failed.status, failed.attempts, failed.next_attempt_at, failed.last_error) == (
        "failed",
        1,
        None,
        "refused",
    )


async def test_attempts_used_up_means_failed_even_with_a_next_time(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("d", max_attempts=2))
    await store.deliveries.record_attempt("d", ok=False, status=503, error="HTTP 503", next_attempt_at=1.0)
    last = await store.deliveries.record_attempt(
        "d", ok=False, status=503, error="HTTP 503", next_attempt_at=2.0
    )
    assert (last.status, last.attempts) == ("failed", 2)


async def test_list_by_status_newest_first(store: SqliteStore) -> None:
    for i in range(3):
        await store.deliveries.enqueue(new_delivery(f"d{i}", created=float(i)))
    await store.deliveries.record_attempt("d1", ok=True, status=200, error=None, next_attempt_at=None)
    assert [d.id for d in await store.deliveries.listing()] == ["d2", "d1", "d0"]
    assert [d.id for d in await store.deliveries.listing(DeliveryFilter(status="pending"))] == ["d2", "d0"]
    assert [d.id for d in await store.deliveries.listing(DeliveryFilter(status="delivered"))] == ["d1"]
    assert [d.id for d in await store.deliveries.listing(DeliveryFilter(limit=1))] == ["d2"]
    with pytest.raises(ValueError):
        await store.deliveries.listing(DeliveryFilter(status="bogus"))  # type: ignore[arg-type]


async def test_list_by_kind_and_subject(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("a", created=1.0, subject="ns/s1"))
    await store.deliveries.enqueue(new_delivery("b", created=2.0, subject="ns/s2"))
    await store.deliveries.enqueue(new_delivery("c", created=3.0, subject="ns/s1", kind="other"))
    assert (await store.deliveries.get("a")).subject == "ns/s1"  # type: ignore[union-attr]
    by_subject = await store.deliveries.listing(DeliveryFilter(subject="ns/s1"))
    assert [d.id for d in by_subject] == ["c", "a"]
    both = await store.deliveries.listing(DeliveryFilter(subject="ns/s1", kind="session.end"))
    assert [d.id for d in both] == ["a"]
    assert await store.deliveries.listing(DeliveryFilter(subject="ns/none")) == []
    await store.deliveries.enqueue(new_delivery("d", created=4.0, subject="ns2/s1"))
    await store.deliveries.enqueue(new_delivery("e", created=5.0, subject="n/s9"))
    in_ns = await store.deliveries.listing(DeliveryFilter(subject_prefix="ns/"))
    assert [d.id for d in in_ns] == ["c", "b", "a"]


async def test_every_attempt_is_kept_in_order(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("d", due=1.0))
    assert await store.deliveries.attempts("d") == []
    await store.deliveries.record_attempt(
        "d", ok=False, status=None, error="refused", next_attempt_at=2.0, at=1.5, duration_ms=3.0
    )
    await store.deliveries.record_attempt("d", ok=True, status=204, error=None, next_attempt_at=None, at=2.5)
    history = await store.deliveries.attempts("d")
    assert [(a.number, a.at, a.status, a.error, a.duration_ms) for a in history] == [
        (1, 1.5, None, "refused", 3.0),
        (2, 2.5, 204, None, None),
    ]
    with pytest.raises(DeliveryNotFound):
        await store.deliveries.attempts("nope")


async def test_retry_makes_a_failed_delivery_pending_again(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("d", due=1.0))  # max_attempts 3
    await store.deliveries.record_attempt("d", ok=False, status=500, error="HTTP 500", next_attempt_at=None)
    again = await store.deliveries.retry("d", 9.0, 2)
    assert (again.status, again.attempts, again.max_attempts, again.next_attempt_at) == ("pending", 1, 3, 9.0)
    assert [d.id for d in await store.deliveries.due(9.0, 10)] == ["d"]
    with pytest.raises(DeliveryFinished):  # only a failed one: this one is pending again
        await store.deliveries.retry("d", 5.0, 2)
    await store.deliveries.record_attempt("d", ok=True, status=200, error=None, next_attempt_at=None)
    with pytest.raises(DeliveryFinished):
        await store.deliveries.retry("d", 5.0, 2)
    with pytest.raises(DeliveryNotFound):
        await store.deliveries.retry("nope", 1.0, 1)


async def test_retry_needs_at_least_one_attempt(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("d", due=1.0))
    await store.deliveries.record_attempt("d", ok=False, status=500, error="HTTP 500", next_attempt_at=None)
    with pytest.raises(ValueError):
        await store.deliveries.retry("d", 1.0, 0)


async def test_an_attempt_without_a_time_is_stamped_by_the_store_clock(tmp_path: Path) -> None:
    clock = FakeClock(5_000.0)
    store = await SqliteStore.open(tmp_path / "coral.db", clock=clock)
    try:
        await store.deliveries.enqueue(new_delivery("d", due=1.0))
        clock.advance(7)
        done = await store.deliveries.record_attempt(
            "d", ok=True, status=200, error=None, next_attempt_at=None
        )
        assert done.delivered_at == 5_007.0
        assert [a.at for a in await store.deliveries.attempts("d")] == [5_007.0]
    finally:
        await store.close()


async def test_deliveries_of_one_subject_go_out_in_the_order_they_were_made(store: SqliteStore) -> None:
    await store.deliveries.enqueue(new_delivery("first", due=10.0, subject="runs/1"))
    await store.deliveries.enqueue(new_delivery("second", due=10.0, subject="runs/1"))
    await store.deliveries.enqueue(new_delivery("other", due=10.0, subject="runs/2"))
    await store.deliveries.enqueue(new_delivery("free", due=10.0))
    # Only the first of each subject (and every delivery without one) may go now.
    claimed = await store.deliveries.claim_due(10.0, 10, lease_until=60.0)
    assert sorted(d.id for d in claimed) == ["first", "free", "other"]
    # "first" fails and waits for its retry: "second" still waits behind it, and nothing is due
    # before the retry (no busy wake-up for a delivery that cannot go).
    await store.deliveries.record_attempt("first", ok=False, status=500, error="down", next_attempt_at=30.0)
    for d in ("other", "free"):
        await store.deliveries.record_attempt(d, ok=True, status=200, error=None, next_attempt_at=None)
    assert await store.deliveries.due(29.0, 10) == []
    assert await store.deliveries.next_due_at() == 30.0
    assert [d.id for d in await store.deliveries.claim_due(30.0, 10, lease_until=90.0)] == ["first"]
    await store.deliveries.record_attempt("first", ok=True, status=200, error=None, next_attempt_at=None)
    assert [d.id for d in await store.deliveries.claim_due(30.0, 10, lease_until=90.0)] == ["second"]
