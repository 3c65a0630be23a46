"""The two HMAC-SHA256 signature schemes, computed in one place for the signer and the verifier.

Stdlib only: receivers import this through `verify`.
"""

from __future__ import annotations

import hashlib
import hmac

CORAL_SIGNATURE_HEADER = "X-Coral-Signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
VERSION = "v1"


def coral_signature(secret: bytes, body: bytes) -> str:
    """The reference server's scheme: lowercase hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def standard_signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    """Standard Webhooks v1: raw HMAC-SHA256 of `"{id}.{timestamp}." + body` (base64 on the wire)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(secret, signed, hashlib.sha256).digest()
