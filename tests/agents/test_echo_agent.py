"""End-to-end: the bundled echo agent, launched by a running Coral server (`coral` fixture)."""

from __future__ import annotations

import json
from typing import Any

from coral_server.agent import CoralAgent

ECHO = {"name": "echo", "version": "0.1.0", "source": "local"}


def _echo(name: str, prefix: str, **options: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ECHO,
        "name": name,
        "provider": {"type": "local", "runtime": "executable"},
        "options": {"PREFIX": {"type": "string", "value": prefix}, **options},
    }


def _session(agents: list[dict[str, Any]], group: list[str]) -> dict[str, Any]:
    return {
        "agentGraphRequest": {"agents": agents, "groups": [group]},
        "namespaceProvider": {
            "type": "create_if_not_exists",
            "namespaceRequest": {"name": "agents-echo", "deleteOnLastSessionExit": True},
        },
        "execution": {"mode": "immediate"},
    }


TESTER = {
    "id": ECHO,
    "name": "tester",
    "provider": {"type": "local", "runtime": "external"},
}


async def test_two_echo_agents_answer_the_tester(coral: Any) -> None:
    body = _session([_echo("echo-a", "A: "), _echo("echo-b", "B: "), TESTER], ["echo-a", "echo-b", "tester"])
    ns, sid = await coral.create_session(body)
    url = await coral.connection_url(ns, sid, "tester")

    async with CoralAgent(url, "tester") as tester:
        names = {tool.name for tool in await tester.tools()}
        assert {"coral_create_thread", "coral_send_message", "coral_wait_for_mention"} <= names
        thread = await tester.create_thread("echo-test", ["echo-a", "echo-b"])
        assert set(thread["participants"]) >= {"echo-a", "echo-b", "tester"}
        sent = await tester.send_message(thread["id"], "hello", ["echo-a", "echo-b"])
        assert sent["senderName"] == "tester"

        replies: dict[str, str] = {}
        while len(replies) < 2:
            message = await tester.wait_for_mention(15_000)
            assert message is not None, f"timed out; got only {replies}"
            assert message["threadId"] == thread["id"]
            assert "tester" in message["mentionNames"]
            replies[message["senderName"]] = message["text"]
        assert replies == {"echo-a": "A: hello", "echo-b": "B: hello"}

    def has_all(state: dict[str, Any]) -> bool:
        threads = [t for t in state["threads"] if t["id"] == thread["id"]]
        return bool(threads) and len(threads[0]["messages"]) >= 3

    state = await coral.wait_for(ns, sid, has_all)
    [shown] = [t for t in state["threads"] if t["id"] == thread["id"]]
    texts = {(m["senderName"], m["text"]) for m in shown["messages"]}
    assert {("tester", "hello"), ("echo-a", "A: hello"), ("echo-b", "B: hello")} <= texts
    assert {a["name"] for a in state["agents"]} >= {"echo-a", "echo-b", "tester"}
    json.dumps(state)  # the state is plain JSON


async def test_echo_loop_guard_and_max_replies(coral: Any) -> None:
    body = _session(
        [_echo("echo-a", "A: ", MAX_REPLIES={"type": "i32", "value": 1}), TESTER], ["echo-a", "tester"]
    )
    ns, sid = await coral.create_session(body)
    url = await coral.connection_url(ns, sid, "tester")

    async with CoralAgent(url, "tester") as tester:
        thread = await tester.create_thread("guard", ["echo-a"])
        await tester.send_message(thread["id"], "A: already prefixed", ["echo-a"])  # never echoed
        await tester.send_message(thread["id"], "first", ["echo-a"])  # echoed (reply 1 of 1)
        await tester.send_message(thread["id"], "second", ["echo-a"])  # over MAX_REPLIES
        reply = await tester.wait_for_mention(15_000)
        assert reply is not None and reply["text"] == "A: first"
        assert await tester.wait_for_mention(1_500) is None

    state = await coral.state(ns, sid)
    [shown] = [t for t in state["threads"] if t["id"] == thread["id"]]
    echoed = [m["text"] for m in shown["messages"] if m["senderName"] == "echo-a"]
    assert echoed == ["A: first"]
