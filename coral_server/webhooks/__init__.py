"""Outgoing webhooks: the one signer, the receivers' verifier, secrets, and (in `queue`) durable delivery.

Only stdlib-only modules are re-exported here, so receivers can import the verifier without aiohttp;
import `DeliveryQueue` from `coral_server.webhooks.queue`.
"""

from coral_server.webhooks.secrets import load_or_create_secret
from coral_server.webhooks.signing import WebhookSigner, new_message_id
from coral_server.webhooks.verify import WebhookVerificationError, verify_coral_signature, verify_webhook

__all__ = [
    "WebhookSigner",
    "WebhookVerificationError",
    "load_or_create_secret",
    "new_message_id",
    "verify_coral_signature",
    "verify_webhook",
]
