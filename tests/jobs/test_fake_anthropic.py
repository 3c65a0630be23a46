"""The fake Messages API speaks the wire format and picks turns from the conversation, not from counts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.fakes.anthropic import FakeAnthropic, Hold, HttpError, bash, last_tool_result, write

TOOLS = [{"name": "Write", "input_schema": {"type": "object"}}, {"name": "Bash", "input_schema": {}}]


async def post(http: aiohttp.ClientSession, fake: FakeAnthropic, body: dict[str, Any]) -> Any:
    """POST /v1/messages; a streamed answer is put back together as the SDK would."""
    async with http.post(f"{fake.base_url}/v1/messages", json=body) as resp:
        if resp.content_type != "text/event-stream":
            return resp.status, await resp.json()
        events = []
        async for line in resp.content:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
        return resp.status, assemble(events)


def assemble(events: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    message = events[0]["message"]
    partial: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_start":
            message["content"].append(event["content_block"])
        elif event["type"] == "content_block_delta":
            delta, block = event["delta"], message["content"][event["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif event["type"] == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["usage"]["output_tokens"] = event["usage"]["output_tokens"]
    for index, text in partial.items():
        message["content"][index]["input"] = json.loads(text)
    return message  # type: ignore[no-any-return]


def conversation(*turns: dict[str, Any]) -> dict[str, Any]:
    return {"model": "claude-test", "stream": True, "tools": TOOLS, "messages": list(turns)}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def result_of(tool_use: dict[str, Any], content: str, is_error: bool = False) -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": tool_use["id"], "content": content, "is_error": is_error}
    return {"role": "user", "content": [block]}


async def test_tool_use_then_text_with_turns_chosen_by_the_last_tool_result() -> None:
    script = [write("/r/a.txt", "a" * 100), bash("git commit -qm x"), "all done"]
    async with FakeAnthropic(script) as fake, aiohttp.ClientSession() as http:
        status, first = await post(http, fake, conversation(user("go")))
        assert status == 200 and first["stop_reason"] == "tool_use"
        [tool_use] = first["content"]
        assert (tool_use["name"], tool_use["input"]) == (
            "Write",
            {"file_path": "/r/a.txt", "content": "a" * 100},
        )

        # A retry of the same request (and extra system entries) gets the same turn again.
        retry = conversation({"role": "system", "content": "reminder"}, user("go"))
        assert (await post(http, fake, retry))[1]["content"][0]["name"] == "Write"

        history = [user("go"), {"role": "assistant", "content": first["content"]}, result_of(tool_use, "ok")]
        second = (await post(http, fake, conversation(*history)))[1]
        assert second["content"][0]["input"] == {
            "command": "git commit -qm x",
            "description": "Run a command",
        }
        history += [
            {"role": "assistant", "content": second["content"]},
            result_of(second["content"][0], "no"),
        ]
        third = (await post(http, fake, conversation(*history)))[1]
        assert (
            third["content"] == [{"type": "text", "text": "all done"}] and third["stop_reason"] == "end_turn"
        )
        # A new user message after the text turn goes on past the script.
        history += [{"role": "assistant", "content": third["content"]}, user("more?")]
        assert (await post(http, fake, conversation(*history)))[1]["content"][0]["text"] == fake.final_text

        assert [r.turn for r in fake.turn_requests] == [0, 0, 1, 2, 3]
        assert fake.calls == 5
        assert fake.turn_requests[3].last_tool_result == {
            "tool_use_id": second["content"][0]["id"],
            "content": "no",
            "is_error": False,
        }
        assert fake.turn_requests[0].user_texts == ["go"]
        assert last_tool_result(conversation(*history)) == fake.turn_requests[4].last_tool_result


TITLE_SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}


async def test_side_requests_do_not_consume_the_script() -> None:
    title = {
        "model": "claude-haiku",
        "stream": True,
        "messages": [user("<session>go</session>")],
        "output_config": {"format": {"type": "json_schema", "schema": TITLE_SCHEMA}},
    }
    async with FakeAnthropic(["the answer"]) as fake, aiohttp.ClientSession() as http:
        assert json.loads((await post(http, fake, title))[1]["content"][0]["text"]) == {"title": "Fake title"}
        plain = {"model": "claude-haiku", "messages": [user("topic?")], "max_tokens": 5}
        status, message = await post(http, fake, plain)  # not streamed: a plain JSON message
        assert (
            status == 200 and message["content"][0]["text"] == "Fake title" and message["type"] == "message"
        )
        async with http.post(f"{fake.base_url}/v1/messages/count_tokens", json=plain) as resp:
            assert (await resp.json())["input_tokens"] > 0
        assert (await post(http, fake, conversation(user("go"))))[1]["content"][0]["text"] == "the answer"
        assert [r.turn for r in fake.requests] == [None, None, None, 0] and fake.calls == 1
        async with http.head(fake.base_url + "/") as resp:
            assert resp.status == 200


async def test_errors_holds_and_broken_steps() -> None:
    def broken(body: dict[str, Any]) -> str:
        raise RuntimeError("oops")

    async with FakeAnthropic([HttpError(529, "overloaded", "overloaded_error")]) as fake:
        async with aiohttp.ClientSession() as http:
            status, body = await post(http, fake, conversation(user("go")))
        assert status == 529 and body == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "overloaded"},
        }

    async with FakeAnthropic([broken]) as fake, aiohttp.ClientSession() as http:
        status, body = await post(http, fake, conversation(user("go")))
        assert status == 500 and "RuntimeError: oops" in body["error"]["message"]
        assert len(fake.errors) == 1

    async with FakeAnthropic([Hold("late")]) as fake, aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(post(http, fake, conversation(user("go"))))
        await fake.wait_for_hold()
        assert not pending.done() and fake.holding == 1
        fake.release()
        assert (await asyncio.wait_for(pending, 10))[1]["content"][0]["text"] == "late"
        await fake.wait_for(lambda f: f.holding == 0)
