"""A scripted fake of the Anthropic Messages API, for driving real coding-agent CLIs in tests.

    script = [
        write("/repo/hello.txt", "hi\\n"),            # a tool_use turn: the CLI writes the file
        bash("git add -A && git commit -qm hello"),  # the next turn, once the Write's result is back
        "Done: wrote and committed hello.txt",       # a text turn: the CLI's final answer
    ]
    async with FakeAnthropic(script) as fake:
        ...  # ANTHROPIC_BASE_URL=fake.base_url claude -p "..."
        assert fake.turn_requests[1].last_tool_result["is_error"] is False

Turns are picked from the conversation, not from request counts: a request whose last assistant message
is one the fake produced for turn N gets turn N+1 (a CLI re-sends the whole conversation each time and
mixes in entries of its own, and retries a request after a dropped connection). A turn is a `str`
(text), a `ToolUse` (or a list of them, with optional leading text), an `HttpError`, a `Hold` (the
answer starts and then waits until `fake.release()`, or forever: for timeout and kill tests), or a
callable that gets the request body and returns one of those. Past the script the fake answers
`final_text`.

Requests that are not the agent's loop (no `tools` offered: session titles, topic checks, summaries)
are answered with `side_text` (as a JSON object when the request asks for a JSON schema, as Claude
Code's title request does) and never consume the script; `POST
/v1/messages/count_tokens` answers a rough count. Every request is recorded in `fake.requests`
(`fake.turn_requests` keeps only the agent loop's). Both streaming (SSE) and plain JSON answers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.loopback import HttpError as HttpError  # a turn of scripts (re-exported)
from tests.fakes.loopback import LoopbackServer, Recorded, open_stream, send_event


@dataclass(frozen=True)
class ToolUse:
    """A tool call the fake makes: the CLI runs `name` with `input` and sends back a tool_result."""

    name: str
    input: dict[str, Any]


def write(file_path: str, content: str) -> ToolUse:
    """Claude Code's `Write` tool (absolute path)."""
    return ToolUse("Write", {"file_path": file_path, "content": content})


def read(file_path: str) -> ToolUse:
    """Claude Code's `Read` tool (the CLI refuses an `Edit` of a file it has not read)."""
    return ToolUse("Read", {"file_path": file_path})


def edit(file_path: str, old_string: str, new_string: str) -> ToolUse:
    """Claude Code's `Edit` tool (exact string replacement)."""
    return ToolUse("Edit", {"file_path": file_path, "old_string": old_string, "new_string": new_string})


def bash(command: str, description: str = "Run a command") -> ToolUse:
    """Claude Code's `Bash` tool."""
    return ToolUse("Bash", {"command": command, "description": description})


@dataclass(frozen=True)
class Hold:
    """A turn that starts streaming, then waits until `FakeAnthropic.release()` before `text`."""

    text: str = "released"


@dataclass(frozen=True)
class Answer:
    """What the fake sends for one turn: optional text, then tool calls (ids are the fake's)."""

    text: str | None
    tools: tuple[ToolUse, ...]


Turn = str | ToolUse | list[str | ToolUse] | HttpError | Hold
Step = Turn | Callable[[dict[str, Any]], Turn]


@dataclass
class RecordedRequest(Recorded):
    """One request the fake received (`turn` None: a side request or count_tokens)."""

    reply: Turn | None = None

    @property
    def model(self) -> str:
        return str(self.json.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.json.get("stream"))

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools the request offers."""
        return [str(t.get("name")) for t in self.json.get("tools", []) if isinstance(t, dict)]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", []))

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """Every `tool_result` block of the conversation, in order."""
        return [b for m in self.messages for b in _blocks(m) if b.get("type") == "tool_result"]

    @property
    def last_tool_result(self) -> dict[str, Any] | None:
        """The last `tool_result` block, with `content` flattened to text and `is_error` a bool."""
        results = self.tool_results
        if not results:
            return None
        block = results[-1]
        return {
            "tool_use_id": block.get("tool_use_id"),
            "content": _text_of(block.get("content")),
            "is_error": bool(block.get("is_error", False)),
        }

    @property
    def user_texts(self) -> list[str]:
        """The text blocks of the user's messages (the prompt, and what the CLI adds to it)."""
        return [
            str(b.get("text", ""))
            for m in self.messages
            if m.get("role") == "user"
            for b in _blocks(m)
            if b.get("type") == "text"
        ]


