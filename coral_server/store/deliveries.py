"""Webhook deliveries in the store: their records, errors and the `DeliveryStore` interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "failed")


class DeliveryNotFound(LookupError):
    """No webhook delivery has this id."""


class DeliveryFinished(Exception):
    """The delivery is already delivered or failed; it takes no more attempts."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A webhook to persist before its first attempt; `headers` are extra, unsigned headers."""

    id: str
    kind: str
    url: str
    body: bytes
    max_attempts: int
    next_attempt_at: float
    created_at: float
    signature_header: str = "X-Coral-Signature"
    headers: dict[str, str] = field(default_factory=dict)
    subject: str | None = None  # what it is about, e.g. "namespace/sessionId" (a listing filter)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A persisted webhook delivery and the outcome of its attempts so far."""

    id: str
    kind: str
    url: str
    headers: dict[str, str]
    body: bytes
    signature_header: str
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    next_attempt_at: float | None
    last_error: str | None
    last_status: int | None
    created_at: float
    delivered_at: float | None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One recorded attempt of a delivery: HTTP status (None if no answer) and error (None if 2xx)."""

    number: int
    at: float
    status: int | None
    error: str | None
    duration_ms: float | None


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries a listing returns (every field optional), newest first."""

    status: DeliveryStatus | None = None
    kind: str | None = None
    subject: str | None = None
    subject_prefix: str | None = None  # e.g. "namespace/": every session of a namespace
    limit: int = 100


class DeliveryStore(Protocol):
    """The durable delivery queue's records (`store.deliveries`); each method is one atomic unit of work."""

    async def enqueue(self, new: NewDelivery) -> Delivery:
        """Persist a pending delivery (durable when this returns)."""
        ...

    async def due(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at `now`, earliest first (read only)."""
        ...

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Delivery]:
        """Like `due`, but atomically pushes their next attempt to `lease_until`.

        The claimer then owns the attempt; if it dies without recording it, the delivery becomes
        due again when the lease ends.
        """
        ...

    async def release(self, ids: Sequence[str], at: float) -> None:
        """End the leases of claimed deliveries whose attempts were abandoned: due again at `at`."""
        ...

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
        """Count one attempt (and keep it in the delivery's history): ok → delivered; not ok →
        pending until `next_attempt_at`, or failed when that is None or the attempts are used up.
        `at` defaults to the store's clock."""
        ...

    async def listing(self, where: DeliveryFilter | None = None) -> list[Delivery]:
        """Deliveries matching `where`, newest first."""
        ...

    async def attempts(self, id: str) -> list[DeliveryAttempt]:
        """The recorded attempts of one delivery, oldest first (raises `DeliveryNotFound`)."""
        ...

    async def retry(self, id: str, at: float, extra_attempts: int) -> Delivery:
        """Make a failed delivery pending again, due at `at`, with `extra_attempts` more attempts
        (raises `DeliveryNotFound`; `DeliveryFinished` if it was delivered or is still pending)."""
        ...

    async def get(self, id: str) -> Delivery | None:
        """One delivery, or None."""
        ...

    async def next_due_at(self) -> float | None:
        """When the earliest pending delivery is due, or None if nothing is pending."""
        ...
