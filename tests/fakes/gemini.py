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

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web


@dataclass(frozen=True)
class FunctionCall:
    name: str
    args: dict[str, Any]


def call(name: str, **args: Any) -> FunctionCall:
    """A function call turn: the Gemini CLI's tools are `write_file`, `replace`, `run_shell_command`, ..."""
    return FunctionCall(name, args)


Turn = str | FunctionCall


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: dict[str, Any]
    turn: int | None = None

    @property
    def function_responses(self) -> list[dict[str, Any]]:
        return [
            part["functionResponse"]
            for content in self.json.get("contents", [])
            for part in content.get("parts", [])
            if "functionResponse" in part
        ]


@dataclass
class FakeGemini:
    """An aiohttp server on 127.0.0.1 (port 0) answering the Gemini API from a script."""

    script: Sequence[Turn] = ()
    final_text: str = "I have nothing more to do."
    prompt_tokens: int = 100
    output_tokens: int = 20
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._said: dict[str, int] = {}  # the parts of each answer (as JSON) -> its turn
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{version}/models/{call:.*}", self._handle)
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
        return f"http://127.0.0.1:{self.port}"

    @property
    def turn_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.turn is not None]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record = Recorded(request.path, dict(request.headers), body)
        if request.path.endswith(":countTokens"):
            async with self._changed:
                self.requests.append(record)
            return web.json_response({"totalTokens": self.prompt_tokens})
        if body.get("tools"):
            record.turn = self._turn_for(body)
            reply = self.script[record.turn] if record.turn < len(self.script) else self.final_text
            parts = [{"text": reply}] if isinstance(reply, str) else [{"functionCall": vars(reply)}]
            self._said[json.dumps(parts, sort_keys=True)] = record.turn
        else:
            parts = [{"text": _sample(body)}]
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()
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
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        await response.write_eof()
        return response

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
