"""The fake OpenAI-compatible server answers in the Chat Completions shape and records requests."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from tests.fakes.openai import FakeOpenAI, HttpError, last_tool_result_json, tool_results

TOOLS = [{"type": "function", "function": {"name": "coral_send_message", "parameters": {"type": "object"}}}]


async def test_tool_calls_shape_and_recording() -> None:
    seen: list[dict[str, Any]] = []

    def step(request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        seen.append(request)
        return [("coral_send_message", {"threadId": "t1", "content": "hi", "mentions": ["a"]}), ("x", {})]

    async with FakeOpenAI([step]) as fake, httpx2.AsyncClient() as http:
        assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
        body = {"model": "m1", "messages": [{"role": "user", "content": "go"}], "tools": TOOLS}
        response = await http.post(
            f"{fake.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-1"}
        )
        assert response.status_code == 200
        data = response.json()
        assert data["object"] == "chat.completion" and data["model"] == "m1"
        choice = data["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        calls = choice["message"]["tool_calls"]
        assert [c["type"] for c in calls] == ["function", "function"]
        assert calls[0]["function"]["name"] == "coral_send_message"
        assert isinstance(calls[0]["function"]["arguments"], str)
        assert json.loads(calls[0]["function"]["arguments"]) == {
            "threadId": "t1",
            "content": "hi",
            "mentions": ["a"],
        }
        assert calls[0]["id"] != calls[1]["id"]
        assert seen == [body]
        [record] = fake.requests
        assert record.path == "/v1/chat/completions"
        assert record.headers["Authorization"] == "Bearer sk-1"
        assert record.tool_names == ["coral_send_message"]
        assert record.messages == body["messages"]


async def test_text_reply_and_script_exhaustion() -> None:
    async with FakeOpenAI([lambda req: "hello"], final_text="the end") as fake, httpx2.AsyncClient() as http:
        url = f"http://127.0.0.1:{fake.port}/chat/completions"  # also served without /v1
        first = (await http.post(url, json={"model": "m", "messages": []})).json()
        assert first["choices"][0]["message"] == {"role": "assistant", "content": "hello", "refusal": None}
        assert first["choices"][0]["finish_reason"] == "stop"
        second = (await http.post(url, json={"model": "m", "messages": []})).json()
        assert second["choices"][0]["message"]["content"] == "the end"
        assert len(await fake.wait_for_requests(2, timeout=1)) == 2


async def test_http_error_step_and_broken_step() -> None:
    def broken(request: dict[str, Any]) -> str:
        raise KeyError("oops")

    async with (
        FakeOpenAI([lambda req: HttpError(429, "slow down"), broken]) as fake,
        httpx2.AsyncClient() as http,
    ):
        url = f"{fake.base_url}/chat/completions"
        response = await http.post(url, json={"messages": []})
        assert response.status_code == 429
        assert response.json()["error"]["message"] == "slow down"
        response = await http.post(url, json={"messages": []})
        assert response.status_code == 500
        assert len(fake.errors) == 1
        response = await http.post(url, content=b"not json")
        assert response.status_code == 400


def test_tool_result_helpers() -> None:
    request = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "1", "content": "Error: nope"},
            {"role": "tool", "tool_call_id": "2", "content": '{"status": "Message received"}'},
        ]
    }
    assert tool_results(request) == ["Error: nope", '{"status": "Message received"}']
    assert last_tool_result_json(request) == {"status": "Message received"}
    assert last_tool_result_json({"messages": []}) is None
