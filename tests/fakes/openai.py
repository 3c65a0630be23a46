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

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.loopback import HttpError as HttpError  # a step's reply (re-exported)
from tests.fakes.loopback import LoopbackServer, Recorded

ToolCalls = list[tuple[str, dict[str, Any]]]
Reply = str | ToolCalls | HttpError
Step = Callable[[dict[str, Any]], Reply]


@dataclass
class RecordedRequest(Recorded):
    """One request the fake received."""

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
class FakeOpenAI(LoopbackServer[RecordedRequest, Reply]):
    """Answers Chat Completions with the script's steps, one per request, in order."""

    model: str = "fake-model"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)
        self._next_step = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._handle)
        router.add_post("/chat/completions", self._handle)

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": kind or "server_error", "code": None}}
        return web.json_response(body, status=status)

    @property
    def base_url(self) -> str:
        """The API base URL to configure clients with (ends in `/v1`)."""
        return self.url("/v1")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        record = RecordedRequest(request.method, request.path, dict(request.headers), body)
        record.turn, self._next_step = self._next_step, self._next_step + 1
        record.reply = reply = self.turn(record.turn, body)
        await self.record(record)
        if isinstance(reply, HttpError):
            return self.error(reply.status, reply.message, reply.kind)
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
