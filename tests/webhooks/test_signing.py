"""The signer: legacy hex header with the current secret, Standard Webhooks entries for every secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from coral_server.webhooks import WebhookSigner, new_message_id

BODY = b'{"hello":"world"}'


def test_legacy_header_is_lowercase_hex_hmac_of_the_exact_body() -> None:
    headers = WebhookSigner([b"k"]).sign(BODY)
    expected = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
    assert headers["X-Coral-Signature"] == expected
    assert expected == expected.lower()


def test_custom_signature_header_name() -> None:
    headers = WebhookSigner([b"k"]).sign(BODY, signature_header="X-App-Sig")
    assert "X-App-Sig" in headers and "X-Coral-Signature" not in headers


def test_standard_webhooks_headers() -> None:
    headers = WebhookSigner([b"k"]).sign(BODY, msg_id="msg_1", timestamp=1700000000)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    digest = hmac.new(b"k", b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_rotation_signs_with_both_secrets_and_legacy_with_the_current_one() -> None:
    headers = WebhookSigner([b"new", b"old"]).sign(BODY, msg_id="msg_1", timestamp=5)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    for entry, secret in zip(entries, [b"new", b"old"], strict=True):
        digest = hmac.new(secret, b"msg_1.5." + BODY, hashlib.sha256).digest()
        assert entry == "v1," + base64.b64encode(digest).decode()
    assert headers["X-Coral-Signature"] == hmac.new(b"new", BODY, hashlib.sha256).hexdigest()


def test_defaults_fresh_id_and_current_time() -> None:
    signer = WebhookSigner([b"k"])
    a, b = signer.sign(BODY), signer.sign(BODY)
    assert a["webhook-id"].startswith("msg_") and a["webhook-id"] != b["webhook-id"]
    assert abs(int(a["webhook-timestamp"]) - time.time()) < 5
    assert new_message_id() != new_message_id()


@pytest.mark.parametrize("secrets", [[], [b"a", b"b", b"c"], [b""]])
def test_rejects_bad_secret_sets(secrets: list[bytes]) -> None:
    with pytest.raises(ValueError):
        WebhookSigner(secrets)


def test_repr_never_shows_a_secret() -> None:
    assert "topsecret" not in repr(WebhookSigner([b"topsecret"]))
