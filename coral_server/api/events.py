"""Live events over WebSocket and Server-Sent Events: sessions, runs, the server-wide feed, agent logs.

Every route serves a topic of the one event bus, each event put on the wire by `api.event_views`.

- Ours, resumable (`/ws/v1/events/{ns}/{id}`, SSE `/api/v1/events/{ns}/{id}`, and a run's): a new
  client first gets a `snapshot` (the state as GET returns it, plus the `seq` it includes), then
  every later event; a client that resumes (`?after=SEQ` or `Last-Event-ID`) gets exactly the events
  it missed, or a fresh snapshot when those are no longer buffered.
- The reference server's, which its console opens (also with the key as a path segment, `{token}`):
  a session's events from now on (`/ws/v1/events/session/{ns}/{id}`), the namespace and session
  lifecycle of the whole server (`/ws/v1/events/lsm`), and agents' output (`/ws/v1/logs`).

Session streams end after `session_closed`; every stream ends after an `overflow` marker (a client
too slow to keep up), at server shutdown, and as soon as its client leaves (its handler returns, so
the access log has its line).
A client that stops reading is dropped: no write may wait longer than the write timeout for its
socket, and a stream whose topic has ended gets that long to finish. Streams are counted per client
(bearer key, or address on a server without keys) against a cap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import hashlib
import logging
import socket
import struct
import termios
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from coral_server.api import event_views, views
from coral_server.api.auth import presented_key
from coral_server.api.errors import BadRequest, Handler, error_response
from coral_server.api.keys import EVENTS, RUNS, SESSIONS, SETTINGS
from coral_server.api.runs import run_id_of
from coral_server.events import LOGS_TOPIC, SERVER_TOPIC, Event, Subscription
from coral_server.runs.model import FINAL
from coral_server.runs.service import topic as run_topic
from coral_server.sessions import Session

log = logging.getLogger("coral_server.api")

KEEPALIVE_S = 15.0
WS_HEARTBEAT_S = 30.0
# How long closing waits for the client's close frame: a client that stopped reading cannot hold
# up the end of its stream (or server shutdown) for long.
WS_CLOSE_TIMEOUT_S = 2.0
# The kernel send buffer of a stream's socket (Linux doubles it): plenty for events at any distance.
STREAM_SEND_BUFFER = 256 * 1024
# How often the end of a stream checks that its client has taken the last bytes.
DELIVERY_POLL_S = 0.02
# Sent whatever `?types=` asks for: without them a client cannot keep a consistent view.
ALWAYS_SENT = frozenset({"snapshot", "overflow"})

# The logs stream replays at most this many lines (the reference's default and cap).
LOGS_LIMIT = 1024
LOGS_MAX_REPLAY = 2048

Send = Callable[[Mapping[str, Any]], Awaitable[None]]
Encode = Callable[[Event], Mapping[str, Any]]
Accept = Callable[[Event], bool]


class ClientStalled(Exception):
    """The client took nothing for the write timeout (or could not finish an ended stream in it)."""


@dataclass(slots=True)
class EventStream:
    """What one client gets: an optional snapshot first, then the events of its subscription that
    `accept` takes (and `types` names, when given), each as `encode` puts it on the wire."""

    # The snapshot, fixed when the stream opened; awaited, it serialises what it holds in steps.
    snapshot: Callable[[], Awaitable[Mapping[str, Any]]] | None
    subscription: Subscription | None
    types: frozenset[str] | None
    encode: Encode = event_views.event
    accept: Accept | None = None
    replay: tuple[Event, ...] = ()

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()

    async def pump(
        self,
        send: Send,
        keepalive: Callable[[], Awaitable[None]] | None = None,
        *,
        write_timeout: float,
    ) -> None:
        """Send the snapshot and every event until the stream ends; `keepalive` when idle.

        Raises ClientStalled when one write waits longer than `write_timeout` for the client (its
        socket is full: it stopped reading), or when the stream has not finished `write_timeout`
        after its topic ended. Without that bound, a client that never reads would hold its stream
        (and its session's events) for ever: the bus's lag check only runs between writes.
        """
        loop = asyncio.get_running_loop()
        finish_by: float | None = None

        async def bounded(write: Awaitable[None]) -> None:
            nonlocal finish_by
            if finish_by is None and self.subscription is not None and self.subscription.topic_closed:
                finish_by = loop.time() + write_timeout
            deadline = loop.time() + write_timeout
            if finish_by is not None:
                deadline = min(deadline, finish_by)
            try:
                async with asyncio.timeout_at(deadline):
                    await write
            except TimeoutError:
                raise ClientStalled from None

        if self.snapshot is not None:
            await bounded(send(await self.snapshot()))
        for old in self.replay:
            await bounded(send(self.encode(old)))
        if self.subscription is None:
            return
        while True:
            try:
                event = await self.subscription.next(KEEPALIVE_S if keepalive is not None else None)
            except TimeoutError:
                if keepalive is not None:
                    await bounded(keepalive())
                continue
            if event is None:
                return
            if event.type in ALWAYS_SENT or (
                (self.types is None or event.type in self.types)
                and (self.accept is None or self.accept(event))
            ):
                await bounded(send(self.encode(event)))


class TooManyStreams(Exception):
    """The client already has as many event streams open as it may."""


class EventStreams:
    """The open event streams: counted per client against a cap, bounded in how long a write waits."""

    def __init__(self, write_timeout_s: float, per_client: int) -> None:
        self.write_timeout_s = write_timeout_s
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(self._open.values())

    @contextlib.contextmanager
    def admit(self, request: web.Request) -> Iterator[str]:
        """Count a stream for its client while the block runs (TooManyStreams beyond the cap)."""
        client = client_of(request)
        if self._open[client] >= self.per_client:
            raise TooManyStreams(client)
        self._open[client] += 1
        try:
            yield client
        finally:
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]


def client_of(request: web.Request) -> str:
    """Who a stream counts against: its bearer key (never kept in clear), else the peer's address."""
    key = presented_key(request) if request.app[SETTINGS].auth_keys else None
    if key is not None:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"address:{request.remote}"


STREAMS = web.AppKey("event_streams", EventStreams)


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


Snapshot = Callable[[int], Callable[[], Awaitable[Mapping[str, Any]]]]
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
        lambda seq: views.session_snapshot_later(session, seq),
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
        lambda seq: _ready(views.run_snapshot(run, seq)),
        run.status in FINAL,
        final,
    )


