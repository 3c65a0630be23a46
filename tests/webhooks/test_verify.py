"""The receivers' verifier: what passes, and each way a request is rejected."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coral_server.webhooks import WebhookSigner, WebhookVerificationError
from coral_server.webhooks.verify import verify_coral_signature, verify_webhook

BODY = b'{"event":"session.ended"}'
NOW = 1_800_000_000


def signed(
    secrets: list[bytes] | None = None, *, timestamp: int = NOW, msg_id: str = "msg_a"
) -> dict[str, str]:
    return WebhookSigner(secrets or [b"secret"]).sign(BODY, msg_id=msg_id, timestamp=timestamp)


def rejected(headers: dict[str, str], body: bytes = BODY, secrets: list[bytes | str] | None = None) -> str:
    with pytest.raises(WebhookVerificationError) as err:
        verify_webhook(headers, body, secrets or [b"secret"], now=NOW)
    return err.value.reason


def test_valid_request_passes() -> None:
    verify_webhook(signed(), BODY, [b"secret"], now=NOW)


def test_string_secret_is_its_utf8_bytes() -> None:
    verify_webhook(signed(), BODY, ["secret"], now=NOW)


def test_header_names_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in signed().items()}
    verify_webhook(headers, BODY, [b"secret"], now=NOW)
    verify_coral_signature(headers, BODY, [b"secret"])


def test_tampered_body_rejected() -> None:
    assert rejected(signed(), body=BODY + b" ") == "no matching signature"


def test_wrong_secret_rejected() -> None:
    assert rejected(signed(), secrets=[b"other"]) == "no matching signature"


def test_old_timestamp_rejected() -> None:
    assert rejected(signed(timestamp=NOW - 301)) == "timestamp too old"
    verify_webhook(signed(timestamp=NOW - 300), BODY, [b"secret"], now=NOW)


def test_future_timestamp_rejected() -> None:
    assert rejected(signed(timestamp=NOW + 301)) == "timestamp too new"


def test_malformed_timestamp_rejected() -> None:
    assert rejected({**signed(), "webhook-timestamp": "12ab"}) == "bad timestamp"


def test_changed_timestamp_breaks_the_signature() -> None:
    assert rejected({**signed(), "webhook-timestamp": str(NOW + 1)}) == "no matching signature"


def test_replayed_id_rejected_with_seen_ids() -> None:
    seen: set[str] = set()
    verify_webhook(signed(), BODY, [b"secret"], now=NOW, seen_ids=seen)
    assert seen == {"msg_a"}
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verify_webhook(signed(), BODY, [b"secret"], now=NOW, seen_ids=seen)


def test_failed_verification_does_not_mark_the_id_seen() -> None:
    seen: set[str] = set()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(signed(), BODY + b"x", [b"secret"], now=NOW, seen_ids=seen)
    assert not seen


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_rejected(missing: str) -> None:
    headers = signed()
    del headers[missing]
    assert rejected(headers) == f"missing header {missing}"


def test_unknown_versions_and_garbage_entries_are_skipped() -> None:
    headers = signed()
    headers["webhook-signature"] = "v2,abc v1,!!notbase64 " + headers["webhook-signature"]
    verify_webhook(headers, BODY, [b"secret"], now=NOW)
    assert rejected({**headers, "webhook-signature": "v2,abc v1,!!"}) == "no matching signature"


@pytest.mark.parametrize("known", [b"old", b"new"])
def test_rotation_receiver_knowing_one_side_verifies(known: bytes) -> None:
    headers = signed([b"new", b"old"])
    verify_webhook(headers, BODY, [known], now=NOW)


def test_legacy_signature() -> None:
    headers = signed([b"new", b"old"])
    verify_coral_signature(headers, BODY, [b"new"])
    verify_coral_signature({"x-coral-signature": headers["X-Coral-Signature"].upper()}, BODY, [b"new"])
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_coral_signature(headers, BODY, [b"old"])  # the legacy header uses the current secret only
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_coral_signature(headers, BODY + b"x", [b"new"])
    with pytest.raises(WebhookVerificationError, match="missing header X-App-Sig"):
        verify_coral_signature(headers, BODY, [b"new"], header="X-App-Sig")


def test_no_secrets_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        verify_webhook(signed(), BODY, [], now=NOW)


def test_verifier_imports_without_aiohttp() -> None:
    code = (
        "import sys; import coral_server.webhooks.verify; "
        "assert 'aiohttp' not in sys.modules, sorted(m for m in sys.modules if 'aiohttp' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
