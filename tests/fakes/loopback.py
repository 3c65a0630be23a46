"""What every loopback fake of a model API shares: an aiohttp server on 127.0.0.1 (port 0) that records
the requests it gets and answers them from a script.

A fake subclasses `LoopbackServer` and says only what is its API's: its routes (`add_routes`), its error
body (`error`), which script turn a request gets, and how a turn is written on the wire.

    async with FakeSomething(script) as fake:   # started; stopped (and its port freed) on exit
        ... fake.url("/v1") ...
        await fake.wait_for(lambda f: len(f.requests) >= 2)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from aiohttp import web

T = TypeVar("T")  # one turn of the script (what the fake answers a request with)
R = TypeVar("R", bound="Recorded")  # what the fake keeps of one request

Body = dict[str, Any]


@dataclass(frozen=True)
class HttpError:
    """A turn that makes the fake answer with an HTTP error (`kind`: the API's error type; None: the
    fake's usual one)."""

    status: int = 500
    message: str = "fake server error"
    kind: str | None = None


@dataclass
class Recorded:
    """One request a fake received (`turn`: the script index it was answered with, None if none)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Body
    turn: int | None = None


@dataclass
class LoopbackServer(Generic[R, T]):
    """An aiohttp server on 127.0.0.1 (port 0) answering from `script`, then `final_text`.

    A step of the script is a turn, or a callable that gets the request body and returns one (a callable
    that raises is kept in `errors` and answered with a 500, so a broken script fails its test instead
    of hanging it). Every request the fake records lands in `requests`.
    """

    script: Sequence[T | Callable[[Body], T]] = ()
    final_text: str = "I have nothing more to do."
    requests: list[R] = field(default_factory=list, kw_only=True)
    errors: list[BaseException] = field(default_factory=list, kw_only=True)

    def __post_init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    # -- what a fake says about its API -------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Route the API's endpoints to the fake's handlers."""
        raise NotImplementedError

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        """An error answer in the API's own body."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app.router)
        # handler_cancellation: an answer held open (a test of timeouts and kills) ends with its client.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- what tests look at -------------------------------------------------------------------------

    @property
    def turn_requests(self) -> list[R]:
        """The requests that got a script turn (or `final_text`), not side requests."""
        return [r for r in self.requests if r.turn is not None]

    async def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 30.0) -> None:
        """Wait until `predicate(fake)` holds (checked whenever a request is recorded or `changed()`)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[R]:
        """Wait until at least `count` requests arrived; returns them all."""
        await self.wait_for(lambda f: len(f.requests) >= count, timeout)
        return list(self.requests)

    # -- for the fakes' handlers --------------------------------------------------------------------

    async def record(self, record: R) -> None:
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()

    async def changed(self) -> None:
        """Wake `wait_for` (a fake's own state changed)."""
        async with self._changed:
            self._changed.notify_all()

    def turn(self, index: int, body: Body) -> T | str | HttpError:
        """Script turn `index` for a request with `body` (`final_text` past the script)."""
        if index >= len(self.script):
            return self.final_text
        step = self.script[index]
        if not callable(step):
            return step
        try:
            return step(body)
        except Exception as exc:
            self.errors.append(exc)
            return HttpError(500, f"script step {index} raised {type(exc).__name__}: {exc}")

    async def json_body(self, request: web.Request) -> Body | web.Response:
        """The request's JSON object, or the API's 400 answer when it is not one."""
        try:
            body = await request.json()
        except ValueError:
            return self.error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return self.error(400, "request body must be a JSON object", "invalid_request_error")
        return body


async def open_stream(request: web.Request) -> web.StreamResponse:
    """Start a server-sent events answer."""
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    return stream


async def send_event(stream: web.StreamResponse, data: Body, named: bool = True) -> None:
    """One server-sent event (named after its `type` unless `named` is False)."""
    head = f"event: {data['type']}\n" if named else ""
    await stream.write(f"{head}data: {json.dumps(data)}\n\n".encode())
