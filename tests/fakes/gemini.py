"""A scripted fake of the Gemini API (`generateContent`, `streamGenerateContent`), for the Gemini CLI.

    script = [call("write_file", file_path="hello.txt", content="hi\\n"), "Done."]
    async with FakeGemini(script) as fake:
        ...  # GOOGLE_GEMINI_BASE_URL=fake.base_url GEMINI_API_KEY=... gemini -p "..."

A turn is a `str` (text) or a `FunctionCall`; the turn answered is the one after the turn that produced
the request's last `model` entry (the CLI re-sends the conversation). Requests without `tools` (its
model router asks which model to use, with a JSON schema) get an object of that schema and never
consume the script. Every request is recorded in `fake.requests`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.loopback import HttpError, LoopbackServer, Recorded, open_stream, send_event


@dataclass(frozen=True)
class FunctionCall:
    name: str
    args: dict[str, Any]


def call(name: str, **args: Any) -> FunctionCall:
    """A function call turn: the Gemini CLI's tools are `write_file`, `replace`, `run_shell_command`, ..."""
    return FunctionCall(name, args)


Turn = str | FunctionCall


@dataclass
class RecordedRequest(Recorded):
    @property
    def function_responses(self) -> list[dict[str, Any]]:
        return [
            part["functionResponse"]
            for content in self.json.get("contents", [])
            for part in content.get("parts", [])
            if "functionResponse" in part
        ]


@dataclass
class FakeGemini(LoopbackServer[RecordedRequest, Turn]):
    """Answers the Gemini API from a script (see the module docstring)."""

    prompt_tokens: int = 100
    output_tokens: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        self._said: dict[str, int] = {}  # the parts of each answer (as JSON) -> its turn

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/{version}/models/{call:.*}", self._handle)

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        body = {"error": {"code": status, "message": message, "status": kind or "INTERNAL"}}
        return web.json_response(body, status=status)

    @property
    def base_url(self) -> str:
        return self.url()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        record = RecordedRequest(request.method, request.path, dict(request.headers), body)
        if request.path.endswith(":countTokens"):
            await self.record(record)
            return web.json_response({"totalTokens": self.prompt_tokens})
        if body.get("tools"):
            record.turn = self._turn_for(body)
            reply = self.turn(record.turn, body)
            if isinstance(reply, HttpError):
                await self.record(record)
                return self.error(reply.status, reply.message, reply.kind)
            parts = [{"text": reply}] if isinstance(reply, str) else [{"functionCall": vars(reply)}]
            self._said[json.dumps(parts, sort_keys=True)] = record.turn
        else:
            parts = [{"text": _sample(body)}]
        await self.record(record)
        chunk = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": self.prompt_tokens,
                "candidatesTokenCount": self.output_tokens,
                "totalTokenCount": self.prompt_tokens + self.output_tokens,
            },
            "modelVersion": "gemini-fake",
        }
        if ":streamGenerateContent" not in request.path:
            return web.json_response(chunk)
        stream = await open_stream(request)
        await send_event(stream, chunk, named=False)
        await stream.write_eof()
        return stream

    def _turn_for(self, body: dict[str, Any]) -> int:
        for content in reversed(body.get("contents", [])):
            if content.get("role") == "model":
                parts = [
                    {k: v for k, v in p.items() if k in ("text", "functionCall")} for p in content["parts"]
                ]
                for part in parts:  # the CLI may add an id to a function call it echoes back
                    if "functionCall" in part:
                        part["functionCall"] = {k: part["functionCall"].get(k) for k in ("name", "args")}
                return self._said.get(json.dumps(parts, sort_keys=True), -1) + 1
        return 0


def _sample(body: dict[str, Any]) -> str:
    """An object of the JSON schema the request asks for, else plain text."""
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if not isinstance(schema, dict):
        return "fake"
    samples = {"string": "fake", "number": 1, "integer": 1, "boolean": False, "array": []}
    properties = schema.get("properties") or {}
    return json.dumps({k: samples.get(str(v.get("type", "")).lower()) for k, v in properties.items()})
