"""A scripted fake of the OpenAI Chat Completions API, for tests.

    script = [
        lambda req: [("coral_wait_for_mention", {"maxWaitMs": 5000})],
        lambda req: "all done",
    ]
    async with FakeOpenAI(script) as fake:
        ...  # point the agent at fake.base_url (".../v1")
        assert fake.requests[0].headers["Authorization"] == "Bearer sk-test"

Each step is called with the request's JSON body and returns the reply: a `str` (a text
answer), a list of `(tool_name, arguments)` pairs (tool calls), or an `HttpError` (that
status and body). When the script runs out the server answers `FakeOpenAI.final_text`.
Every request is recorded (path, headers, JSON body) in `fake.requests`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

ToolCalls = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class HttpError:
    """A step reply that makes the fake answer with an HTTP error."""

    status: int = 500
    message: str = "fake server error"


Reply = str | ToolCalls | HttpError
Step = Callable[[dict[str, Any]], Reply]


@dataclass
class RecordedRequest:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    json: dict[str, Any]
    reply: Reply | None = None

    @property
    def tool_names(self) -> list[str]:
        """Names of the functions offered in the request's `tools`."""
        return [t["function"]["name"] for t in self.json.get("tools", []) if t.get("type") == "function"]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", []))


def tool_results(request: dict[str, Any]) -> list[str]:
    """The contents of the `tool` messages of a request body, in order."""
    return [str(m.get("content", "")) for m in request.get("messages", []) if m.get("role") == "tool"]


def last_tool_result_json(request: dict[str, Any]) -> Any:
    """The last `tool` message of a request body, parsed as JSON (None if absent or not JSON)."""
    results = tool_results(request)
    if not results:
        return None
    try:
        return json.loads(results[-1])
    except ValueError:
        return None


@dataclass
class FakeOpenAI:
    """An aiohttp server on 127.0.0.1 (port 0) answering Chat Completions from a script."""

    script: Sequence[Step] = ()
    model: str = "fake-model"
    final_text: str = "I have nothing more to do."
    requests: list[RecordedRequest] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._steps = list(self.script)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
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

    @property
    def base_url(self) -> str:
        """The API base URL to configure clients with (ends in `/v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- test helpers ---------------------------------------------------------------------------

    async def wait_for_requests(self, count: int, timeout: float = 15.0) -> list[RecordedRequest]:
        """Wait until at least `count` requests arrived; returns them all."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # -- the endpoint ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        record = RecordedRequest(request.path, dict(request.headers), body)
        try:
            if self._steps:
                step = self._steps.pop(0)
                record.reply = step(body)
            else:
                record.reply = self.final_text
        except Exception as exc:  # a broken script step must fail the test, not hang it
            self.errors.append(exc)
            record.reply = HttpError(500, f"script step raised {type(exc).__name__}: {exc}")
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()
        reply = record.reply
        if isinstance(reply, HttpError):
            return _error(reply.status, reply.message, "server_error")
        return web.json_response(self._completion(body, reply))

    def _completion(self, body: dict[str, Any], reply: str | ToolCalls) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if isinstance(reply, str):
            message["content"] = reply
            finish = "stop"
        else:
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for name, arguments in reply
            ]
            finish = "tool_calls"
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": None}}, status=status)