def _ready(snapshot: Mapping[str, Any]) -> Callable[[], Awaitable[Mapping[str, Any]]]:
    """A snapshot built at once (a run's is small), in the shape of one built in steps."""

    async def complete() -> Mapping[str, Any]:
        return snapshot

    return complete


async def open_reference_stream(request: web.Request) -> EventStream:
    """A session's events from now on, as the reference sends them (404 if the session is unknown);
    agents' output lines only with `?types=agent_log`."""
    info = request.match_info
    session: Session = request.app[SESSIONS].get(info["namespace"], info["session"])
    bus = request.app[EVENTS]
    if session.events is None:  # closed: nothing more will happen
        return EventStream(None, None, None, event_views.reference_event)
    types = _types(request)
    # Agents' output goes to /ws/v1/logs, as the reference sends it; here (where the reference's
    # console warns about each event it does not know) only when asked for by `types`.
    accept = None if types is not None else _not_output
    return EventStream(None, bus.subscribe(session.topic), types, event_views.reference_event, accept)


def _not_output(event: Event) -> bool:
    return event.type != "agent_log"


def _annotation_filters(request: web.Request) -> dict[str, str]:
    """`namespaceAnnotationFilters`: a JSON object of strings, base64url-encoded (400 if it is not)."""
    raw = request.query.get("namespaceAnnotationFilters")
    if not raw:
        return {}
    field = "namespaceAnnotationFilters"
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        problem = (field, "expected base64url of a JSON object")
        raise BadRequest(f"{field} must be base64url JSON", [problem]) from None
    if not isinstance(decoded, dict) or not all(isinstance(v, str) for v in decoded.values()):
        raise BadRequest(f"{field} must map names to strings", [(field, "expected a JSON object of strings")])
    return decoded


