"""Outgoing webhooks of one server: the signer and the durable delivery queue over the one store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coral_server.clock import Clock
from coral_server.store import Delivery, DeliveryAttempt, DeliveryFilter, DeliveryNotFound
from coral_server.store.database import Database
from coral_server.webhooks.destinations import DestinationPolicy
from coral_server.webhooks.queue import DeliveryQueue
from coral_server.webhooks.scheme import CORAL_SIGNATURE_HEADER
from coral_server.webhooks.signing import WebhookSigner


class Webhooks:
    """Built with the app, started once its store is open; everything else sends through `send`."""

    def __init__(
        self,
        database: Database,
        signer: WebhookSigner,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 8,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        clock: Clock | None = None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self.signer = signer
        self._database = database
        self._options: dict[str, Any] = {
            "timeout_s": timeout_s,
            "max_attempts": max_attempts,
            "base_delay_s": base_delay_s,
            "max_delay_s": max_delay_s,
            "clock": clock,
            "destinations": destinations,
            "on_attempt": self._attempted,
        }
        self._queue: DeliveryQueue | None = None
        # Told of every recorded attempt (the delivery as it is after it), e.g. a pipeline's webhook
        # step waiting for its delivery's outcome.
        self.attempted: list[Callable[[Delivery], None]] = []

    def _attempted(self, delivery: Delivery) -> None:
        for listener in list(self.attempted):
            listener(delivery)

    async def start(self) -> None:
        """Start delivering, beginning with whatever an earlier run left pending."""
        if self._queue is not None:
            return
        queue = DeliveryQueue(self._database.store.deliveries, self.signer, **self._options)
        await queue.start()
        self._queue = queue

    async def close(self) -> None:
        """Stop delivering; undelivered webhooks stay in the store for the next start."""
        if self._queue is not None:
            queue, self._queue = self._queue, None
            await queue.close()

    @property
    def unstored(self) -> int:
        """Accepted webhooks held in memory because the store refused them (see `DeliveryQueue`)."""
        return 0 if self._queue is None else self._queue.unstored

    @property
    def queue(self) -> DeliveryQueue:
        if self._queue is None:
            raise RuntimeError("webhooks are not started")
        return self._queue

    async def send(
        self,
        kind: str,
        url: str,
        payload: Any,
        *,
        subject: str | None = None,
        signature_header: str = CORAL_SIGNATURE_HEADER,
        max_attempts: int | None = None,
    ) -> Delivery:
        """Persist a signed webhook; it is delivered (and retried) in the background."""
        return await self.queue.send(
            kind, url, payload, subject=subject, signature_header=signature_header, max_attempts=max_attempts
        )

    async def find(self, where: DeliveryFilter) -> list[Delivery]:
        return await self._database.store.deliveries.listing(where)

    async def get(self, id: str) -> tuple[Delivery, list[DeliveryAttempt]]:
        """One delivery and its attempts (raises `DeliveryNotFound`)."""
        deliveries = self._database.store.deliveries
        delivery = await deliveries.get(id)
        if delivery is None:
            raise DeliveryNotFound(id)
        return delivery, await deliveries.attempts(id)

    async def retry(self, id: str, extra_attempts: int) -> Delivery:
        return await self.queue.retry(id, extra_attempts)
