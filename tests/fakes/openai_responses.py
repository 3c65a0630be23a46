"""A scripted fake of the OpenAI Responses API (`POST /v1/responses`, streamed), for the Codex CLI.

    script = [call("exec_command", cmd="git commit -qm x"), "Done."]
    async with FakeResponses(script) as fake:
        ...  # a Codex model provider with base_url=fake.base_url, wire_api="responses"

A turn is a `str` (an assistant message) or a `FunctionCall`; the turn answered is the one after the
turn whose `call_id` the request's last `function_call_output` answers (0 when there is none).
Every request is recorded in `fake.requests`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any]


def call(name: str, **arguments: Any) -> FunctionCall:
    """A function call turn: Codex offers `exec_command` (`cmd`) to models it does not know."""
    return FunctionCall(name, arguments)


Turn = str | FunctionCall


@dataclass
class Recorded:
    headers: dict[str, str]
    json: dict[str, Any]
    turn: int = 0

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The request's `function_call_output` items, in order."""
        return [i for i in self.json.get("input", []) if i.get("type") == "function_call_output"]


@dataclass
class FakeResponses:
    """An aiohttp server on 127.0.0.1 (port 0) answering the Responses API from a script."""

    script: Sequence[Turn] = ()
    final_text: str = "I have nothing more to do."
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._turn_of_call: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/responses", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = Recorded(dict(request.headers), body)
        outputs = record.outputs
        record.turn = self._turn_of_call.get(outputs[-1].get("call_id", ""), -1) + 1 if outputs else 0
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()
        reply = self.script[record.turn] if record.turn < len(self.script) else self.final_text
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
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        created = {"id": response_id, "object": "response", "status": "in_progress", "output": []}
        await _event(stream, {"type": "response.created", "response": created})
        await _event(stream, {"type": "response.output_item.added", "output_index": 0, "item": item})
        if isinstance(reply, str):
            delta = {"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": reply}
            await _event(stream, {"type": "response.output_text.delta", **delta})
        await _event(stream, {"type": "response.output_item.done", "output_index": 0, "item": item})
        done = dict(created, status="completed", output=[item], usage=usage)
        await _event(stream, {"type": "response.completed", "response": done})
        await stream.write_eof()
        return stream


async def _event(stream: web.StreamResponse, data: dict[str, Any]) -> None:
    await stream.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