async def open_lsm_stream(request: web.Request) -> EventStream:
    """The server's namespace and session lifecycle from now on, as the reference sends it."""
    only = request.query.get("namespaceFilter") or None
    wanted = _annotation_filters(request)

    def accept(event: Event) -> bool:
        if event.type not in event_views.LSM_TYPES:
            return False
        data = event.data
        ns = data["namespace"] if event.type.startswith("namespace_") else data["session"].namespace
        if only is not None and ns.name != only:
            return False
        return all(ns.annotations.get(k) == v for k, v in wanted.items())

    bus = request.app[EVENTS]
    return EventStream(None, bus.subscribe(SERVER_TOPIC), None, event_views.reference_event, accept)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return LOGS_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer", [("limit", "expected an integer")]) from None
    return max(0, min(limit, LOGS_MAX_REPLAY))


async def open_logs_stream(request: web.Request) -> EventStream:
    """Agents' output: the last `limit` matching lines still buffered, then every new one.

    `namespaceFilter`, `sessionFilter` and `agentFilter` narrow it down. Lines are redacted when
    they are read from the agent (secret option values, keys), before anything keeps them.
    """
    query = request.query
    filters = {
        "namespace": query.get("namespaceFilter") or None,
        "session_id": query.get("sessionFilter") or None,
        "name": query.get("agentFilter") or None,
    }
    limit = _limit(request)

    def accept(event: Event) -> bool:
        return all(want is None or event.data.get(key) == want for key, want in filters.items())

    bus = request.app[EVENTS]
    # Subscribe from the oldest buffered line, take what is there now, keep the last `limit`.
    subscription = bus.subscribe(LOGS_TOPIC, bus.first_seq(LOGS_TOPIC) - 1)
    end = bus.last_seq(LOGS_TOPIC)
    replay: list[Event] = []
    while subscription.last_seq < end:
        event = subscription.poll()
        if event is None or event.type == "overflow":
            break
        if accept(event):
            replay.append(event)
    tail = tuple(replay[-limit:]) if limit else ()
    return EventStream(None, subscription, None, event_views.log_event, accept, tail)


