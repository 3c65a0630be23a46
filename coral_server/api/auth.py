"""Bearer-key authentication of the HTTP API."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from coral_server.api.errors import Handler, error_response
from coral_server.redaction import SECRETS

PUBLIC_PATHS = frozenset({"/api/v1/openapi.json", "/health"})


def presented_key(request: web.Request) -> str | None:
    """The bearer key a request carries (the header, or `?token=` on a WebSocket route), unchecked."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and request.path.startswith("/ws/") and "token" in request.query:
        # Browsers cannot set headers on a WebSocket; the key may come as ?token= instead.
        return request.query["token"]
    return token.strip() if scheme.lower() == "bearer" else None


def bearer_middleware(keys: tuple[str, ...]) -> Middleware:
    encoded = [k.encode() for k in keys]
    SECRETS.add(*keys)  # for the life of the process, as the keys are

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not encoded or not request.path.startswith(("/api/", "/ws/")) or request.path in PUBLIC_PATHS:
            return await handler(request)
        given = presented_key(request)
        if given is not None and any(hmac.compare_digest(given.encode(), k) for k in encoded):
            return await handler(request)
        response = error_response(401, "missing or invalid bearer key")
        response.headers["WWW-Authenticate"] = 'Bearer realm="coral"'
        return response

    return check
