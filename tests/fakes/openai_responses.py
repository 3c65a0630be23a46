"""A scripted fake of the OpenAI Responses API (`POST /v1/responses`, streamed), for the Codex CLI.

    script = [call("exec_command", cmd="git commit -qm x"), "Done."]
    async with FakeResponses(script) as fake:
        ...  # a Codex model provider with base_url=fake.base_url, wire_api="responses"

A turn is a `str` (an assistant message) or a `FunctionCall`; the turn answered is the one after the
turn whose `call_id` the request's last `function_call_output` answers (0 when there is none).
Every request is recorded in `fake.requests`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.loopback import HttpError, LoopbackServer, Recorded, open_stream, send_event


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any]


def call(name: str, **arguments: Any) -> FunctionCall:
    """A function call turn: Codex offers `exec_command` (`cmd`) to models it does not know."""
    return FunctionCall(name, arguments)


Turn = str | FunctionCall


@dataclass
class RecordedRequest(Recorded):
    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The request's `function_call_output` items, in order."""
        return [i for i in self.json.get("input", []) if i.get("type") == "function_call_output"]


@dataclass
class FakeResponses(LoopbackServer[RecordedRequest, Turn]):
    """Answers the Responses API from a script (see the module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)
        self._turn_of_call: dict[str, int] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/responses", self._handle)

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": kind or "server_error", "code": None}}
        return web.json_response(body, status=status)

    @property
    def base_url(self) -> str:
        return self.url("/v1")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        record = RecordedRequest(request.method, request.path, dict(request.headers), body)
        outputs = record.outputs
        record.turn = self._turn_of_call.get(outputs[-1].get("call_id", ""), -1) + 1 if outputs else 0
        await self.record(record)
        reply = self.turn(record.turn, body)
        if isinstance(reply, HttpError):
            return self.error(reply.status, reply.message, reply.kind)
        if isinstance(reply, str):
            content = [{"type": "output_text", "text": reply, "annotations": []}]
            item = {
                "type": "message",
                "id": f"msg_{next(self._ids)}",
                "role": "assistant",
                "content": content,
            }
        else:
            call_id = f"call_{next(self._ids)}"
            self._turn_of_call[call_id] = record.turn
            arguments = json.dumps(reply.arguments)
            item = {"type": "function_call", "id": f"fc_{next(self._ids)}", "call_id": call_id}
            item |= {"name": reply.name, "arguments": arguments}
        response_id = f"resp_{next(self._ids)}"
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 120,
        }
        stream = await open_stream(request)
        created = {"id": response_id, "object": "response", "status": "in_progress", "output": []}
        await send_event(stream, {"type": "response.created", "response": created})
        await send_event(stream, {"type": "response.output_item.added", "output_index": 0, "item": item})
        if isinstance(reply, str):
            delta = {"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": reply}
            await send_event(stream, {"type": "response.output_text.delta", **delta})
        await send_event(stream, {"type": "response.output_item.done", "output_index": 0, "item": item})
        done = dict(created, status="completed", output=[item], usage=usage)
        await send_event(stream, {"type": "response.completed", "response": done})
        await stream.write_eof()
        return stream
