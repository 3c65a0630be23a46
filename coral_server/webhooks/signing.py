"""The one signer for every outgoing webhook: the legacy hex header plus Standard Webhooks headers."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Sequence

from coral_server.redaction import SECRETS
from coral_server.webhooks.scheme import (
    CORAL_SIGNATURE_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    VERSION,
    coral_signature,
    standard_signature,
)

MAX_ACTIVE_SECRETS = 2


def new_message_id() -> str:
    """A fresh `webhook-id` (`msg_` + 128 random bits); one per delivery, reused on its retries."""
    return "msg_" + secrets.token_hex(16)


class WebhookSigner:
    """Signs request bodies with the active secrets (current first; a second one during rotation).

    A plain class, not a dataclass, so that no repr ever shows the secrets.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not 1 <= len(secrets) <= MAX_ACTIVE_SECRETS:
            raise ValueError(f"a webhook signer needs 1 or {MAX_ACTIVE_SECRETS} secrets, got {len(secrets)}")
        if any(not s for s in secrets):
            raise ValueError("webhook secrets must not be empty")
        self._secrets: tuple[bytes, ...] = tuple(bytes(s) for s in secrets)
        SECRETS.add(*(s.decode("utf-8", "ignore") for s in self._secrets))  # never in the log

    def __repr__(self) -> str:
        return f"WebhookSigner(<{len(self._secrets)} secret(s)>)"

    def sign(
        self,
        body: bytes,
        *,
        signature_header: str = CORAL_SIGNATURE_HEADER,
        msg_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """Headers for one attempt at sending `body`.

        `<signature_header>` carries the reference server's hex signature made with the current
        secret, so existing receivers keep working; `webhook-signature` carries one `v1,<base64>`
        entry per active secret, so a receiver that knows either side of a rotation verifies.
        Pass the delivery's `msg_id` on every retry; the timestamp defaults to now.
        """
        msg_id = msg_id if msg_id is not None else new_message_id()
        timestamp = timestamp if timestamp is not None else int(time.time())
        entries = " ".join(
            f"{VERSION},{base64.b64encode(standard_signature(s, msg_id, timestamp, body)).decode()}"
            for s in self._secrets
        )
        return {
            signature_header: coral_signature(self._secrets[0], body),
            ID_HEADER: msg_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: entries,
        }
