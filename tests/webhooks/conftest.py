"""Real things for webhook tests: an aiohttp receiver on 127.0.0.1, a SQLite store, queue factories."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coral_server.clock import FakeClock
from coral_server.store import Delivery, SqliteStore
from coral_server.webhooks import WebhookSigner, WebhookVerificationError
from coral_server.webhooks.queue import DeliveryQueue
from coral_server.webhooks.verify import verify_coral_signature, verify_webhook

OLD_SECRET = b"old-secret"
NEW_SECRET = b"new-secret"


class Signal:
    """Wakes waiters whenever something changes; they re-check their condition, with a deadline."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    async def wait_until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()


@dataclass(slots=True)
class Received:
    headers: dict[str, str]
    body: bytes
    problems: list[str]  # verification failures seen by the receiver (empty = all good)


Responder = Callable[[int], Awaitable[web.StreamResponse]]


async def ok(_: int) -> web.StreamResponse:
    return web.Response(text="ok")


@dataclass(slots=True)
class Receiver:
    """An app's webhook endpoint: records each request and checks every signature it carries."""

    secrets_each: tuple[bytes, ...] = (NEW_SECRET,)
    respond: Responder = ok
    requests: list[Received] = field(default_factory=list)
    changed: Signal = field(default_factory=Signal)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # frees handlers told to hang
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=t"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        problems = []
        for secret in self.secrets_each:  # a receiver that knows only this one secret must verify
            try:
                verify_webhook(headers, body, [secret])
            except WebhookVerificationError as exc:
                problems.append(f"standard/{secret!r}: {exc.reason}")
        try:
            verify_coral_signature(headers, body, [NEW_SECRET])
        except WebhookVerificationError as exc:
            problems.append(f"coral: {exc.reason}")
        self.requests.append(Received(headers, body, problems))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.changed.notify()
        try:
            return await self.respond(len(self.requests))
        finally:
            self.in_flight -= 1

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Attempts:
    """Collects the queue's `on_attempt` reports so tests can wait for a state."""

    def __init__(self) -> None:
        self.seen: list[Delivery] = []
        self.changed = Signal()

    def __call__(self, delivery: Delivery) -> None:
        self.seen.append(delivery)
        self.changed.notify()

    def latest(self, id: str) -> Delivery | None:
        return next((d for d in reversed(self.seen) if d.id == id), None)

    async def until(self, id: str, check: Callable[[Delivery], bool], timeout: float = 30.0) -> Delivery:
        def met() -> bool:
            d = self.latest(id)
            return d is not None and check(d)

        await self.changed.wait_until(met, timeout)
        found = self.latest(id)
        assert found is not None
        return found


def free_port() -> int:
    """A port nothing listens on (yet): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(secrets_each=(OLD_SECRET, NEW_SECRET))
    yield r
    await r.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "coral.db")
    yield s
    await s.close()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stands still until the test moves it, starting at the real time (receivers check
    signature timestamps against theirs, five minutes either way)."""
    return FakeClock(time.time())


async def move_to_retry(clock: FakeClock, attempts: Attempts, id: str, failed_attempts: int) -> Delivery:
    """Once attempt `failed_attempts` of `id` has failed and the queue sleeps until its retry, move the
    clock there; the queue must not wake a moment early. Returns the delivery as that attempt left it."""
    failed = await attempts.until(id, lambda d: d.attempts >= failed_attempts)
    assert (failed.status, failed.attempts) == ("pending", failed_attempts)
    retry_at = failed.next_attempt_at
    assert retry_at is not None
    await clock.sleepers(due=retry_at)
    clock.set(retry_at - 0.001)
    assert clock.deadlines() == [retry_at]  # still asleep
    clock.set(retry_at)
    return failed


QueueFactory = Callable[..., Awaitable[DeliveryQueue]]


@pytest.fixture
async def make_queue() -> AsyncIterator[QueueFactory]:
    """Started queues signing with (new, old) secrets and short delays; all closed at the end."""
    made: list[DeliveryQueue] = []

    async def make(store: SqliteStore, **options: Any) -> DeliveryQueue:
        settings: dict[str, Any] = {"base_delay_s": 0.02, "max_delay_s": 0.1, "timeout_s": 2.0}
        settings.update(options)
        queue = DeliveryQueue(store.deliveries, WebhookSigner([NEW_SECRET, OLD_SECRET]), **settings)
        await queue.start()
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()
