"""Black-box: the MCP tools' rules, errors, resources and isolation, through the official client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.conftest import Coral, agent_spec, session_body
from tests.e2e.mcp_client import HEADERS, INIT, McpAgent, connect


def ext(name: str, **extra: Any) -> dict[str, Any]:
    return agent_spec(name, runtime="external", **extra)


async def urls(coral: Coral, ns: str, sid: str, *names: str) -> list[str]:
    return [await coral.connection_url(ns, sid, n) for n in names]


async def test_tool_misuse_returns_clear_errors(coral: Coral) -> None:
    ns, sid = await coral.create_session(
        session_body([ext("a"), ext("b"), ext("c")], groups=[["a", "b"], ["c"]])
    )
    ua, uc = await urls(coral, ns, sid, "a", "c")
    async with connect(ua) as a, connect(uc) as c:
        thread = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]
        tid = thread["id"]
        cases: list[tuple[McpAgent, str, dict[str, Any], str]] = [
            (a, "coral_send_message", {"threadId": "nope", "content": "x", "mentions": []}, "not found"),
            (c, "coral_send_message", {"threadId": tid, "content": "x", "mentions": []}, "not a participant"),
            (
                a,
                "coral_send_message",
                {"threadId": tid, "content": "x", "mentions": ["a"]},
                "cannot mention itself",
            ),
            (
                a,
                "coral_send_message",
                {"threadId": tid, "content": "x", "mentions": ["zed"]},
                "not in this session",
            ),
            (
                a,
                "coral_send_message",
                {"threadId": tid, "content": "x", "mentions": ["c"]},
                "not a participant",
            ),
            (a, "coral_send_message", {"threadId": tid, "content": "x"}, "mentions"),
            (a, "coral_create_thread", {"threadName": "t2", "participantNames": ["c"]}, "not linked"),
            (a, "coral_create_thread", {"threadName": "t2"}, "participantNames"),
            (a, "coral_add_participant", {"threadId": tid, "participantName": "c"}, "not linked"),
            (a, "coral_wait_for_agent", {"agentName": "ghost", "maxWaitMs": 10}, "not in this session"),
            # Outside a's groups: the link rule of coral_create_thread, not "Timeout reached".
            (a, "coral_wait_for_agent", {"agentName": "c", "maxWaitMs": 10}, "not linked"),
            (a, "coral_wait_for_mention", {"maxWaitMs": "soon"}, "maxWaitMs"),
            (a, "coral_close_session", {"reason": "x"}, "not found"),
            (a, "no_such_tool", {}, "not found"),
        ]
        for agent, tool, args, expected in cases:
            is_error, payload = await agent.call(tool, **args)
            assert is_error, (tool, args, payload)
            assert expected in str(payload), (tool, args, payload)
        await a.ok("coral_close_thread", threadId=tid, summary="done")
        is_error, payload = await a.call("coral_send_message", threadId=tid, content="late", mentions=[])
        assert is_error and "closed" in str(payload)
    state = await coral.state(ns, sid)
    assert state["threads"][0]["state"] == {
        "state": "closed",
        "summary": "done",
        "timestamp": pytest.approx(state["threads"][0]["state"]["timestamp"]),
    }
    assert state["threads"][0]["messages"] == []


async def test_results_follow_reference_shapes(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    ua, ub = await urls(coral, ns, sid, "a", "b")
    async with connect(ua) as a, connect(ub) as b:
        result = await a.session.call_tool(
            "coral_create_thread", {"threadName": "x", "participantNames": ["b"]}
        )
        assert result.structured_content is not None and set(result.structured_content) == {"thread"}
        thread = result.structured_content["thread"]
        assert set(thread) == {"id", "name", "creatorName", "participants", "messages", "state", "timestamp"}
        assert thread["timestamp"].endswith("Z")  # ISO-8601 in MCP results
        sent = await a.ok("coral_send_message", threadId=thread["id"], content="m", mentions=["b"])
        assert set(sent["message"]) == {"id", "threadId", "text", "senderName", "mentionNames", "timestamp"}
        added = await a.ok("coral_remove_participant", threadId=thread["id"], participantName="b")
        assert added == {"message": f"Successfully removed participant b from thread {thread['id']}"}
        # b left the thread: its queued mention is dropped, so its wait times out.
        assert await b.ok("coral_wait_for_mention", maxWaitMs=50) == {"status": "Timeout reached"}


async def test_newcomer_gets_history_and_filters_work(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b"), ext("c")]))
    ua, ub, uc = await urls(coral, ns, sid, "a", "b", "c")
    async with connect(ua) as a, connect(ub) as b, connect(uc) as c:
        tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
        await a.ok("coral_send_message", threadId=tid, content="one", mentions=[])
        await b.ok("coral_send_message", threadId=tid, content="two", mentions=["a"])
        await a.ok("coral_add_participant", threadId=tid, participantName="c")
        # c joins late and still receives the history in order.
        got = [(await c.ok("coral_wait_for_message", maxWaitMs=500))["message"]["text"] for _ in range(2)]
        assert got == ["one", "two"]
        # wait_for_agent only returns the named sender's messages; others stay queued.
        await c.ok("coral_send_message", threadId=tid, content="from c", mentions=[])
        await b.ok("coral_send_message", threadId=tid, content="from b", mentions=[])
        from_b = await a.ok("coral_wait_for_agent", agentName="b", maxWaitMs=500)
        assert from_b["message"]["text"] in ("two", "from b")
        rest = [await a.ok("coral_wait_for_message", maxWaitMs=100) for _ in range(3)]
        texts = [r["message"]["text"] for r in rest if "message" in r]
        assert "from c" in texts


async def test_resources_describe_agent_links_and_threads(coral: Coral) -> None:
    ns, sid = await coral.create_session(
        session_body([ext("a", description="the planner"), ext("b", description="the doer")])
    )
    ua, ub = await urls(coral, ns, sid, "a", "b")
    async with connect(ua) as a, connect(ub) as b:
        listed = {str(r.uri) for r in (await a.session.list_resources()).resources}
        assert {"coral://instruction", "coral://state"} <= listed
        instruction = (await a.session.read_resource("coral://instruction")).contents[0]
        assert "coral_wait_for_mention" in instruction.text  # type: ignore[union-attr]
        tid = (await b.ok("coral_create_thread", threadName="plan", participantNames=["a"]))["thread"]["id"]
        await b.ok("coral_send_message", threadId=tid, content="ready?", mentions=["a"])
        state = (await a.session.read_resource("coral://state")).contents[0].text  # type: ignore[union-attr]
        assert "You are an agent named a" in state
        assert '"agentName": "b"' in state and "the doer" in state
        assert '"threadName": "plan"' in state and "ready?" in state


async def test_wrong_secret_is_refused(coral: Coral) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/mcp/v1/not-a-secret/mcp", "/mcp/v1/not-a-secret/sse/messages/?session_id=00"):
            async with http.post(
                coral.base_url + path, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
            ) as r:
                assert r.status == 401
        async with http.get(coral.base_url + "/mcp/v1/not-a-secret/sse") as r:
            assert r.status == 401


async def test_agent_cannot_use_another_agents_mcp_session(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    ua, ub = await urls(coral, ns, sid, "a", "b")
    async with aiohttp.ClientSession() as http:
        async with http.post(ua, json=INIT, headers=HEADERS) as r:
            assert r.status == 200
            a_session = r.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        hijack = {**HEADERS, "mcp-session-id": a_session, "mcp-protocol-version": "2025-06-18"}
        async with http.post(ub, json=call, headers=hijack) as r:
            assert r.status == 404
        async with http.post(ua, json=call, headers=hijack) as r:
            assert r.status == 200


@pytest.mark.parametrize("suffix", ["sse/", "sse", "sse/?agentId=whatever"])
async def test_sse_transport_variants(coral: Coral, suffix: str) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    ua, ub = await urls(coral, ns, sid, "a", "b")
    sse_url = ua.rsplit("/", 1)[0] + "/" + suffix
    async with connect(sse_url) as a, connect(ub) as b:
        tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
        await a.ok("coral_send_message", threadId=tid, content="over sse", mentions=["b"])
        got = await b.ok("coral_wait_for_mention", maxWaitMs=2000)
        assert got["message"]["text"] == "over sse"
        await b.ok("coral_send_message", threadId=tid, content="back", mentions=["a"])
        assert (await a.ok("coral_wait_for_mention", maxWaitMs=2000))["message"]["text"] == "back"
        assert (await coral.state(ns, sid))["agents"][0]["isConnected"] is True
    # The SSE stream is gone: the agent shows as disconnected.
    await coral.wait_for(ns, sid, lambda s: not s["agents"][0]["isConnected"], timeout=5)


async def test_close_session_plugin(coral: Coral) -> None:
    ns, sid = await coral.create_session(
        session_body([ext("boss", plugins=[{"type": "close_session_tool"}]), ext("worker")])
    )
    ub, uw = await urls(coral, ns, sid, "boss", "worker")
    async with connect(ub) as boss, connect(uw) as worker:
        assert "coral_close_session" in {t.name for t in (await boss.session.list_tools()).tools}
        assert "coral_close_session" not in {t.name for t in (await worker.session.list_tools()).tools}
        assert await boss.ok("coral_close_session", reason="done") == {
            "message": "Successfully closed session"
        }
        await coral.wait_gone(ns, sid)


async def test_blocking_agent_holds_its_group(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("early"), ext("gate", blocking=True)]))
    ue, ug = await urls(coral, ns, sid, "early", "gate")
    async with connect(ue) as early:
        pending = asyncio.create_task(
            early.ok("coral_create_thread", threadName="t", participantNames=["gate"])
        )
        # Proving that nothing happens for a while: the call is held (an unheld one returns in
        # milliseconds; a slow machine can only make this check weaker, never fail it falsely).
        await asyncio.sleep(0.3)
        assert not pending.done()  # held: the blocking agent has not connected
        async with connect(ug):
            created = await asyncio.wait_for(pending, 5)
        assert created["thread"]["participants"] == ["early", "gate"]
