"""Black-box: sessions created over HTTP, agents talking over MCP with the official client."""

from __future__ import annotations

import asyncio

from tests.conftest import Coral, agent_spec, session_body
from tests.e2e.mcp_client import connect


async def test_two_external_agents_mention_each_other(coral: Coral) -> None:
    ns, sid = await coral.create_session(
        session_body([agent_spec("alice", runtime="external"), agent_spec("bob", runtime="external")])
    )
    url_a = await coral.connection_url(ns, sid, "alice")
    url_b = await coral.connection_url(ns, sid, "bob")
    async with connect(url_a) as alice, connect(url_b) as bob:
        tools = {t.name for t in (await alice.session.list_tools()).tools}
        assert "coral_send_message" in tools and "coral_close_session" not in tools
        created = await alice.ok("coral_create_thread", threadName="plans", participantNames=["bob"])
        thread = created["thread"]
        assert thread["participants"] == ["alice", "bob"]
        # Sent before bob waits: still delivered by his next wait.
        sent = await alice.ok("coral_send_message", threadId=thread["id"], content="hi bob", mentions=["bob"])
        assert sent["status"] == "Message sent successfully"
        got = await bob.ok("coral_wait_for_mention", maxWaitMs=2000)
        assert got["status"] == "Message received"
        assert got["message"]["text"] == "hi bob" and got["message"]["senderName"] == "alice"
        # A blocking wait is woken by a later mention.
        waiter = asyncio.create_task(alice.ok("coral_wait_for_mention", maxWaitMs=5000))
        await coral.wait_for(
            ns, sid, lambda s: any(a["isWaiting"] for a in s["agents"] if a["name"] == "alice")
        )
        await bob.ok("coral_send_message", threadId=thread["id"], content="hi alice", mentions=["alice"])
        answer = await asyncio.wait_for(waiter, 5)
        assert answer["message"]["text"] == "hi alice"
        state = await coral.state(ns, sid)
        assert [a["isConnected"] for a in state["agents"]] == [True, True]
        texts = [m["text"] for m in state["threads"][0]["messages"]]
        assert texts == ["hi bob", "hi alice"]
        assert state["threads"][0]["messages"][0]["mentionNames"] == ["bob"]
        assert isinstance(state["threads"][0]["messages"][0]["timestamp"], int)


async def test_wait_times_out_without_error(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("solo", runtime="external")]))
    async with connect(await coral.connection_url(ns, sid, "solo")) as solo:
        is_error, payload = await solo.call("coral_wait_for_mention", maxWaitMs=50)
        assert not is_error
        assert payload == {"status": "Timeout reached"}
