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
    # Both clients ended their MCP sessions (DELETE on exit): no longer connected.
    state = await coral.wait_for(ns, sid, lambda s: not any(a["isConnected"] for a in s["agents"]))
    assert [a["status"] for a in state["agents"]] == ["running", "running"]


async def test_wait_times_out_without_error(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("solo", runtime="external")]))
    async with connect(await coral.connection_url(ns, sid, "solo")) as solo:
        is_error, payload = await solo.call("coral_wait_for_mention", maxWaitMs=50)
        assert not is_error
        assert payload == {"status": "Timeout reached"}


async def test_reference_minimal_example_adapted(coral: Coral) -> None:
    """The Coral Cloud document's minimal request, with a bundled agent and a local process."""
    body = {
        "agentGraphRequest": {
            "agents": [
                {
                    "id": {"name": "echo", "version": "0.1.0", "source": "local"},
                    "name": "writer",
                    "provider": {"type": "local", "runtime": "executable"},
                }
            ]
        },
        "namespaceProvider": {
            "type": "create_if_not_exists",
            "namespaceRequest": {"name": "default", "deleteOnLastSessionExit": True},
        },
        "execution": {
            "mode": "immediate",
            "runtimeSettings": {"persistenceMode": {"type": "HoldAfterExit", "holdTime": 5000}},
        },
    }
    status, out = await coral.request("POST", "/api/v1/local/session", body)
    assert status == 200 and set(out) == {"namespace", "sessionId"} and out["namespace"] == "default"
    sid = out["sessionId"]
    state = await coral.wait_for("default", sid, lambda s: s["agents"][0]["isConnected"])
    agent = state["agents"][0]
    assert agent["registryAgentIdentifier"] == {"name": "echo", "version": "0.1.0", "source": "local"}
    assert agent["links"] == [] and agent["status"] == "running"
    status, listing = await coral.request("GET", "/api/v1/session")
    assert status == 200
    assert {"namespace": "default", "sessions": [{"sessionId": sid, "closing": False}]} in listing
    status, in_ns = await coral.request("GET", "/api/v1/session/default")
    assert in_ns == [{"sessionId": sid, "closing": False}]
    status, _ = await coral.request("DELETE", f"/api/v1/session/default/{sid}")
    assert status == 200
    # Closed, held for 5 s: readable with closing=true and the agent stopped.
    state = await coral.state("default", sid)
    assert state["closing"] is True and state["agents"][0]["status"] == "exited"
    assert state["agents"][0]["isConnected"] is False