def _sse_frame(payload: Mapping[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        payload["seq"],
        str(payload["type"]).encode(),
        orjson.dumps(payload),
    )


Serve = Callable[[web.Request, EventStream, float], Awaitable[web.StreamResponse]]


def _route(opener: Opener, serve: Serve) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        streams = request.app[STREAMS]
        try:
            with streams.admit(request):
                stream = await opener(request)
                try:
                    return await serve(request, stream, streams.write_timeout_s)
                finally:
                    stream.close()
        except TooManyStreams:
            response = error_response(
                429,
                f"too many event streams open for this client (at most {streams.per_client}; "
                "setting max_streams_per_client)",
            )
            response.headers["Retry-After"] = "5"
            return response

    return handler


def sse_route(opener: Opener) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    return _route(opener, sse_events)


def ws_route(opener: Opener) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    return _route(opener, ws_events)


def _bound_buffer(request: web.Request) -> None:
    """Fix the socket's kernel send buffer (instead of letting it grow to megabytes): a client that
    stops reading pins at most this plus the transport's 64 KiB, and its full socket shows soon."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)


async def _delivered(request: web.Request) -> None:
    """Return once the client has taken everything sent (the kernel's send queue is empty).

    Closing a socket whose client reads nothing would leave that data, and the connection, in the
    kernel (FIN-WAIT, for minutes); the caller bounds this wait and resets the connection instead.
    The kernel gives no wake-up for it, so its queue is polled.
    """
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return
    while True:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return
        if unsent == 0:
            return
        await asyncio.sleep(DELIVERY_POLL_S)


def _drop(request: web.Request) -> None:
    """Cut a stalled client's connection at once, with a reset: a graceful close would keep what sits
    unsent in the kernel (megabytes) until the client reads it, i.e. for ever."""
    log.info("events.client_dropped path=%s client=%s reason=stalled", request.path, client_of(request))
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@contextlib.contextmanager
def _until_client_leaves(request: web.Request) -> Iterator[None]:
    """Serve a stream until it ends or its client leaves: either way, its handler then returns.

    The server cancels a request's handler when its connection closes (`handler_cancellation`):
    that is how a stream learns at once, even idle, that its client left. But aiohttp writes a
    request's access line only when its handler returns, so a cancelled stream would never be
    logged: here that cancellation ends the stream as its end does. A cancellation while the
    connection is still open (server shutdown) goes on as it came.
    """
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if request.transport is not None or task is None or task.cancelling() > 1:
            raise
        task.uncancel()


async def sse_events(request: web.Request, stream: EventStream, write_timeout: float) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    _bound_buffer(request)

    async def send(payload: Mapping[str, Any]) -> None:
        await response.write(_sse_frame(payload))

    async def keepalive() -> None:
        await response.write(b": keepalive\n\n")

    with _until_client_leaves(request):
        try:
            with contextlib.suppress(ConnectionResetError):
                await stream.pump(send, keepalive, write_timeout=write_timeout)
                async with asyncio.timeout(write_timeout):
                    await response.write_eof()
                    await _delivered(request)
        except (ClientStalled, TimeoutError):
            _drop(request)
    return response


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so its close frame and pongs are handled."""
    async for _ in ws:
        pass


async def ws_events(request: web.Request, stream: EventStream, write_timeout: float) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, timeout=WS_CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    _bound_buffer(request)
    with _until_client_leaves(request):
        await _serve_ws(request, ws, stream, write_timeout)
    return ws


async def _serve_ws(
    request: web.Request, ws: web.WebSocketResponse, stream: EventStream, write_timeout: float
) -> None:
    async def send(payload: Mapping[str, Any]) -> None:
        await ws.send_str(orjson.dumps(payload).decode())

    pump = asyncio.create_task(stream.pump(send, write_timeout=write_timeout), name="events:ws:pump")
    drain = asyncio.create_task(_drain(ws), name="events:ws:drain")
    try:
        await asyncio.wait((pump, drain), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, drain):
            task.cancel()
        await asyncio.gather(pump, drain, return_exceptions=True)
    failure = None if pump.cancelled() else pump.exception()
    if isinstance(failure, ClientStalled):
        _drop(request)
        return
    if failure is not None and not isinstance(failure, ConnectionError):
        log.error("events.ws_failed path=%s error=%r", request.path, failure)
    try:
        # The close frame waits for room in the socket as any write does.
        async with asyncio.timeout(write_timeout):
            await ws.close()
            await _delivered(request)
    except TimeoutError:
        _drop(request)


@web.middleware
async def path_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The reference's `/ws/v1/.../{token}/...` routes carry the API key in the path: check it as
    the bearer key it is (by the same authentication as every other route)."""
    token = request.match_info.get("token")
    if token is None or "Authorization" in request.headers or not request.path.startswith("/ws/"):
        return await handler(request)
    return await handler(request.clone(headers={**request.headers, "Authorization": f"Bearer {token}"}))


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[STREAMS] = EventStreams(settings.stream_write_timeout_s, settings.max_streams_per_client)
    # Agents' output is kept for the logs stream's replay only: no more than it can replay.
    app[EVENTS].bound(LOGS_TOPIC, LOGS_MAX_REPLAY)
    # The reference's routes first: `{token}/lsm` would otherwise be read as `{namespace}/{session}`.
    reference_session = ws_route(open_reference_stream)
    app.router.add_get("/ws/v1/events/session/{namespace}/{session}", reference_session)
    app.router.add_get("/ws/v1/events/{token}/session/{namespace}/{session}", reference_session)
    app.router.add_get("/ws/v1/events/lsm", ws_route(open_lsm_stream))
    app.router.add_get("/ws/v1/events/{token}/lsm", ws_route(open_lsm_stream))
    app.router.add_get("/ws/v1/logs", ws_route(open_logs_stream))
    app.router.add_get("/ws/v1/logs/{token}", ws_route(open_logs_stream))
    app.router.add_get("/ws/v1/events/{namespace}/{session}", ws_route(open_stream))
    app.router.add_get("/api/v1/events/{namespace}/{session}", sse_route(open_stream))
    app.router.add_get("/ws/v1/runs/{run_id}/events", ws_route(open_run_stream))
    app.router.add_get("/api/tasks/runs/{run_id}/events", sse_route(open_run_stream))
