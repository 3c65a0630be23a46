"""MCP over HTTP for agents: streamable HTTP and legacy SSE routes, keyed by the agent's secret."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from coral_server.mcp.bridge import Message, call_asgi
from coral_server.mcp.generations import surface_for
from coral_server.mcp.native import NativeTransport
from coral_server.mcp.request_waits import RequestWaits
from coral_server.mcp.server import CALLER_KEY, build_server
from coral_server.mcp.surface import Caller
from coral_server.registry import DESCRIPTION_QUERY, ROUTE_TAILS, McpRoute, route_generation
from coral_server.sessions import Session, SessionAgent, Sessions
from coral_server.tools import CustomToolForwarder

log = logging.getLogger("coral_server.mcp")

SESSION_HEADER = "mcp-session-id"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _user(session: Session, agent: SessionAgent) -> AuthenticatedUser:
    # The SDK binds each MCP session to the principal that opened it and answers 404 to any other:
    # that is what stops one agent from using another agent's MCP session id.
    principal = f"{session.id}/{agent.name}"
    return AuthenticatedUser(AccessToken(token="agent", client_id=principal, scopes=[]))


class McpEndpoint:
    """Owns the SDK session manager (in a task of its own) and the agent-facing routes."""

    def __init__(
        self,
        sessions: Sessions,
        wait_cap_ms: int,
        forwarder: CustomToolForwarder | None = None,
        idle_timeout_s: float = 600.0,
        native: bool = True,
    ) -> None:
        self.sessions = sessions
        self.wait_cap_ms = wait_cap_ms
        self.forwarder = forwarder
        self.server = build_server()
        self.manager = StreamableHTTPSessionManager(
            self.server, json_response=True, session_idle_timeout=idle_timeout_s, max_sessions=None
        )
        self.sse = SseServerTransport("/messages/")
        # Handshake-era JSON connections are served without the SDK's transport (see native.py).
        self.native = NativeTransport(self.server) if native else None
        self._mcp_sessions: dict[str, set[str]] = defaultdict(set)
        self._sse_tasks: dict[str, set[asyncio.Task[Any]]] = defaultdict(set)
        self._runner: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        sessions.on_closed.append(self._on_session_closed)

    # -- lifecycle: the manager's task group must be entered and exited in one task ------------------

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="mcp-session-manager")
        await self._started.wait()

    async def _run(self) -> None:
        async with self.manager.run():
            self._started.set()
            await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    def add_routes(self, app: web.Application) -> None:
        streamable = f"/mcp/v1/{{secret}}/{ROUTE_TAILS['mcp']}"
        for method in ("POST", "GET", "DELETE"):
            app.router.add_route(method, streamable, self.streamable)
        # SSE, with or without the trailing slash: today's and 1.0's route, and the devmode one
        # that CORAL_SSE_URL leads to (see coral_server.registry.editions).
        sse_routes: tuple[McpRoute, ...] = ("sse", "devmode")
        for route in sse_routes:
            stream, message = self._sse_handlers(route)
            path = f"/mcp/v1/{{secret}}/{ROUTE_TAILS[route]}"
            app.router.add_route("GET", path, stream)
            app.router.add_route("GET", f"{path}/", stream)
            app.router.add_route("POST", f"{path}/messages/", message)
            app.router.add_route("POST", f"{path}/messages", message)

    def _sse_handlers(self, route: McpRoute) -> tuple[Handler, Handler]:
        async def stream(request: web.Request) -> web.StreamResponse:
            return await self.sse_stream(request, route)

        async def message(request: web.Request) -> web.StreamResponse:
            return await self.sse_message(request, route)

        return stream, message

    # -- routes -----------------------------------------------------------------------------------

    def _identify(self, request: web.Request) -> tuple[Session, SessionAgent]:
        found = self.sessions.by_secret(request.match_info["secret"])
        if found is None:
            raise web.HTTPUnauthorized(
                text='{"message": "unknown or expired agent secret"}', content_type="application/json"
            )
        return found

    def _caller(self, session: Session, agent: SessionAgent, waits: RequestWaits, route: McpRoute) -> Caller:
        surface = surface_for(route_generation(agent.generation, route))
        return Caller(session, agent, self.wait_cap_ms, waits, surface, self.forwarder)

    def _extra(
        self, session: Session, agent: SessionAgent, waits: RequestWaits, route: McpRoute
    ) -> dict[str, Any]:
        return {CALLER_KEY: self._caller(session, agent, waits, route), "user": _user(session, agent)}

    async def streamable(self, request: web.Request) -> web.StreamResponse:
        session, agent = self._identify(request)
        body = await request.read()
        await session.mark_connected(agent)
        if self.native is not None and self.native.claims(request, body):
            response = await self.native.handle(
                request, body, agent.secret, lambda d: self._caller(session, agent, d, "mcp")
            )
            self._track(request, response, session, agent)
            return response
        waits = RequestWaits()
        call = asyncio.ensure_future(
            call_asgi(
                request,
                self.manager.handle_request,
                body=body,
                extra=self._extra(session, agent, waits, "mcp"),
                on_sent=waits.confirm,
                on_client_gone=waits.abandon,
            )
        )
        try:
            # A client that drops a POST mid-answer must not cancel the SDK's bookkeeping of the
            # session; its pending waits are abandoned instead (their messages stay queued).
            response = await asyncio.shield(call)
        except asyncio.CancelledError:
            waits.abandon()
            raise
        self._track(request, response, session, agent)
        return response

    def _track(
        self, request: web.Request, response: web.StreamResponse, session: Session, agent: SessionAgent
    ) -> None:
        """Remember the agent's MCP sessions: it is connected while it has one (or an SSE stream)."""
        sid = response.headers.get(SESSION_HEADER)
        if sid and not session.closing:
            self._mcp_sessions[agent.secret].add(sid)
        if request.method == "DELETE" and response.status < 300:
            ended = request.headers.get(SESSION_HEADER, "")
            self._mcp_sessions[agent.secret].discard(ended)
            if not self._mcp_sessions[agent.secret] and not self._sse_tasks[agent.secret]:
                session.mark_disconnected(agent)

    async def sse_stream(self, request: web.Request, route: McpRoute = "sse") -> web.StreamResponse:
        session, agent = self._identify(request)
        root = f"/mcp/v1/{agent.secret}/{ROUTE_TAILS[route]}"
        # Other query parameters (1.0's ?agentId=...) are ignored: the secret says who this is.
        session.describe(agent, request.query.get(DESCRIPTION_QUERY, ""))
        task = asyncio.current_task()
        assert task is not None
        self._sse_tasks[agent.secret].add(task)
        await session.mark_connected(agent)
        server = self.server

        async def app(scope: Any, receive: Any, send: Any) -> None:
            async with self.sse.connect_sse(scope, receive, send) as (read, write):
                await server.run(read, write, server.create_initialization_options())

        gone = asyncio.Event()
        extra = self._extra(session, agent, RequestWaits(), route)
        call = asyncio.ensure_future(
            call_asgi(request, app, body=b"", root_path=root, extra=extra, done=gone)
        )
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            # End the SDK's SSE connection as a client disconnect does: cancelled, it would leave
            # streams it opened unclosed. It ends at once; the bound is a safety net.
            gone.set()
            try:
                async with asyncio.timeout(5):
                    await asyncio.wait({call})
            except TimeoutError:
                pass
            finally:
                call.cancel()
            raise
        finally:
            self._sse_tasks[agent.secret].discard(task)
            if not self._sse_tasks[agent.secret] and not self._mcp_sessions[agent.secret]:
                session.mark_disconnected(agent)

    async def sse_message(self, request: web.Request, route: McpRoute = "sse") -> web.StreamResponse:
        session, agent = self._identify(request)
        body = await request.read()
        # Over SSE the answer travels on the stream; its end cancels the SDK's pending handlers.
        extra = self._extra(session, agent, RequestWaits(), route)
        return await call_asgi(request, self.sse.handle_post_message, body=body, extra=extra)

    # -- teardown ---------------------------------------------------------------------------------

    async def _on_session_closed(self, session: Session) -> None:
        for agent in session.agents.values():
            for task in self._sse_tasks.pop(agent.secret, set()):
                task.cancel()
            for sid in self._mcp_sessions.pop(agent.secret, set()):
                if self.native is not None and self.native.owns(sid):
                    self.native.end(sid)
                else:
                    await self._terminate(sid, _user(session, agent))
            if self.native is not None:
                self.native.end_agent(agent.secret)

    async def _terminate(self, sid: str, user: AuthenticatedUser) -> None:
        """End one streamable MCP session as if its client had sent DELETE."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "root_path": "",
            "query_string": b"",
            "headers": [(SESSION_HEADER.encode(), sid.encode())],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "user": user,
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            return None

        try:
            await self.manager.handle_request(scope, receive, send)
        except Exception:
            log.debug("mcp.terminate_failed session=%s", sid, exc_info=True)