def last_tool_result(request: dict[str, Any]) -> dict[str, Any] | None:
    """The last tool_result of a request body (as `RecordedRequest.last_tool_result`)."""
    return RecordedRequest("POST", "", {}, request).last_tool_result


@dataclass
class FakeAnthropic(LoopbackServer[RecordedRequest, Turn]):
    """Answers the Messages API from a script (see the module docstring)."""

    side_text: str = "Fake title"
    input_tokens: int = 100
    output_tokens: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ids = itertools.count(1)
        # What the fake has said, to find where a conversation is: tool_use id / text -> turn index.
        self._turn_of_tool: dict[str, int] = {}
        self._turn_of_text: dict[str, int] = {}
        self._released = asyncio.Event()
        self.holding = 0  # Hold turns currently open

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self._head)
        router.add_post("/v1/messages", self._messages)
        router.add_post("/v1/messages/count_tokens", self._count_tokens)
        router.add_route("*", "/{tail:.*}", self._other)

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        body = {"type": "error", "error": {"type": kind or "api_error", "message": message}}
        return web.json_response(body, status=status)

    async def close(self) -> None:
        self._released.set()  # let held answers finish so the server shuts down promptly
        await super().close()

    @property
    def base_url(self) -> str:
        """What to set `ANTHROPIC_BASE_URL` to (no `/v1`: the client adds it)."""
        return self.url()

    # -- test helpers ---------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        """How many agent-loop requests arrived."""
        return len(self.turn_requests)

    def release(self) -> None:
        """Let every `Hold` turn (open now or later) finish."""
        self._released.set()

    async def wait_for_turns(self, count: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Wait until at least `count` agent-loop requests arrived; returns them."""
        await self.wait_for(lambda f: f.calls >= count, timeout)
        return self.turn_requests

    async def wait_for_hold(self, timeout: float = 30.0) -> None:
        """Wait until a `Hold` turn is open (the CLI is waiting on the model)."""
        await self.wait_for(lambda f: f.holding > 0, timeout)

    # -- endpoints ------------------------------------------------------------------------------

    async def _head(self, request: web.Request) -> web.Response:
        # The CLI probes the base URL before its first request.
        return web.Response(status=200)

    async def _other(self, request: web.Request) -> web.Response:
        await self.record(RecordedRequest(request.method, request.path, dict(request.headers), {}))
        return self.error(404, f"the fake does not serve {request.method} {request.path}", "not_found_error")

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        await self.record(RecordedRequest(request.method, request.path, dict(request.headers), body))
        return web.json_response({"input_tokens": max(1, len(json.dumps(body)) // 4)})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        record = RecordedRequest(request.method, request.path, dict(request.headers), body)
        if not body.get("tools"):
            record.reply = self._side_reply(body)
        else:
            record.turn = self._turn_for(body)
            record.reply = self.turn(record.turn, body)
        await self.record(record)
        reply = record.reply
        if isinstance(reply, HttpError):
            return self.error(reply.status, reply.message, reply.kind)
        answer = self._answer(record.turn, reply)
        model = str(body.get("model", "claude-fake"))
        if record.stream:
            return await self._stream(request, model, answer, hold=isinstance(reply, Hold))
        if isinstance(reply, Hold):
            await self._hold()
        return web.json_response(self._message(model, answer, record.turn))

    def _side_reply(self, body: dict[str, Any]) -> str:
        """`side_text`, or an object of the JSON schema the request asks for (session titles)."""
        schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return self.side_text
        samples = {"string": self.side_text, "number": 0, "integer": 0, "boolean": False, "array": []}
        properties = schema.get("properties") or {}
        return json.dumps({k: samples.get(v.get("type")) for k, v in properties.items()})

    # -- the script -----------------------------------------------------------------------------

    def _turn_for(self, body: dict[str, Any]) -> int:
        """The turn after the one that produced the conversation's last assistant message."""
        for message in reversed(body.get("messages", [])):
            if message.get("role") != "assistant":
                continue
            for block in reversed(_blocks(message)):
                if block.get("type") == "tool_use" and block.get("id") in self._turn_of_tool:
                    return self._turn_of_tool[str(block["id"])] + 1
                if block.get("type") == "text" and block.get("text") in self._turn_of_text:
                    return self._turn_of_text[str(block["text"])] + 1
        return 0

    def _answer(self, turn: int | None, reply: Turn) -> Answer:
        if isinstance(reply, Hold):
            answer = Answer(reply.text, ())
        elif isinstance(reply, str):
            answer = Answer(reply, ())
        elif isinstance(reply, ToolUse):
            answer = Answer(None, (reply,))
        elif isinstance(reply, list):
            texts = [part for part in reply if isinstance(part, str)]
            answer = Answer("\n".join(texts) or None, tuple(p for p in reply if isinstance(p, ToolUse)))
        else:
            raise TypeError(f"not a turn: {reply!r}")
        if turn is not None and answer.text is not None:
            self._turn_of_text[answer.text] = turn
        return answer

    def _tool_id(self, turn: int | None) -> str:
        tool_id = f"toolu_fake{next(self._ids):04d}"
        if turn is not None:
            self._turn_of_tool[tool_id] = turn
        return tool_id

    # -- answers --------------------------------------------------------------------------------

    def _blocks(self, turn: int | None, answer: Answer) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if answer.text is not None:
            blocks.append({"type": "text", "text": answer.text})
        for tool in answer.tools:
            blocks.append(
                {"type": "tool_use", "id": self._tool_id(turn), "name": tool.name, "input": tool.input}
            )
        return blocks

    def _usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    def _message(self, model: str, answer: Answer, turn: int | None = None) -> dict[str, Any]:
        return {
            "id": f"msg_fake{next(self._ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self._blocks(turn, answer),
            "stop_reason": "tool_use" if answer.tools else "end_turn",
            "stop_sequence": None,
            "usage": self._usage(),
        }

    async def _stream(
        self, request: web.Request, model: str, answer: Answer, hold: bool
    ) -> web.StreamResponse:
        record = self.requests[-1]
        response = await open_stream(request)
        message = self._message(model, answer, record.turn)
        blocks = message["content"]
        start = dict(message, content=[], stop_reason=None)
        start["usage"] = dict(self._usage(), output_tokens=1)
        await send_event(response, {"type": "message_start", "message": start})
        await send_event(response, {"type": "ping"})
        if hold:
            await self._hold()
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                await send_event(response, _block_start(index, {"type": "text", "text": ""}))
                for chunk in _chunks(block["text"]):
                    await send_event(response, _delta(index, "text_delta", text=chunk))
            else:
                empty = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                await send_event(response, _block_start(index, empty))
                for chunk in _chunks(json.dumps(block["input"])):
                    await send_event(response, _delta(index, "input_json_delta", partial_json=chunk))
            await send_event(response, {"type": "content_block_stop", "index": index})
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        usage = {"output_tokens": self.output_tokens}
        await send_event(response, {"type": "message_delta", "delta": delta, "usage": usage})
        await send_event(response, {"type": "message_stop"})
        await response.write_eof()
        return response

    async def _hold(self) -> None:
        self.holding += 1
        await self.changed()
        try:
            await self._released.wait()
        finally:
            self.holding -= 1
            await self.changed()


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _chunks(text: str, size: int = 40) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, kind: str, **fields: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}
