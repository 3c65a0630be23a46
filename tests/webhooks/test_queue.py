"""The durable delivery queue against a real receiver on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from coral_server.clock import FakeClock
from coral_server.store import DeliveryFilter, SqliteStore
from coral_server.webhooks import WebhookSigner
from coral_server.webhooks.destinations import DestinationPolicy
from coral_server.webhooks.queue import DeliveryQueue, retry_delay

from .conftest import NEW_SECRET, Attempts, QueueFactory, Receiver, free_port, move_to_retry

# The production backoff (1 s doubling, capped at 300 s), on a fake clock: tests move time instead of
# waiting, and with a seeded jitter every retry time is known in advance.
BACKOFF = {"base_delay_s": 1.0, "max_delay_s": 300.0}


def expected_delays(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [retry_delay(i, base_s=1.0, max_s=300.0, rng=rng) for i in range(1, n + 1)]


async def always_500(_: int) -> web.StreamResponse:
    return web.Response(status=500, text="boom")


async def test_delivered_once_with_both_signatures_verified(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory
) -> None:
    await receiver.start()
    attempts = Attempts()
    queue = await make_queue(store, on_attempt=attempts)
    payload = {"event": "session.ended", "n": 1}
    sent = await queue.send("session.end", receiver.url, payload, headers={"X-Coral-Namespace": "ns"})

    done = await attempts.until(sent.id, lambda d: d.status == "delivered")
    assert (done.attempts, done.last_status, done.last_error) == (1, 200, None)
    assert done.delivered_at is not None
    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert got.problems == []  # standard sigs verified with the old AND the new secret alone, legacy too
    assert got.body == orjson.dumps(payload)
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-id"] == sent.id
    assert got.headers["X-Coral-Namespace"] == "ns"
    assert await store.deliveries.get(sent.id) == done
    assert await store.deliveries.next_due_at() is None


async def test_bytes_are_sent_as_given_under_a_custom_header(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory
) -> None:
    await receiver.start()
    attempts = Attempts()
    queue = await make_queue(store, on_attempt=attempts)
    body = b'{\n  "pretty": true\n}'
    sent = await queue.send("tool", receiver.url, body, signature_header="X-App-Sig")
    await attempts.until(sent.id, lambda d: d.status == "delivered")
    headers = receiver.requests[0].headers
    assert receiver.requests[0].body == body
    assert "X-App-Sig" in headers and "X-Coral-Signature" not in headers


async def test_receiver_down_then_up_is_retried_until_delivered(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory, clock: FakeClock
) -> None:
    port = free_port()
    attempts = Attempts()
    queue = await make_queue(store, on_attempt=attempts, clock=clock, rng=random.Random(7), **BACKOFF)
    sent = await queue.send("session.end", f"http://127.0.0.1:{port}/hook", {"a": 1})

    await move_to_retry(clock, attempts, sent.id, 1)
    failing = await attempts.until(sent.id, lambda d: d.attempts >= 2)
    assert failing.status == "pending"
    assert failing.last_status is None and failing.last_error
    assert "Connect" in failing.last_error

    await receiver.start(port)
    await move_to_retry(clock, attempts, sent.id, 2)
    done = await attempts.until(sent.id, lambda d: d.status == "delivered")
    assert done.attempts >= 3
    assert len(receiver.requests) == 1 and receiver.requests[0].problems == []
    assert [d.attempts for d in attempts.seen] == list(range(1, done.attempts + 1))
    history = await store.deliveries.attempts(sent.id)
    gaps = [b.at - a.at for a, b in itertools.pairwise(history)]
    assert gaps == pytest.approx(expected_delays(2))  # each retry exactly when its backoff said


async def test_500s_are_retried_then_failed_after_max_attempts(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory, clock: FakeClock
) -> None:
    receiver.respond = always_500
    await receiver.start()
    attempts = Attempts()
    queue = await make_queue(
        store, on_attempt=attempts, max_attempts=5, clock=clock, rng=random.Random(7), **BACKOFF
    )
    start = clock.time()
    sent = await queue.send("session.end", receiver.url, {"a": 1}, max_attempts=3)

    first = await move_to_retry(clock, attempts, sent.id, 1)
    second = await move_to_retry(clock, attempts, sent.id, 2)
    delays = expected_delays(2)
    assert first.next_attempt_at == pytest.approx(start + delays[0])
    assert second.next_attempt_at == pytest.approx(start + delays[0] + delays[1])
    assert 1.0 <= delays[1] <= 2.0  # doubled, with jitter
    failed = await attempts.until(sent.id, lambda d: d.status != "pending")
    assert failed.status == "failed"
    assert (failed.attempts, failed.last_status, failed.last_error) == (3, 500, "HTTP 500")
    assert failed.next_attempt_at is None
    assert len(receiver.requests) == 3
    assert [d.id for d in await store.deliveries.listing(DeliveryFilter(status="failed"))] == [sent.id]


async def test_same_webhook_id_on_every_retry(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory, clock: FakeClock
) -> None:
    async def fail_twice(n: int) -> web.StreamResponse:
        return web.Response(status=503 if n <= 2 else 204)

    receiver.respond = fail_twice
    await receiver.start()
    attempts = Attempts()
    queue = await make_queue(store, on_attempt=attempts, clock=clock, **BACKOFF)
    sent = await queue.send("session.end", receiver.url, {"a": 1})
    await move_to_retry(clock, attempts, sent.id, 1)
    await move_to_retry(clock, attempts, sent.id, 2)

    done = await attempts.until(sent.id, lambda d: d.status == "delivered")
    assert (done.attempts, done.last_status) == (3, 204)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [sent.id] * 3
    assert all(r.problems == [] for r in receiver.requests)  # each attempt freshly signed and valid


async def test_timeout_is_retried(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory, clock: FakeClock
) -> None:
    async def hang_first(n: int) -> web.StreamResponse:
        if n == 1:
            await receiver.release.wait()
        return web.Response(text="ok")

    receiver.respond = hang_first
    await receiver.start()
    attempts = Attempts()
    impatient = await make_queue(store, on_attempt=attempts, timeout_s=0.2, clock=clock, **BACKOFF)
    sent = await impatient.send("session.end", receiver.url, {"a": 1})

    first = await attempts.until(sent.id, lambda d: d.attempts >= 1)
    assert first.last_error is not None and "timeout" in first.last_error
    # The retry goes through a queue with time to spare: a busy machine may take 0.2 s for any POST.
    await impatient.close()
    await make_queue(store, on_attempt=attempts, timeout_s=30, clock=clock, **BACKOFF)
    await move_to_retry(clock, attempts, sent.id, 1)
    done = await attempts.until(sent.id, lambda d: d.status == "delivered")
    assert done.attempts == 2
    assert [r.headers["webhook-id"] for r in receiver.requests] == [sent.id] * 2


async def test_restart_durability(receiver: Receiver, tmp_path: Path, make_queue: QueueFactory) -> None:
    path = tmp_path / "coral.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"

    first_store = await SqliteStore.open(path)
    attempts = Attempts()
    first_queue = await make_queue(first_store, on_attempt=attempts)
    sent = await first_queue.send("session.end", url, {"survives": "restart"})
    unsent = await first_queue.send("session.end", url, {"survives": "too"})
    await attempts.until(sent.id, lambda d: d.attempts >= 1)
    await attempts.until(unsent.id, lambda d: d.attempts >= 1)
    await first_queue.close()
    await first_store.close()
    tried_before = attempts.latest(sent.id)
    assert tried_before is not None and tried_before.status == "pending"

    await receiver.start(port)
    second_store = await SqliteStore.open(path)
    try:
        # What the store kept is what counts: on a busy machine a second attempt may have begun
        # before the close (counted, its outcome never reported).
        stored = await second_store.deliveries.get(sent.id)
        assert stored is not None and stored.attempts >= tried_before.attempts
        after = Attempts()
        await make_queue(second_store, on_attempt=after)
        done = await after.until(sent.id, lambda d: d.status == "delivered")
        await after.until(unsent.id, lambda d: d.status == "delivered")
        assert done.attempts == stored.attempts + 1
        by_id = {r.headers["webhook-id"]: r for r in receiver.requests}
        assert sorted(by_id) == sorted([sent.id, unsent.id]) and len(receiver.requests) == 2
        assert orjson.loads(by_id[sent.id].body) == {"survives": "restart"}
        assert all(r.problems == [] for r in receiver.requests)
    finally:
        await second_store.close()


async def test_closing_mid_attempt_leaves_it_due_for_the_next_start(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory
) -> None:
    async def hang_first(n: int) -> web.StreamResponse:
        if n == 1:
            await receiver.release.wait()
        return web.Response(text="ok")

    receiver.respond = hang_first
    await receiver.start()
    first = await make_queue(store, timeout_s=30)
    sent = await first.send("session.end", receiver.url, {"a": 1})
    await receiver.changed.wait_until(lambda: len(receiver.requests) == 1)
    await first.close()  # cancels the hanging attempt: not counted, lease released

    interrupted = await store.deliveries.get(sent.id)
    assert interrupted is not None
    assert (interrupted.status, interrupted.attempts) == ("pending", 0)
    attempts = Attempts()
    await make_queue(store, on_attempt=attempts, timeout_s=30)
    done = await attempts.until(sent.id, lambda d: d.status == "delivered")  # well within the 35 s lease
    assert done.attempts == 1
    assert [r.headers["webhook-id"] for r in receiver.requests] == [sent.id] * 2


async def test_queued_before_start_is_sent_on_start(receiver: Receiver, store: SqliteStore) -> None:
    await receiver.start()
    attempts = Attempts()
    queue = DeliveryQueue(
        store.deliveries, WebhookSigner([NEW_SECRET]), on_attempt=attempts, base_delay_s=0.02
    )
    try:
        sent = await queue.send("session.end", receiver.url, {"a": 1})
        assert (await store.deliveries.get(sent.id)) is not None  # durable before any attempt
        assert receiver.requests == []
        await queue.start()
        await attempts.until(sent.id, lambda d: d.status == "delivered")
    finally:
        await queue.close()


async def test_concurrency_is_bounded(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory
) -> None:
    gate = asyncio.Event()

    async def gated(_: int) -> web.StreamResponse:
        await gate.wait()
        return web.Response(text="ok")

    receiver.respond = gated
    await receiver.start()
    attempts = Attempts()
    queue = await make_queue(store, on_attempt=attempts, concurrency=2)
    sent = [await queue.send("bulk", receiver.url, {"i": i}) for i in range(6)]

    await receiver.changed.wait_until(lambda: receiver.in_flight == 2)
    gate.set()
    for d in sent:
        await attempts.until(d.id, lambda x: x.status == "delivered")
    assert receiver.max_in_flight == 2
    assert len(receiver.requests) == 6


def test_retry_delay_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(7)
    for attempts, full in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 300.0), (10_000, 300.0)]:
        delay = retry_delay(attempts, base_s=1.0, max_s=300.0, rng=rng)
        assert full * 0.5 <= delay <= full


async def test_a_refused_destination_fails_at_once_and_tells_nothing_of_the_port(
    receiver: Receiver, store: SqliteStore, make_queue: QueueFactory
) -> None:
    """With internal destinations refused (a server with auth keys), a webhook to 127.0.0.1 is never
    sent: an open and a closed port fail alike, so the deliveries API cannot be used to probe ports.
    A host name is checked on what it resolves to (localhost: loopback)."""
    await receiver.start()
    attempts = Attempts()
    queue = await make_queue(store, on_attempt=attempts, destinations=DestinationPolicy(private=False))
    closed = free_port()
    urls = [
        f"http://127.0.0.1:{receiver.port}/hook",
        f"http://127.0.0.1:{closed}/hook",
        f"http://localhost:{receiver.port}/hook",
    ]
    sent = [await queue.send("session_end", url, {"a": 1}) for url in urls]
    done = [await attempts.until(d.id, lambda d: d.status != "pending") for d in sent]
    assert receiver.requests == []
    for delivery in done:
        assert (delivery.status, delivery.attempts, delivery.last_status) == ("failed", 1, None)
        assert delivery.last_error is not None and "destination not allowed" in delivery.last_error
        assert "loopback" in delivery.last_error
    assert done[0].last_error == done[1].last_error  # open or closed: the same answer
    assert "localhost (127.0.0.1)" in (done[2].last_error or "")
    # Development mode (no auth keys): the same URL is delivered. The refusing queue is closed first:
    # two queues on one store share its deliveries, and it would refuse this one too.
    await queue.close()
    dev = await make_queue(store, on_attempt=attempts, destinations=DestinationPolicy(private=True))
    ok = await dev.send("session_end", f"http://localhost:{receiver.port}/hook", {"a": 2})
    await attempts.until(ok.id, lambda d: d.status == "delivered")
