"""HTTP connections: how many may be open, and how long a client may take to send a request.

aiohttp bounds the size of a request line, of its headers and of its body, and closes connections
idle between requests (its keep-alive timeout), but not the time a client takes to send them: a
client sending half its headers, or its body a byte a second, holds its connection (and a file
descriptor) for ever. Here every connection is counted against a cap (beyond it: a 503, closed),
a request's headers must be complete within the header timeout of its first byte (or of the
connection's start), and its body within the body timeout of the handler's start: else a 408, and
the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections.abc import Callable

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from coral_server.api.errors import Handler, error_response

log = logging.getLogger("coral_server.api")

# How long a connection may sit idle between two requests (aiohttp's default is an hour). Longer than
# the clients' own pool timeouts (aiohttp 15 s, httpx 5 s), so they close first and never send a
# request on a connection the server is closing.
KEEPALIVE_S = 75.0


def _raw_answer(status: int, reason: str, message: str, headers: str = "") -> bytes:
    """An answer written straight to the socket (before aiohttp has a request to answer)."""
    body = orjson.dumps({"error": reason, "message": message, "errors": []})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


REFUSED = _raw_answer(
    503, "Service Unavailable", "too many open connections (max_connections)", "Retry-After: 1\r\n"
)
HEADERS_TIMED_OUT = _raw_answer(408, "Request Timeout", "the request headers did not arrive in time")


class BodyTimeout(TimeoutError):
    """The request's body did not arrive in time (a TimeoutError, so aiohttp's discarding of the
    rest of the body after the answer ends quietly)."""


class _Guard(asyncio.Protocol):
    """One connection: aiohttp's own protocol inside, plus the header deadline and the count."""

    def __init__(self, connections: Connections, make: Callable[[], RequestHandler]) -> None:
        self._connections = connections
        self._make = make
        self._inner: RequestHandler | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # a request's handler runs
        self._headed = False  # the headers of the next request are all in (its handler starts soon)
        self._tail = b""  # the last bytes seen, for a header end split across two reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._connections._admit(self):
            transport.write(REFUSED)
            transport.close()
            return
        self._inner = self._make()
        self._connections._by_handler[self._inner] = self
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: what it sends is dropped
        if not self._busy and not self._headed:
            if self._deadline is None:
                self._arm()  # the first byte of a request: its headers are due
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._headed = True
                self._disarm()
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            self._inner.eof_received()
        return None  # the transport closes itself (aiohttp's protocol keeps nothing half-open)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._inner is None:
            return
        self._connections._release(self, self._inner)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_ended(self) -> None:
        self._busy = self._headed = False
        self._tail = b""

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._connections.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        inner = self._inner
        if inner is None or self._busy or self._headed or inner.transport is None:
            return
        log.debug("http.header_timeout peer=%s", inner.transport.get_extra_info("peername"))
        inner.transport.write(HEADERS_TIMED_OUT)
        inner.force_close()


class Connections:
    """Every open HTTP connection of one server: the cap, the header and body deadlines."""

    def __init__(self, max_connections: int, header_timeout_s: float, body_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self._by_handler: dict[RequestHandler, _Guard] = {}
        self._full = False

    def __len__(self) -> int:
        return len(self._by_handler)

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """What the listening socket makes for each connection: aiohttp's protocol, guarded."""
        return lambda: _Guard(self, server)

    def _admit(self, guard: _Guard) -> bool:
        if len(self._by_handler) < self.max_connections:
            return True
        if not self._full:
            self._full = True
            log.warning("http.connections_full max_connections=%s", self.max_connections)
        return False

    def _release(self, guard: _Guard, handler: RequestHandler) -> None:
        self._by_handler.pop(handler, None)
        if self._full and len(self._by_handler) < self.max_connections:
            self._full = False
            log.info("http.connections_available max_connections=%s", self.max_connections)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Ends the header deadline; a body that has not arrived within the body timeout fails the
        handler's read with BodyTimeout, answered 408 (and the connection closed)."""
        guard = self._by_handler.get(request.protocol)  # type: ignore[call-overload]
        if guard is not None:
            guard.request_started()
        expired = False

        def expire() -> None:
            nonlocal expired
            if not request.content.is_eof():
                expired = True
                request.content.set_exception(BodyTimeout())

        timer = None
        if request.body_exists and not request.content.is_eof():
            timer = asyncio.get_running_loop().call_later(self.body_timeout_s, expire)
        try:
            return await handler(request)
        except BodyTimeout:
            if not expired:
                raise
            log.info("http.body_timeout method=%s path=%s", request.method, request.path)
            response = error_response(
                408, f"the request body did not arrive within {self.body_timeout_s:g} s (body_timeout_s)"
            )
            response.force_close()
            return response
        finally:
            if timer is not None:
                timer.cancel()
            if guard is not None:
                guard.request_ended()


def warn_if_above_fd_limit(max_connections: int) -> None:
    """Say so at start-up when the cap is above the open-file limit: the OS would refuse connections
    (and everything else that needs a descriptor) before the cap does."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections >= soft:
        log.warning(
            "http.max_connections_above_fd_limit max_connections=%s open_file_limit=%s "
            "(raise ulimit -n, or lower max_connections)",
            max_connections,
            soft,
        )


class GuardedSite(web.SockSite):
    """A listening socket whose connections go through `Connections`."""

    __slots__ = ("_connections",)

    def __init__(self, runner: web.AppRunner, sock: socket.socket, connections: Connections) -> None:
        super().__init__(runner, sock)
        self._connections = connections

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._connections.protocol_factory(server), sock=self._sock, backlog=self._backlog
        )
