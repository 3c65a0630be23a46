"""The one durable delivery queue for every outgoing webhook: persist first, then POST with retries.

`send` stores the delivery before any attempt, so a restart never loses it. When the store refuses
(disk full...), the delivery is held in memory, in order, logged at ERROR, and stored as soon as the
store takes it again; if it still cannot be stored when the queue closes, it gets one attempt then,
so nothing accepted is dropped without a word. One dispatcher task
claims due deliveries (a lease in the store, so a delivery in flight is not picked up twice) and
runs up to `concurrency` attempts at once, each in a task the queue owns. Failures are retried
with capped, jittered exponential backoff until `max_attempts`, then the delivery is `failed`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from coral_server.clock import Clock, SystemClock, wait_for_event
from coral_server.store import Delivery, DeliveryStore, NewDelivery, StoreUnavailable
from coral_server.webhooks.destinations import DestinationPolicy
from coral_server.webhooks.guard import denied_reason, guarded_connector
from coral_server.webhooks.scheme import CORAL_SIGNATURE_HEADER
from coral_server.webhooks.signing import WebhookSigner, new_message_id

log = logging.getLogger("coral_server.webhooks")

AttemptObserver = Callable[[Delivery], None]

# A claimed delivery becomes due again this long after its attempt's timeout, should the attempt
# never be recorded (the process died or the queue closed mid-request).
LEASE_MARGIN_S = 5.0
# After an unexpected store error the dispatcher waits this long before trying again.
ERROR_PAUSE_S = 1.0


def retry_delay(attempts: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay after the `attempts`-th failed attempt: base·2^(attempts-1), capped, times a 0.5-1 jitter."""
    exponent = min(max(attempts - 1, 0), 62)  # keeps the float finite however many attempts
    return min(max_s, base_s * 2.0**exponent) * rng.uniform(0.5, 1.0)


def _target(url: str) -> str:
    # Logs name the host only: a URL's path or query may carry a token.
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or "?"
    except ValueError:
        return "?"


def _as_delivery(new: NewDelivery) -> Delivery:
    """A delivery not stored yet, as `send` returns it (pending, no attempt)."""
    return Delivery(
        id=new.id,
        kind=new.kind,
        url=new.url,
        headers=dict(new.headers),
        body=new.body,
        signature_header=new.signature_header,
        status="pending",
        attempts=0,
        max_attempts=new.max_attempts,
        next_attempt_at=new.next_attempt_at,
        last_error=None,
        last_status=None,
        created_at=new.created_at,
        delivered_at=None,
        subject=new.subject,
    )


class _Refused(Exception):
    """The destination policy refuses the delivery's URL."""


