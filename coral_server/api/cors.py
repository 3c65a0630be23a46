"""CORS for any origin, with credentials: the reference's `allowAnyHost` (off unless configured)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from coral_server.api.errors import Handler

METHODS = "GET, POST, DELETE, OPTIONS"
HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE_S = "600"


def _allow(headers: CIMultiDict[str], origin: str) -> None:
    # The origin itself, not "*": browsers refuse "*" on requests that carry credentials.
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Allow-Credentials"] = "true"
    headers.add("Vary", "Origin")


def cors_middleware() -> Middleware:
    """Answer preflights and let any origin read the answers (development: see `allow_any_host`)."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = web.Response(status=204)
            _allow(response.headers, origin)
            response.headers["Access-Control-Allow-Methods"] = METHODS
            response.headers["Access-Control-Allow-Headers"] = HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE_S
            return response
        try:
            answer = await handler(request)
        except web.HTTPException as exc:
            _allow(exc.headers, origin)
            raise
        if not answer.prepared:  # a WebSocket has sent its headers already
            _allow(answer.headers, origin)
        return answer

    return cors
