"""Black-box: an app acting as one of a session's agents over HTTP (the human in the loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Coral, agent_spec, session_body
from tests.e2e.mcp_client import connect
from tests.e2e.test_events import of_type, read_until, ws_stream


def puppet(ns: str, sid: str, agent: str, tail: str = "") -> str:
    return f"/api/v1/puppet/{ns}/{sid}/{agent}{tail}"


async def test_a_human_converses_with_a_real_agent(coral: Coral) -> None:
    agents = [agent_spec("human", runtime="external"), agent_spec("echo")]
    ns, sid = await coral.create_session(session_body(agents))
    await coral.wait_for(ns, sid, lambda s: s["agents"][1]["isConnected"])
    async with ws_stream(coral, ns, sid) as ws:
        status, created = await coral.request(
            "POST",
            puppet(ns, sid, "human", "/thread"),
            {"threadName": "review", "participantNames": ["echo"]},
        )
        assert status == 200, created
        thread = created["thread"]
        assert thread["creatorName"] == "human" and thread["participants"] == ["human", "echo"]
        status, sent = await coral.request(
            "POST",
            puppet(ns, sid, "human", "/thread/message"),
            {"threadId": thread["id"], "content": "ship it?", "mentions": ["echo"]},
        )
        assert status == 200, sent
        message = sent["message"]
        assert (message["senderName"], message["text"], message["mentionNames"]) == (
            "human",
            "ship it?",
            ["echo"],
        )
        # The echo process was woken by the mention and answered the puppeted agent.
        await read_until(
            ws, lambda e: e["type"] == "thread_message_sent" and e["message"]["senderName"] == "echo"
        )
        status, closed = await coral.request(
            "DELETE", puppet(ns, sid, "human", "/thread"), {"threadId": thread["id"], "summary": "shipped"}
        )
        assert status == 200 and closed["thread"]["state"]["state"] == "closed"
        await read_until(ws, of_type("thread_closed", threadId=thread["id"], summary="shipped"))
    state = await coral.state(ns, sid)
    texts = [(m["senderName"], m["text"]) for m in state["threads"][0]["messages"]]
    assert texts == [("human", "ship it?"), ("echo", "echo: ship it?")]


async def test_an_mcp_agent_receives_a_puppets_mention(coral: Coral) -> None:
    agents = [agent_spec("human", runtime="external"), agent_spec("bot", runtime="external")]
    ns, sid = await coral.create_session(session_body(agents))
    async with connect(await coral.connection_url(ns, sid, "bot")) as bot:
        _, created = await coral.request(
            "POST", puppet(ns, sid, "human", "/thread"), {"threadName": "t", "participantNames": ["bot"]}
        )
        await coral.request(
            "POST",
            puppet(ns, sid, "human", "/thread/message"),
            {"threadId": created["thread"]["id"], "content": "hi bot", "mentions": ["bot"]},
        )
        got = await bot.ok("coral_wait_for_mention", maxWaitMs=5000)
        assert got["message"]["senderName"] == "human" and got["message"]["text"] == "hi bot"


async def test_participants_can_be_added_and_removed(coral: Coral) -> None:
    names = ["human", "a", "b"]
    ns, sid = await coral.create_session(session_body([agent_spec(n, runtime="external") for n in names]))
    _, created = await coral.request(
        "POST", puppet(ns, sid, "human", "/thread"), {"threadName": "t", "participantNames": ["a"]}
    )
    body = {"threadId": created["thread"]["id"], "participantName": "b"}
    status, added = await coral.request("POST", puppet(ns, sid, "human", "/thread/participant"), body)
    assert status == 200 and added["thread"]["participants"] == ["human", "a", "b"]
    status, removed = await coral.request("DELETE", puppet(ns, sid, "human", "/thread/participant"), body)
    assert status == 200 and removed["thread"]["participants"] == ["human", "a"]


async def test_stopping_an_agent(coral: Coral, tmp_path: Path) -> None:
    sleeper = agent_spec(
        "sleepy",
        "sleeper",
        options={
            "PID_FILE": {"type": "string", "value": str(tmp_path / "p")},
            "IGNORE_TERM": {"type": "bool", "value": False},
        },
    )
    ns, sid = await coral.create_session(
        session_body([sleeper, agent_spec("human", runtime="external"), agent_spec("echo")])
    )
    await coral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] == "running")
    status, stopped = await coral.request("DELETE", puppet(ns, sid, "sleepy"))
    agent = stopped["agent"]
    assert status == 200 and agent["status"] == "exited" and agent["name"] == "sleepy"
    state = await coral.state(ns, sid)
    assert not state["closing"] and state["agents"][2]["status"] == "running"  # the others go on
    status, _ = await coral.request("DELETE", puppet(ns, sid, "sleepy"))
    assert status == 200  # stopping a stopped agent changes nothing


@pytest.mark.parametrize(
    ("tail", "method", "body", "status", "field"),
    [
        ("/thread", "POST", {"participantNames": []}, 400, "threadName"),
        ("/thread", "POST", {"threadName": "", "participantNames": []}, 400, "threadName"),
        ("/thread", "POST", {"threadName": "t", "participantNames": "a"}, 400, "participantNames"),
        ("/thread/message", "POST", {"threadId": "x"}, 400, "content"),
        ("/thread/message", "POST", [1, 2], 400, "(body)"),
        ("/thread", "DELETE", {}, 400, "threadId"),
        ("/thread/participant", "POST", {"threadId": "x"}, 400, "participantName"),
    ],
)
async def test_bad_bodies_are_400s_naming_the_field(
    coral: Coral, tail: str, method: str, body: Any, status: int, field: str
) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("human", runtime="external")]))
    got, out = await coral.request(method, puppet(ns, sid, "human", tail), body)
    assert got == status and out["errors"][0]["field"] == field, out


async def test_rules_and_lookups(coral: Coral) -> None:
    agents = [agent_spec(n, runtime="external") for n in ("human", "a", "loner")]
    hold = {"mode": "hold_after_exit", "duration": 5000}
    ns, sid = await coral.create_session(session_body(agents, groups=[["human", "a"]], persistenceMode=hold))
    status, out = await coral.request("POST", puppet(ns, sid, "ghost", "/thread"), {"threadName": "t"})
    assert status == 404 and "ghost" in out["message"]
    status, out = await coral.request("POST", puppet(ns, "nope", "human", "/thread"), {"threadName": "t"})
    assert status == 404
    status, out = await coral.request(
        "POST", puppet(ns, sid, "human", "/thread"), {"threadName": "t", "participantNames": ["loner"]}
    )
    assert status == 400 and "loner" in out["message"]  # not linked to the puppeted agent
    _, created = await coral.request(
        "POST", puppet(ns, sid, "human", "/thread"), {"threadName": "t", "participantNames": ["a"]}
    )
    thread = created["thread"]
    message = {"threadId": thread["id"], "content": "x", "mentions": []}
    status, out = await coral.request("POST", puppet(ns, sid, "loner", "/thread/message"), message)
    assert status == 400  # not a participant
    status, out = await coral.request(
        "POST", puppet(ns, sid, "human", "/thread/message"), {**message, "threadId": "zz"}
    )
    assert status == 404
    await coral.request("DELETE", puppet(ns, sid, "human", "/thread"), {"threadId": thread["id"]})
    status, out = await coral.request("POST", puppet(ns, sid, "a", "/thread/message"), message)
    assert status == 400 and "closed" in out["message"]
    await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    status, out = await coral.request("POST", puppet(ns, sid, "human", "/thread"), {"threadName": "late"})
    assert status == 409  # the session is closed (still readable for its hold time)