class DeliveryQueue:
    """Owns the dispatcher task, the attempt tasks and (unless given one) the HTTP client.

    Every time it reads (retry times, signature timestamps, when to wake) comes from `clock`.
    """

    def __init__(
        self,
        deliveries: DeliveryStore,
        signer: WebhookSigner,
        *,
        http: aiohttp.ClientSession | None = None,
        timeout_s: float = 10,
        max_attempts: int = 8,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        concurrency: int = 16,
        clock: Clock | None = None,
        on_attempt: AttemptObserver | None = None,
        rng: random.Random | None = None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        if max_attempts < 1 or concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_attempts and concurrency must be at least 1, timeout_s positive")
        self._deliveries = deliveries
        self._signer = signer
        self._http = http
        self._owns_http = http is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._concurrency = concurrency
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._on_attempt = on_attempt
        self._rng = rng if rng is not None else random.Random()
        # Checked on every attempt (the URL) and every connection (what its host resolves to).
        self._destinations = destinations if destinations is not None else DestinationPolicy()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._attempts: dict[str, asyncio.Task[None]] = {}
        # Accepted deliveries the store refused, oldest first (stored before any newer one).
        self._unstored: list[NewDelivery] = []

    async def start(self) -> None:
        """Start the dispatcher; it first picks up whatever the store still has pending."""
        if self._dispatcher is not None:
            raise RuntimeError("the delivery queue is already started")
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=guarded_connector(self._destinations))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="webhook-dispatcher")
        log.info("webhook.queue_started concurrency=%d", self._concurrency)

    async def close(self) -> None:
        """Cancel and await the dispatcher and every attempt in flight; close our own HTTP client.

        Interrupted attempts are not counted; their deliveries stay pending and due, so the next
        start retries them at once (after a crash, once their lease ends). Close the queue before
        its store.
        """
        if self._dispatcher is not None:  # first, so it starts no attempt while we cancel them
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        interrupted = list(self._attempts)
        attempts = list(self._attempts.values())
        for task in attempts:
            task.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)
        self._attempts.clear()
        if interrupted:
            # Their leases would delay the next start's retry by up to timeout_s; end them now.
            try:
                await self._deliveries.release(interrupted, self._clock.time())
            except Exception:
                log.exception("webhook.release_error count=%d", len(interrupted))
        if self._unstored and not await self._store_held():
            await self._deliver_held()
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None
        log.info("webhook.queue_closed")

    async def send(
        self,
        kind: str,
        url: str,
        payload: Any | bytes,
        *,
        signature_header: str = CORAL_SIGNATURE_HEADER,
        max_attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        subject: str | None = None,
    ) -> Delivery:
        """Persist a webhook (JSON via orjson; bytes are sent as they are) and wake the dispatcher.

        The returned delivery is durable; its id is the `webhook-id` of every attempt. `headers`
        are extra, unsigned headers sent with each attempt; `subject` (e.g. "namespace/sessionId")
        lets listings find it.
        """
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        now = self._clock.time()
        new = NewDelivery(
            id=new_message_id(),
            kind=kind,
            url=url,
            body=body,
            max_attempts=max_attempts if max_attempts is not None else self._max_attempts,
            next_attempt_at=now,
            created_at=now,
            signature_header=signature_header,
            headers=dict(headers or {}),
            subject=subject,
        )
        if self._unstored:  # behind those already held, so they are stored (and sent) in order
            return self._hold(new, "earlier deliveries are still waiting for the store")
        try:
            delivery = await self._deliveries.enqueue(new)
        except StoreUnavailable as exc:
            return self._hold(new, str(exc))
        log.info("webhook.enqueued id=%s kind=%s target=%s", delivery.id, kind, _target(url))
        self._wake.set()
        return delivery

    @property
    def unstored(self) -> int:
        """How many accepted deliveries wait in memory for the store to take them."""
        return len(self._unstored)

    def _hold(self, new: NewDelivery, reason: str) -> Delivery:
        self._unstored.append(new)
        log.error(
            "webhook.unstored id=%s kind=%s target=%s held=%d error=%s",
            new.id,
            new.kind,
            _target(new.url),
            len(self._unstored),
            reason,
        )
        self._wake.set()  # the dispatcher tries to store it
        return _as_delivery(new)

    async def _store_held(self) -> bool:
        """Store the held deliveries, oldest first; False while the store still refuses."""
        while self._unstored:
            new = self._unstored[0]
            try:
                await self._deliveries.enqueue(new)
            except StoreUnavailable:
                return False
            except Exception:  # it can never be stored: say so loudly rather than loop on it
                log.exception("webhook.lost id=%s kind=%s target=%s", new.id, new.kind, _target(new.url))
            else:
                log.warning("webhook.stored_late id=%s kind=%s", new.id, new.kind)
            self._unstored.pop(0)
        return True

    async def _deliver_held(self) -> None:
        """At close, with the store still refusing: one attempt each, so none goes unsent unseen."""
        held, self._unstored = self._unstored, []

        async def attempt(new: NewDelivery) -> None:
            try:
                status, error = await self._post(_as_delivery(new))
            except _Refused as exc:
                status, error = None, str(exc)
            except Exception as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if error is None:
                log.warning("webhook.delivered_unstored id=%s kind=%s status=%s", new.id, new.kind, status)
            else:
                log.error(
                    "webhook.lost id=%s kind=%s target=%s error=%s (the store refused it and the "
                    "attempt at shutdown failed)",
                    new.id,
                    new.kind,
                    _target(new.url),
                    error,
                )

        await asyncio.gather(*(attempt(new) for new in held))

    async def retry(self, id: str, extra_attempts: int = 1) -> Delivery:
        """Give a failed delivery `extra_attempts` more attempts, the first one now."""
        delivery = await self._deliveries.retry(id, self._clock.time(), extra_attempts)
        log.info("webhook.retry_requested id=%s extra_attempts=%d", id, extra_attempts)
        self._wake.set()
        return delivery

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()  # before looking, so a wake-up during the look is not lost
            free = self._concurrency - len(self._attempts)
            until: float | None = None  # None: until woken
            try:
                if self._unstored and not await self._store_held():
                    until = self._clock.time() + ERROR_PAUSE_S  # the store still refuses: try again
                if free > 0:
                    now = self._clock.time()
                    claimed = await self._deliveries.claim_due(
                        now, free, lease_until=now + self._timeout_s + LEASE_MARGIN_S
                    )
                    for delivery in claimed:
                        self._start_attempt(delivery)
                    due = await self._deliveries.next_due_at()
                    until = due if until is None or (due is not None and due < until) else until
                # else: a finishing attempt wakes us.
            except StoreUnavailable:  # counted and logged by the store; deliveries wait in it
                until = self._clock.time() + ERROR_PAUSE_S
            except Exception:
                log.exception("webhook.dispatcher_error")
                until = self._clock.time() + ERROR_PAUSE_S
            await wait_for_event(self._clock, self._wake, until)

    def _start_attempt(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._attempt(delivery), name=f"webhook-attempt-{delivery.id}")
        self._attempts[delivery.id] = task

        def finished(_: asyncio.Task[None]) -> None:
            self._attempts.pop(delivery.id, None)
            self._wake.set()

        task.add_done_callback(finished)

    async def _post(self, delivery: Delivery) -> tuple[int | None, str | None]:
        """One POST; (HTTP status or None, error text or None when 2xx). A destination the policy
        refuses raises `_Refused` (no request is made, nothing is learnt of the target)."""
        assert self._http is not None
        problem = self._destinations.url_problem(delivery.url)
        if problem is not None:
            raise _Refused(f"destination not allowed: {problem}")
        headers = {
            **delivery.headers,
            "Content-Type": "application/json",
            **self._signer.sign(
                delivery.body,
                signature_header=delivery.signature_header,
                msg_id=delivery.id,
                timestamp=int(self._clock.time()),
            ),
        }
        try:
            async with self._http.post(
                delivery.url,
                data=delivery.body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirect would resend the signed body elsewhere
            ) as response:
                status = response.status
        except TimeoutError:
            return None, f"timeout after {self._timeout_s:g} s"
        except aiohttp.ClientError as exc:
            reason = denied_reason(exc)
            if reason is not None:
                raise _Refused(f"destination not allowed: {reason}") from None
            return None, f"{type(exc).__name__}: {exc}"
        return status, None if 200 <= status < 300 else f"HTTP {status}"

    async def _attempt(self, delivery: Delivery) -> None:
        started = self._clock.monotonic()
        refused = False
        try:
            status, error = await self._post(delivery)
        except _Refused as exc:  # retrying would be refused again: the delivery fails now
            status, error, refused = None, str(exc), True
            log.error("webhook.refused id=%s kind=%s reason=%s", delivery.id, delivery.kind, exc)
        except Exception as exc:  # a bug or an unusable URL: count it, never loop on it silently
            log.exception("webhook.attempt_error id=%s", delivery.id)
            status, error = None, f"{type(exc).__name__}: {exc}"
        duration_ms = (self._clock.monotonic() - started) * 1000
        ok = error is None
        attempts = delivery.attempts + 1
        next_at: float | None = None
        if not ok and not refused and attempts < delivery.max_attempts:
            next_at = self._clock.time() + retry_delay(
                attempts, base_s=self._base_delay_s, max_s=self._max_delay_s, rng=self._rng
            )
        try:
            updated = await self._deliveries.record_attempt(
                delivery.id,
                ok=ok,
                status=status,
                error=error,
                next_attempt_at=next_at,
                at=self._clock.time(),
                duration_ms=duration_ms,
            )
        except Exception:
            log.exception("webhook.record_error id=%s", delivery.id)
            return
        self._log(updated)
        if self._on_attempt is not None:
            try:
                self._on_attempt(updated)
            except Exception:
                log.exception("webhook.observer_error id=%s", delivery.id)

    def _log(self, d: Delivery) -> None:
        if d.status == "delivered":
            log.info(
                "webhook.delivered id=%s kind=%s attempts=%d status=%s",
                d.id,
                d.kind,
                d.attempts,
                d.last_status,
            )
        elif d.status == "failed":
            log.warning(
                "webhook.failed id=%s kind=%s attempts=%d status=%s error=%s",
                d.id,
                d.kind,
                d.attempts,
                d.last_status,
                d.last_error,
            )
        else:
            log.info(
                "webhook.retry id=%s kind=%s attempts=%d status=%s error=%s next_in=%.2fs",
                d.id,
                d.kind,
                d.attempts,
                d.last_status,
                d.last_error,
                (d.next_attempt_at or 0.0) - self._clock.time(),
            )
