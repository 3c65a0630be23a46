"""Black-box: the puppet routes answer in the reference server's shapes, field by field."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import Coral, agent_spec, session_body

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
THREAD_KEYS = {"id", "name", "creatorName", "participants", "messages", "state", "timestamp"}
MESSAGE_KEYS = {"id", "threadId", "text", "senderName", "mentionNames", "timestamp"}


def puppet(ns: str, sid: str, agent: str, tail: str = "") -> str:
    return f"/api/v1/puppet/{ns}/{sid}/{agent}{tail}"


def reference_thread(answer: Any) -> dict[str, Any]:
    """`{thread}` and nothing else; the thread has exactly the reference's fields."""
    assert set(answer) == {"thread"}, answer
    thread: dict[str, Any] = answer["thread"]
    assert set(thread) == THREAD_KEYS, thread
    assert ISO.match(thread["timestamp"]), thread
    return thread


async def test_every_puppet_answer_has_the_reference_shape(coral: Coral) -> None:
    names = ["human", "a", "b"]
    ns, sid = await coral.create_session(session_body([agent_spec(n, runtime="external") for n in names]))
    status, created = await coral.request(
        "POST", puppet(ns, sid, "human", "/thread"), {"threadName": "plan", "participantNames": ["a"]}
    )
    assert status == 200, created
    thread = reference_thread(created)
    assert (thread["name"], thread["creatorName"], thread["participants"]) == (
        "plan",
        "human",
        ["human", "a"],
    )
    assert thread["state"] == {"state": "open"} and thread["messages"] == []
    tid = thread["id"]

    body = {"threadId": tid, "content": "your turn", "mentions": ["a"]}
    status, sent = await coral.request("POST", puppet(ns, sid, "human", "/thread/message"), body)
    assert status == 200, sent
    assert set(sent) == {"status", "message"} and sent["status"] == "Message sent successfully"
    message = sent["message"]
    assert set(message) == MESSAGE_KEYS and ISO.match(message["timestamp"])
    assert (message["threadId"], message["text"], message["senderName"], message["mentionNames"]) == (
        tid,
        "your turn",
        "human",
        ["a"],
    )

    joining = {"threadId": tid, "participantName": "b"}
    status, added = await coral.request("POST", puppet(ns, sid, "human", "/thread/participant"), joining)
    assert status == 200 and reference_thread(added)["participants"] == ["human", "a", "b"]
    status, removed = await coral.request("DELETE", puppet(ns, sid, "human", "/thread/participant"), joining)
    assert status == 200 and reference_thread(removed)["participants"] == ["human", "a"]

    closing = {"threadId": tid, "summary": "agreed"}
    status, closed = await coral.request("DELETE", puppet(ns, sid, "human", "/thread"), closing)
    assert status == 200, closed
    state = reference_thread(closed)["state"]
    assert set(state) == {"state", "summary", "timestamp"}, state
    assert (state["state"], state["summary"]) == ("closed", "agreed") and ISO.match(state["timestamp"])
    assert [m["id"] for m in closed["thread"]["messages"]] == [message["id"]]

    status, stopped = await coral.request("DELETE", puppet(ns, sid, "a"))
    assert status == 200 and set(stopped) == {"agent"} and stopped["agent"]["name"] == "a"


async def test_errors_have_the_reference_status_and_message(coral: Coral) -> None:
    names = ["human", "a", "b"]
    ns, sid = await coral.create_session(session_body([agent_spec(n, runtime="external") for n in names]))

    async def call(method: str, agent: str, tail: str, body: Any) -> tuple[int, Any]:
        return await coral.request(method, puppet(ns, sid, agent, tail), body)

    _, created = await call("POST", "human", "/thread", {"threadName": "t", "participantNames": ["a"]})
    tid = created["thread"]["id"]
    cases: list[tuple[str, str, str, Any, int]] = [
        ("POST", "ghost", "/thread", {"threadName": "t", "participantNames": []}, 404),  # no such agent
        ("POST", "human", "/thread", {"threadName": "t", "participantNames": ["ghost"]}, 404),
        ("POST", "human", "/thread/message", {"threadId": "zz", "content": "x", "mentions": []}, 404),
        ("POST", "human", "/thread/participant", {"threadId": tid, "participantName": "ghost"}, 404),
        # mentioning an agent of the session that is not in the thread: 404, as the reference
        ("POST", "human", "/thread/message", {"threadId": tid, "content": "x", "mentions": ["b"]}, 404),
        ("POST", "human", "/thread/message", {"threadId": tid, "content": "x", "mentions": ["human"]}, 400),
        ("DELETE", "human", "/thread", {"threadId": "zz", "summary": "s"}, 404),
        ("POST", "human", "/thread/participant", {"threadId": "zz", "participantName": "b"}, 404),
        ("DELETE", "human", "/thread/participant", {"threadId": tid, "participantName": "b"}, 400),
    ]
    for method, agent, tail, body, want in cases:
        status, out = await call(method, agent, tail, body)
        assert status == want, (method, agent, tail, body, out)
        assert isinstance(out["message"], str) and out["message"], out  # the reference's error field
    status, out = await coral.request("POST", puppet(ns, "nope", "human", "/thread"), {"threadName": "t"})
    assert status == 404 and out["message"]
    assert (await call("DELETE", "human", "/thread", {"threadId": tid, "summary": "s"}))[0] == 200
    status, out = await call("DELETE", "human", "/thread", {"threadId": tid, "summary": "again"})
    assert status == 400 and "closed" in out["message"]  # closing a closed thread
