"""Live session events over WebSocket and Server-Sent Events: a snapshot, then every change, resumable.

Both routes serve the session's topic on the one event bus. A new client first gets a `snapshot`
(the session state, as `GET /api/v1/session/{ns}/{id}` returns it, plus the `seq` it includes), then
every later event; a client that resumes (`?after=SEQ` or `Last-Event-ID`) gets exactly the events
it missed, or a fresh snapshot when those are no longer buffered. Streams end after `session_closed`,
after an `overflow` marker (a client too slow to keep up), and at server shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from coral_server.api import views
from coral_server.api.errors import BadRequest
from coral_server.api.keys import EVENTS, RUNS, SESSIONS
from coral_server.api.runs import run_id_of
from coral_server.events import Subscription
from coral_server.runs.model import FINAL
from coral_server.runs.service import topic as run_topic
from coral_server.sessions import Session

log = logging.getLogger("coral_server.api")

KEEPALIVE_S = 15.0
WS_HEARTBEAT_S = 30.0
# How long closing waits for the client's close frame: a client that stopped reading cannot hold
# up the end of its stream (or server shutdown) for long.
WS_CLOSE_TIMEOUT_S = 2.0
# Sent whatever `?types=` asks for: without them a client cannot keep a consistent view.
ALWAYS_SENT = frozenset({"snapshot", "overflow"})

Send = Callable[[Mapping[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class EventStream:
    """What one client gets: an optional snapshot first, then the subscription's events."""

    snapshot: Mapping[str, Any] | None
    subscription: Subscription | None
    types: frozenset[str] | None

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()

    async def pump(self, send: Send, keepalive: Callable[[], Awaitable[None]] | None = None) -> None:
        """Send the snapshot and every event until the stream ends; `keepalive` when idle."""
        if self.snapshot is not None:
            await send(self.snapshot)
        if self.subscription is None:
            return
        while True:
            try:
                event = await self.subscription.next(KEEPALIVE_S if keepalive is not None else None)
            except TimeoutError:
                if keepalive is not None:
                    await keepalive()
                continue
            if event is None:
                return
            if self.types is None or event.type in self.types or event.type in ALWAYS_SENT:
                await send(event.to_json())


def _resume_point(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after")
    if raw is None or raw == "":
        return None
    try:
        after = int(raw)
    except ValueError:
        raise BadRequest("after must be an integer", [("after", "expected an integer")]) from None
    if after < 0:
        raise BadRequest("after must not be negative", [("after", "expected an integer >= 0")])
    return after


def _types(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("types")
    if not raw:
        return None
    return frozenset(t.strip() for t in raw.split(",") if t.strip())


Snapshot = Callable[[int], dict[str, Any]]
Opener = Callable[[web.Request], Awaitable[EventStream]]


def _stream(request: web.Request, topic: str, snapshot: Snapshot, ended: bool, final_seq: int) -> EventStream:
    """Take the snapshot and subscribe in one step (no await here: both must see the same instant)."""
    bus = request.app[EVENTS]
    after = _resume_point(request)
    types = _types(request)
    if after is not None and bus.can_resume(topic, after):
        return EventStream(None, bus.subscribe(topic, after), types)
    if ended and not bus.has_topic(topic):
        # Ended and its topic already forgotten: the final state is all there is.
        return EventStream(snapshot(final_seq), None, types)
    seq = bus.last_seq(topic)
    return EventStream(snapshot(seq), bus.subscribe(topic, seq), types)


async def open_stream(request: web.Request) -> EventStream:
    """A session's stream (404 if the session is unknown)."""
    info = request.match_info
    session: Session = request.app[SESSIONS].get(info["namespace"], info["session"])
    return _stream(
        request,
        session.topic,
        lambda seq: dict(views.session_snapshot(session, seq)),
        session.closed_at is not None,
        session.final_seq,
    )


async def open_run_stream(request: web.Request) -> EventStream:
    """A run's stream: a snapshot of the run (as `GET /api/tasks/runs/{id}` shows it), then its events:
    `run_status`, `run_output` (terminal output), `run_input_needed`, `run_auto_accepted`."""
    run = await request.app[RUNS].get(run_id_of(request))
    bus = request.app[EVENTS]
    topic = run_topic(run.id)
    final = bus.last_seq(topic)
    return _stream(
        request,
        topic,
        lambda seq: dict(views.run_snapshot(run, seq)),
        run.status in FINAL,
        final,
    )


def _sse_frame(payload: Mapping[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        payload["seq"],
        str(payload["type"]).encode(),
        orjson.dumps(payload),
    )


def sse_route(opener: Opener) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_events(request, await opener(request))

    return handler


def ws_route(opener: Opener) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await ws_events(request, await opener(request))

    return handler


async def sse_events(request: web.Request, stream: EventStream) -> web.StreamResponse:
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)

        async def send(payload: Mapping[str, Any]) -> None:
            await response.write(_sse_frame(payload))

        async def keepalive() -> None:
            await response.write(b": keepalive\n\n")

        with contextlib.suppress(ConnectionResetError):
            await stream.pump(send, keepalive)
            await response.write_eof()
        return response
    finally:
        stream.close()


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so its close frame and pongs are handled."""
    async for _ in ws:
        pass


async def ws_events(request: web.Request, stream: EventStream) -> web.StreamResponse:
    try:
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, timeout=WS_CLOSE_TIMEOUT_S)
        await ws.prepare(request)

        async def send(payload: Mapping[str, Any]) -> None:
            await ws.send_str(orjson.dumps(payload).decode())

        pump = asyncio.create_task(stream.pump(send), name="events:ws:pump")
        drain = asyncio.create_task(_drain(ws), name="events:ws:drain")
        try:
            await asyncio.wait((pump, drain), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, drain):
                task.cancel()
            await asyncio.gather(pump, drain, return_exceptions=True)
        failure = None if pump.cancelled() else pump.exception()
        if failure is not None and not isinstance(failure, ConnectionError):
            log.error("events.ws_failed path=%s error=%r", request.path, failure)
        await ws.close()
        return ws
    finally:
        stream.close()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/v1/events/{namespace}/{session}", ws_route(open_stream))
    app.router.add_get("/api/v1/events/{namespace}/{session}", sse_route(open_stream))
    app.router.add_get("/ws/v1/runs/{run_id}/events", ws_route(open_run_stream))
    app.router.add_get("/api/tasks/runs/{run_id}/events", sse_route(open_run_stream))
