"""A small ASGI bridge: serve the MCP SDK's ASGI transports from aiohttp request handlers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def build_scope(request: web.Request, body: bytes, root_path: str, extra: dict[str, Any]) -> Scope:
    del body  # delivered through receive()
    host, port = "127.0.0.1", 0
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode(),
        "root_path": root_path,
        "query_string": request.query_string.encode(),
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": (request.remote or "", 0),
        "server": (host, port),
    }
    scope.update(extra)
    return scope


async def call_asgi(
    request: web.Request,
    app: ASGIApp,
    *,
    body: bytes,
    root_path: str = "",
    extra: dict[str, Any] | None = None,
    on_sent: Callable[[], None] | None = None,
    on_client_gone: Callable[[], None] | None = None,
    done: asyncio.Event | None = None,
) -> web.StreamResponse:
    """Run one ASGI request to completion and stream its answer through aiohttp.

    `receive()` blocks after the body until the answer is complete or the client is gone: ASGI
    servers behave that way and the SDK's SSE code loops on it (a spinning receive freezes the loop).
    Setting `done` (if given) tells the app its client is gone, so it can end as it would then.
    """
    scope = build_scope(request, body, root_path, extra or {})
    done = done if done is not None else asyncio.Event()
    body_sent = False
    response: web.StreamResponse | None = None

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if done.is_set():
            return
        try:
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for key, value in message.get("headers", ()):
                    response.headers.add(key.decode("latin-1"), value.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body" and response is not None:
                chunk = message.get("body", b"")
                if chunk:
                    await response.write(chunk)
                if not message.get("more_body", False):
                    await response.write_eof()
                    done.set()
                    if on_sent is not None:
                        on_sent()
        except (ConnectionResetError, ConnectionError):
            done.set()  # the client went away: drop the rest, as ASGI servers do
            if on_client_gone is not None:
                on_client_gone()

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    if response is None:
        return web.Response(status=500, text="MCP transport produced no response")
    return response
