"""What webhook receivers import to check a request came from us: stdlib only, no aiohttp needed."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping, MutableSet, Sequence

from coral_server.webhooks.scheme import (
    CORAL_SIGNATURE_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    VERSION,
    coral_signature,
    standard_signature,
)


class WebhookVerificationError(Exception):
    """The request must be rejected; `reason` says why (safe to log, never contains a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret: bytes | str) -> bytes:
    # A configured string secret is used as its UTF-8 bytes, exactly as the server signs with it.
    return secret.encode() if isinstance(secret, str) else secret


def _keys(secrets: Sequence[bytes | str]) -> list[bytes]:
    keys = [_key(s) for s in secrets]
    if not keys or any(not k for k in keys):
        raise ValueError("verification needs at least one non-empty secret")
    return keys


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def _parse_timestamp(raw: str) -> int:
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        raise WebhookVerificationError("bad timestamp")
    return int(text)


def _signatures(raw: str) -> list[bytes]:
    found = []
    for entry in raw.split():
        version, sep, encoded = entry.partition(",")
        if version != VERSION or not sep:
            continue  # other versions are for other verifiers
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[bytes | str],
    *,
    tolerance_s: int = 300,
    now: int | None = None,
    seen_ids: MutableSet[str] | None = None,
) -> None:
    """Check the Standard Webhooks headers; raise `WebhookVerificationError` if the request is not ours.

    Rejects a missing header, a malformed timestamp or one more than `tolerance_s` away from `now`,
    a body no `v1` signature matches under any of `secrets`, and (with `seen_ids`) a replayed
    `webhook-id`; a verified id is added to `seen_ids`. Signatures are compared in constant time.
    Retries of one delivery reuse its id: if you then fail to process it (and answer non-2xx so
    it is retried), discard the id from `seen_ids` or the retry is rejected as a replay.
    """
    keys = _keys(secrets)
    msg_id = _header(headers, ID_HEADER)
    timestamp = _parse_timestamp(_header(headers, TIMESTAMP_HEADER))
    offered = _signatures(_header(headers, SIGNATURE_HEADER))
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("timestamp too new")
    matched = False
    for key in keys:
        expected = standard_signature(key, msg_id, timestamp, body)
        for candidate in offered:
            # No early exit: every pair is compared, each in constant time.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no matching signature")
    if seen_ids is not None:
        if msg_id in seen_ids:
            raise WebhookVerificationError("replayed webhook-id")
        seen_ids.add(msg_id)


def verify_coral_signature(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[bytes | str],
    header: str = CORAL_SIGNATURE_HEADER,
) -> None:
    """Check the reference server's lowercase hex HMAC-SHA256 header (no timestamp, no replay guard)."""
    keys = _keys(secrets)
    offered = _header(headers, header).strip().lower().encode("ascii", "replace")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(coral_signature(key, body).encode(), offered)
    if not matched:
        raise WebhookVerificationError("no matching signature")
