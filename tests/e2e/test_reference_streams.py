"""Black-box: the reference server's event streams, as its console reads them.

`/ws/v1/events/lsm` (namespaces and sessions of the whole server), `/ws/v1/events/session/{ns}/{id}`
(one session, from now on) and `/ws/v1/logs` (agents' output), each also with the key as a path
segment. Each test checks the fields the console (v0.3.3) reads, on a real server with the official
MCP SDK client as agents.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until
from tests.e2e.mcp_client import connect
from tests.e2e.test_events import Event, next_event, read_to_end, read_until, sleeper

SESSION_EVENT_KEYS = {"type", "timestamp"}


def ext(name: str) -> dict[str, Any]:
    return agent_spec(name, runtime="external")


def ws(coral: Coral, path: str) -> str:
    return coral.base_url.replace("http://", "ws://") + path


@contextlib.asynccontextmanager
async def stream(coral: Coral, path: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with coral.http.ws_connect(ws(coral, path), headers=coral.headers) as sock:
        yield sock


def of(kind: str, **fields: Any) -> Any:
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


def iso(value: Any) -> datetime:
    """An ISO 8601 UTC timestamp, as the reference (and the console's `new Date(...)`) reads it."""
    assert isinstance(value, str) and value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_session_state(state: dict[str, Any], sid: str, ns: str, status: str) -> None:
    assert set(state) == {"id", "timestamp", "namespace", "status", "annotations"}, state
    assert (state["id"], state["namespace"], state["status"]["type"]) == (sid, ns, status)
    iso(state["timestamp"])


async def test_lsm_stream_follows_namespaces_and_sessions(coral: Coral) -> None:
    async with stream(coral, "/ws/v1/events/lsm?namespaceFilter=watched") as lsm:
        await coral.create_session(session_body([ext("x")], namespace="elsewhere"))
        body = session_body([ext("a")], namespace="watched")
        body["annotations"] = {"team": "blue"}
        ns, sid = await coral.create_session(body)
        seen = await read_until(lsm, of("session_running"))
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        seen += await read_until(lsm, of("namespace_closed"))
    assert [e["type"] for e in seen] == [
        "namespace_created",
        "session_created",
        "session_running",
        "session_closing",
        "session_closed",
        "namespace_closed",
    ]
    for event in seen:
        iso(event["timestamp"])
        assert "seq" not in event
    created, made, running, closing, closed, gone = seen
    watched = {"name": "watched", "deleteOnLastSessionExit": True, "annotations": {}}
    assert created["initialState"] == watched and gone["finalState"] == watched
    assert made["namespaceState"] == watched and closed["namespaceState"] == watched
    # Created, then launched: as the reference (whose deferred sessions wait between the two).
    check_session_state(made["initialSessionState"], sid, ns, "pending_execution")
    assert made["initialSessionState"]["annotations"] == {"team": "blue"}
    check_session_state(running["sessionState"], sid, ns, "executed")
    iso(running["sessionState"]["status"]["executionTime"])
    check_session_state(closing["sessionState"], sid, ns, "closing")
    check_session_state(closed["finalSessionState"], sid, ns, "closing")
    status = closed["finalSessionState"]["status"]
    assert iso(status["executionTime"]) <= iso(status["closingTime"])
    assert closed["reason"] == "deleted"


async def test_lsm_without_filter_sees_every_namespace_and_annotation_filters_apply(coral: Coral) -> None:
    wanted = base64.urlsafe_b64encode(json.dumps({"team": "red"}).encode()).decode().rstrip("=")
    async with (
        stream(coral, "/ws/v1/events/lsm") as everything,
        stream(coral, f"/ws/v1/events/lsm?namespaceAnnotationFilters={wanted}") as red_only,
    ):
        await coral.create_session(session_body([ext("a")], namespace="one"))
        blue = {"name": "blue", "annotations": {"team": "blue"}}
        red = {"name": "red", "deleteOnLastSessionExit": False, "annotations": {"team": "red", "x": "y"}}
        for namespace in (blue, red):
            status, out = await coral.request("POST", "/api/v1/local/namespace", namespace)
            assert status in (200, 201, 204), out
        body = session_body([ext("a")])
        body["namespaceProvider"] = {"type": "use_existing", "name": "red"}
        _, sid = await coral.create_session(body)
        seen = await read_until(everything, of("session_running"))
        seen = [e for e in seen if e["type"] != "session_running"] + await read_until(
            everything, lambda e: e["type"] == "session_running" and e["namespaceState"]["name"] == "red"
        )
        # Only the namespace with the annotation: the unannotated and the blue ones never come.
        reds = await read_until(red_only, of("session_running"))
    names = [(e["type"], (e.get("initialState") or e["namespaceState"])["name"]) for e in seen]
    assert ("namespace_created", "one") in names and ("namespace_created", "blue") in names
    assert [e["type"] for e in reds] == ["namespace_created", "session_created", "session_running"]
    assert reds[0]["initialState"] == {
        "name": "red",
        "deleteOnLastSessionExit": False,
        "annotations": {"team": "red", "x": "y"},
    }
    assert reds[1]["initialSessionState"]["id"] == sid and reds[1]["namespaceState"]["name"] == "red"


@pytest.mark.parametrize("bad", ["%%%", base64.urlsafe_b64encode(b"[1]").decode()])
async def test_lsm_bad_annotation_filter_is_400(coral: Coral, bad: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with stream(coral, f"/ws/v1/events/lsm?namespaceAnnotationFilters={bad}"):
            pass
    assert info.value.status == 400


async def test_session_stream_in_the_reference_shape(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b"), ext("c")]))
    ua, ub = [await coral.connection_url(ns, sid, n) for n in ("a", "b")]
    async with stream(coral, f"/ws/v1/events/session/{ns}/{sid}") as sock:
        async with connect(ua) as a, connect(ub) as b:
            seen = await read_until(sock, of("agent_connected", name="b"))
            tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
            waiting = asyncio.create_task(b.ok("coral_wait_for_mention", maxWaitMs=10_000))
            seen += await read_until(sock, of("agent_wait_start", name="b"))
            await a.ok("coral_send_message", threadId=tid, content="hi b", mentions=["b"])
            seen += await read_until(sock, of("agent_wait_stop", name="b"))
            assert (await waiting)["message"]["text"] == "hi b"
            await a.ok("coral_add_participant", threadId=tid, participantName="c")
            await a.ok("coral_remove_participant", threadId=tid, participantName="c")
            await a.ok("coral_close_thread", threadId=tid, summary="all done")
            seen += await read_until(sock, of("thread_closed"))
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        seen += await read_to_end(sock)  # the stream ends with the session
    by_type: dict[str, Event] = {}
    for event in seen:
        assert "seq" not in event and event["type"] != "snapshot"
        iso(event["timestamp"])
        by_type.setdefault(event["type"], event)
    assert {e["name"] for e in seen if e["type"] == "agent_connected"} == {"a", "b"}
    thread = by_type["thread_created"]["thread"]
    assert set(thread) == {"id", "name", "creatorName", "participants", "messages", "state", "timestamp"}
    assert (thread["id"], thread["name"], thread["creatorName"]) == (tid, "t", "a")
    assert thread["participants"] == ["a", "b"] and thread["messages"] == []
    assert thread["state"] == {"state": "open"}
    iso(thread["timestamp"])
    message = by_type["thread_message_sent"]["message"]
    assert set(message) == {"id", "threadId", "text", "senderName", "mentionNames", "timestamp"}
    assert (message["threadId"], message["text"], message["senderName"]) == (tid, "hi b", "a")
    assert message["mentionNames"] == ["b"]
    iso(message["timestamp"])
    stop = next(e for e in seen if e["type"] == "agent_wait_stop" and e["name"] == "b")
    assert stop["message"]["id"] == message["id"]
    added, removed = by_type["thread_participant_added"], by_type["thread_participant_removed"]
    assert (added["threadId"], added["name"]) == (tid, "c")
    assert (removed["threadId"], removed["name"]) == (tid, "c")
    closed = by_type["thread_closed"]
    assert set(closed) == SESSION_EVENT_KEYS | {"threadId", "summary"}
    assert (closed["threadId"], closed["summary"]) == (tid, "all done")
    assert seen[-1]["type"] == "session_closed"


async def test_session_stream_reports_runtimes(coral: Coral, tmp_path: Path) -> None:
    await coral.warm_python_agents()
    body = session_body(
        [sleeper("s", tmp_path / "s.pid", EXIT_AFTER_S=2.0), ext("me")],
        persistenceMode={"mode": "hold_after_exit", "duration": 5000},
    )
    ns, sid = await coral.create_session(body)
    async with stream(coral, f"/ws/v1/events/session/{ns}/{sid}") as sock:
        # It may have started before the stream opened: then the state says so.
        state = await coral.state(ns, sid)
        started = next(a for a in state["agents"] if a["name"] == "s")["status"] == "running"
        seen = await read_until(sock, of("runtime_stopped", name="s"))
    if not started:
        assert any(e["type"] == "runtime_started" and e["name"] == "s" for e in seen)
    stopped = seen[-1]
    assert stopped["name"] == "s" and stopped["exitCode"] == 7
    iso(stopped["timestamp"])


async def test_session_stream_404s_for_an_unknown_session(coral: Coral) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with stream(coral, "/ws/v1/events/session/nope/missing"):
            pass
    assert info.value.status == 404


async def test_reference_streams_take_the_key_in_the_path(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=("k1",)):
        ns, sid = await coral.create_session(session_body([ext("a")]))
        for path in (f"/ws/v1/events/session/{ns}/{sid}", "/ws/v1/events/lsm", "/ws/v1/logs"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await coral.http.ws_connect(ws(coral, path))
            assert info.value.status == 401, path
        tokened = (f"/ws/v1/events/{{}}/session/{ns}/{sid}", "/ws/v1/events/{}/lsm", "/ws/v1/logs/{}")
        for template in tokened:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await coral.http.ws_connect(ws(coral, template.format("wrong")))
            assert info.value.status == 401, template
        async with (
            coral.http.ws_connect(ws(coral, tokened[0].format("k1"))) as session_events,
            coral.http.ws_connect(ws(coral, tokened[1].format("k1"))) as lsm,
            coral.http.ws_connect(ws(coral, tokened[2].format("k1"))),
        ):
            assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
            assert (await read_to_end(session_events))[-1]["type"] == "session_closed"
            assert (await read_until(lsm, of("session_closed")))[-1]["finalSessionState"]["id"] == sid


async def test_logs_stream_replays_then_follows_an_agents_output(coral: Coral, tmp_path: Path) -> None:
    await coral.warm_python_agents()
    body = session_body(
        [sleeper("s", tmp_path / "s.pid"), sleeper("t", tmp_path / "t.pid")],
        persistenceMode={"mode": "hold_after_exit", "duration": 5000},
    )
    ns, sid = await coral.create_session(body)

    async def printed(agent: str) -> bool:
        status, out = await coral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/{agent}/logs?tail=10")
        return status == 200 and len(out["lines"]) == 2

    await wait_until(lambda: printed("s"), what="s printed its two lines")
    await wait_until(lambda: printed("t"), what="t printed its two lines")

    async def lines(query: str, count: int) -> list[Event]:
        async with stream(coral, f"/ws/v1/logs?{query}") as sock:
            return [e for _ in range(count) if (e := await next_event(sock)) is not None]

    # Both lines of s, printed before the stream opened: it replays what is buffered.
    replayed = await lines(f"sessionFilter={sid}&agentFilter=s", 2)
    assert {(e["type"], e["text"]) for e in replayed} == {
        ("info", "sleeper started"),
        ("warning", "sleeper stderr line"),
    }
    for event in replayed:
        assert set(event) == {"type", "timestamp", "text", "tags"}
        iso(event["timestamp"])
        tags = {t["type"]: t for t in event["tags"]}
        assert tags["session"]["sessionId"] == sid and tags["agent"]["name"] == "s"
        assert tags["namespace"]["namespace"] == ns
    # limit keeps the newest; another agent's lines and other namespaces are filtered out.
    [last] = await lines(f"namespaceFilter={ns}&sessionFilter={sid}&agentFilter=t&limit=1", 1)
    assert last["text"] in ("sleeper started", "sleeper stderr line")
    assert {t["type"]: t for t in last["tags"]}["agent"]["name"] == "t"
    async with stream(coral, "/ws/v1/logs?namespaceFilter=other") as sock:
        with pytest.raises(TimeoutError):
            await next_event(sock, timeout=0.5)


async def test_logs_stream_never_carries_secrets(coral: Coral) -> None:
    options = {
        "NAME": {"type": "string", "value": "abc"},
        "TOKEN": {"type": "secret", "value": "s3cr3t-value"},
    }
    async with stream(coral, "/ws/v1/logs?namespaceFilter=secrets") as sock:
        ns, sid = await coral.create_session(
            session_body([agent_spec("o", "opts", version="1.0.0", options=options)], namespace="secrets")
        )
        events = await read_until(sock, lambda e: e["text"].startswith("CONNECTION_URL_OK="))
    texts = [e["text"] for e in events]
    assert "TOKEN_ECHO=***" in texts and "TOKEN_LEN=12" in texts  # printed, and redacted
    assert "s3cr3t-value" not in json.dumps(events)
    assert all({t["type"]: t for t in e["tags"]}["session"]["sessionId"] == sid for e in events)
    assert ns == "secrets"


async def test_the_consoles_sockets_get_in_with_the_login_cookie(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=("k1",)):
        ns, sid = await coral.create_session(session_body([ext("a")]))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            login = coral.base_url + "/api/v1/auth/token"
            async with browser.post(login, data={"token": "k1"}, allow_redirects=False) as resp:
                assert resp.status == 303
            base = ws(coral, "")
            async with (
                browser.ws_connect(f"{base}/ws/v1/events/session/{ns}/{sid}") as session_events,
                browser.ws_connect(f"{base}/ws/v1/events/lsm?namespaceFilter={ns}") as lsm,
                browser.ws_connect(f"{base}/ws/v1/logs?sessionFilter={sid}"),
            ):
                assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
                assert (await read_to_end(session_events))[-1]["type"] == "session_closed"
                assert (await read_until(lsm, of("session_closed")))[-1]["finalSessionState"]["id"] == sid
