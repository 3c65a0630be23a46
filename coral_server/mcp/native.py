"""Streamable HTTP for the handshake era, served natively: JSON answers without the SDK's transport.

Most agents speak the handshake era (`initialize`, then requests carrying `Mcp-Session-Id`) and
never need more than JSON answers from us: we send no server-initiated requests. Serving those
connections here skips the ASGI bridge, the SDK's session transport, its anyio streams and its
dispatcher (about a third of the server's CPU per call). The tools, resources and their results
are the very functions the SDK server's handlers call (`coral_server.mcp.surface`), so both paths
answer alike; anything else (the modern era, batches, connections the SDK opened) is left to the
SDK, and `--mcp-transport sdk` turns this path off.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp.types as types
import orjson
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp_types.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

from coral_server.mcp.request_waits import RequestWaits
from coral_server.mcp.surface import Caller, call_tool, list_resources, list_tools, read_resource

log = logging.getLogger("coral_server.mcp")

SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"

CallerFactory = Callable[[RequestWaits], Caller]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass(slots=True)
class Connection:
    """One MCP session opened by `initialize`; it belongs to the agent whose secret opened it."""

    id: str
    secret: str
    version: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def _dump(model: Any) -> dict[str, Any]:
    # Only what was set: the models' defaults for later revisions (resultType, ttlMs, cacheScope)
    # are not part of the handshake era's wire, as the SDK's per-revision serializer also finds.
    dumped: dict[str, Any] = model.model_dump(
        by_alias=True, mode="json", exclude_none=True, exclude_unset=True
    )
    return dumped


def _json(payload: Any, status: int = 200, sid: str | None = None) -> web.Response:
    headers = {SESSION_HEADER: sid} if sid else None
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def _error(id: Any, code: int, message: str, data: Any = None, status: int = 200) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _json({"jsonrpc": "2.0", "id": id, "error": error}, status)


class NativeTransport:
    """The handshake-era connections served here, and the JSON-RPC methods they may call."""

    def __init__(self, server: Server[Any]) -> None:
        options = server.create_initialization_options()
        self._capabilities = options.capabilities
        self._server_info = types.Implementation(name=options.server_name, version=options.server_version)
        self._instructions = options.instructions
        self._connections: dict[str, Connection] = {}
        self._by_secret: dict[str, set[str]] = defaultdict(set)

    # -- which requests are ours ------------------------------------------------------------------

    def owns(self, sid: str) -> bool:
        return sid in self._connections

    def claims(self, request: web.Request, body: bytes) -> bool:
        """Whether this request is for us: a handshake-era `initialize`, or a connection we opened."""
        sid = request.headers.get(SESSION_HEADER)
        if sid is not None:
            return sid in self._connections
        if request.method != "POST" or b"initialize" not in body:
            return False
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False  # the modern era: the SDK's
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(message, dict) and message.get("method") == "initialize" and "id" in message

    # -- connections ------------------------------------------------------------------------------

    def end(self, sid: str) -> None:
        """Forget one connection (its client's DELETE, or its agent's session closing)."""
        connection = self._connections.pop(sid, None)
        if connection is not None:
            self._by_secret[connection.secret].discard(sid)
            if not self._by_secret[connection.secret]:
                del self._by_secret[connection.secret]
            connection.ended.set()

    def end_agent(self, secret: str) -> list[str]:
        """End every connection of one agent; returns their ids."""
        ended = list(self._by_secret.get(secret, ()))
        for sid in ended:
            self.end(sid)
        return ended

    def count(self) -> int:
        return len(self._connections)

    # -- HTTP ---------------------------------------------------------------------------------------

    async def handle(
        self, request: web.Request, body: bytes, secret: str, make_caller: CallerFactory
    ) -> web.StreamResponse:
        sid = request.headers.get(SESSION_HEADER)
        connection = self._connections.get(sid) if sid is not None else None
        if sid is not None and (connection is None or connection.secret != secret):
            # Another agent's session id (or an ended one): the same answer as for an unknown one.
            return _error(None, INVALID_REQUEST, "Session not found", status=404)
        if request.method == "DELETE":
            assert sid is not None
            self.end(sid)
            return web.Response(status=200)
        if request.method == "GET":
            assert connection is not None
            return await self._stream(request, connection)
        if not _is_json(request.headers.get("Content-Type", "")):
            return _error(
                None,
                INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
                status=415,
            )
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(None, PARSE_ERROR, f"Parse error: {exc}", status=400)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(
                None, INVALID_REQUEST, "Invalid Request: expected one JSON-RPC 2.0 message", status=400
            )
        if connection is None:
            return self._initialize(message, secret)
        header = request.headers.get(VERSION_HEADER)
        if header is not None and header not in HANDSHAKE_PROTOCOL_VERSIONS:
            return _error(
                None, INVALID_REQUEST, f"Bad Request: Unsupported protocol version: {header}", status=400
            )
        if "method" not in message or "id" not in message:
            return web.Response(status=202, headers={SESSION_HEADER: connection.id})  # notification / reply
        return await self._request(request, connection, message, make_caller)

    def _initialize(self, message: Mapping[str, Any], secret: str) -> web.Response:
        params = message.get("params")
        requested = params.get("protocolVersion") if isinstance(params, dict) else None
        version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        sid = secrets.token_hex(16)
        self._connections[sid] = Connection(sid, secret, version)
        self._by_secret[secret].add(sid)
        result = types.InitializeResult(
            protocol_version=version,
            capabilities=self._capabilities,
            server_info=self._server_info,
            instructions=self._instructions,
        )
        dumped = _dump(result)
        if not dumped["capabilities"].get("extensions"):
            dumped["capabilities"].pop("extensions", None)  # a later revision's field
        return _json({"jsonrpc": "2.0", "id": message["id"], "result": dumped}, sid=sid)

    async def _request(
        self,
        request: web.Request,
        connection: Connection,
        message: Mapping[str, Any],
        make_caller: CallerFactory,
    ) -> web.StreamResponse:
        id, method, params = message["id"], message["method"], message.get("params") or {}
        waits = RequestWaits()
        try:
            try:
                if not isinstance(method, str) or not isinstance(params, dict):
                    raise RpcError(INVALID_REQUEST, "Invalid Request")
                result = await self._dispatch(make_caller(waits), method, params)
                reply = _json({"jsonrpc": "2.0", "id": id, "result": result}, sid=connection.id)
            except RpcError as exc:
                reply = _error(id, exc.code, exc.message, exc.data)
            await reply.prepare(request)
            await reply.write_eof()
        except (ConnectionResetError, ConnectionError):
            waits.abandon()  # the client is gone: what a wait took goes back to the mailbox
            return web.Response(status=499)
        except asyncio.CancelledError:
            waits.abandon()
            raise
        waits.confirm()
        return reply

    async def _dispatch(self, caller: Caller, method: str, params: dict[str, Any]) -> Any:
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
                raise RpcError(
                    INVALID_PARAMS, "Invalid request parameters", "tools/call needs name, arguments"
                )
            return _dump(await call_tool(caller, name, arguments))
        if method == "tools/list":
            return {"tools": [_dump(t) for t in list_tools(caller)]}
        if method == "resources/read":
            uri = params.get("uri")
            if not isinstance(uri, str):
                raise RpcError(INVALID_PARAMS, "Invalid request parameters", "resources/read needs uri")
            try:
                return _dump(read_resource(caller, uri))
            except LookupError as exc:
                # The SDK answers a handler's exception with code 0 and its message: so do we.
                raise RpcError(0, str(exc).strip("'\"")) from None
        if method == "resources/list":
            return {"resources": [_dump(r) for r in list_resources(caller)]}
        if method == "ping":
            return {}
        if method == "initialize":
            raise RpcError(INVALID_REQUEST, "Invalid Request: the session is already initialized")
        raise RpcError(METHOD_NOT_FOUND, "Method not found", method)

    async def _stream(self, request: web.Request, connection: Connection) -> web.StreamResponse:
        """The GET stream for server-initiated messages: we send none, so it just stays open."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                SESSION_HEADER: connection.id,
            }
        )
        await response.prepare(request)
        await connection.ended.wait()  # the client leaving cancels this handler
        return response


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"
