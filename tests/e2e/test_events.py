"""Black-box: live session events over WebSocket and SSE (snapshot, changes, resume, auth, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import WAIT_S, Coral, agent_spec, session_body, start_coral
from tests.e2e.mcp_client import connect

Event = dict[str, Any]


def ext(name: str, **extra: Any) -> dict[str, Any]:
    return agent_spec(name, runtime="external", **extra)


def ws_url(coral: Coral, ns: str, sid: str, query: str = "") -> str:
    return coral.base_url.replace("http://", "ws://") + f"/ws/v1/events/{ns}/{sid}{query}"


@contextlib.asynccontextmanager
async def ws_stream(
    coral: Coral, ns: str, sid: str, query: str = "", http: aiohttp.ClientSession | None = None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (http or coral.http).ws_connect(ws_url(coral, ns, sid, query), headers=coral.headers) as ws:
        yield ws


async def next_event(ws: aiohttp.ClientWebSocketResponse, timeout: float = WAIT_S) -> Event | None:
    """The next event, or None once the server has closed the stream."""
    msg = await ws.receive(timeout=timeout)
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        return None
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[Event], bool], timeout: float = WAIT_S
) -> list[Event]:
    """Events up to and including the first one `done` accepts."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await next_event(ws)
            assert event is not None, f"stream ended early after {[e['type'] for e in events]}"
            events.append(event)
            if done(event):
                return events


async def read_to_end(ws: aiohttp.ClientWebSocketResponse, timeout: float = WAIT_S) -> list[Event]:
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while (event := await next_event(ws)) is not None:
            events.append(event)
    return events


def of_type(kind: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


def assert_contiguous(events: list[Event], after: int) -> None:
    assert [e["seq"] for e in events] == list(range(after + 1, after + 1 + len(events)))


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """Parse a text/event-stream body into events, checking `id:` and `event:` against the data."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
            continue
        if "data" in fields:
            event = json.loads(fields["data"])
            assert int(fields["id"]) == event["seq"] and fields["event"] == event["type"]
            yield event
        fields = {}


async def sse_read(
    coral: Coral, ns: str, sid: str, headers: dict[str, str], query: str = "", stop: str = "session_closed"
) -> list[Event]:
    events: list[Event] = []
    url = f"{coral.base_url}/api/v1/events/{ns}/{sid}{query}"
    async with asyncio.timeout(WAIT_S), coral.http.get(url, headers={**coral.headers, **headers}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        async for event in sse_events(resp):
            events.append(event)
            if event["type"] == stop:
                break
    return events


async def test_ws_snapshot_then_every_change_until_delete(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b"), ext("c")]))
    ua, ub = [await coral.connection_url(ns, sid, n) for n in ("a", "b")]
    async with ws_stream(coral, ns, sid) as ws:
        snapshot = await next_event(ws)
        assert snapshot is not None and snapshot["type"] == "snapshot"
        base = snapshot["seq"]
        assert base >= 1  # at least session_created is in it
        state = await coral.state(ns, sid)
        assert {k: v for k, v in snapshot.items() if k not in ("seq", "type")} == state
        seen: list[Event] = []
        async with connect(ua) as a, connect(ub) as b:
            seen += await read_until(ws, of_type("agent_connected", name="b"))
            tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
            seen += await read_until(ws, of_type("thread_created"))
            assert seen[-1]["thread"]["participants"] == ["a", "b"] and seen[-1]["thread"]["id"] == tid
            assert seen[-1]["thread"]["state"] == {"state": "open"}
            waiting = asyncio.create_task(b.ok("coral_wait_for_mention", maxWaitMs=5000))
            seen += await read_until(ws, of_type("agent_wait_start", name="b"))
            await a.ok("coral_send_message", threadId=tid, content="hi b", mentions=["b"])
            seen += await read_until(ws, of_type("agent_wait_stop", name="b"))
            assert (await waiting)["message"]["text"] == "hi b"
            await a.ok("coral_add_participant", threadId=tid, participantName="c")
            await a.ok("coral_remove_participant", threadId=tid, participantName="c")
            await a.ok("coral_close_thread", threadId=tid, summary="all done")
            seen += await read_until(ws, of_type("thread_closed"))
        status, _ = await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
        assert status == 200
        seen += await read_to_end(ws)
    assert_contiguous(seen, base)
    kinds = [e["type"] for e in seen]
    sent = next(e for e in seen if e["type"] == "thread_message_sent")["message"]
    assert sent["text"] == "hi b" and sent["senderName"] == "a" and sent["mentionNames"] == ["b"]
    assert isinstance(sent["timestamp"], int) and sent["threadId"] == tid
    # Delivery follows the message: b stops waiting only after thread_message_sent.
    assert kinds.index("thread_message_sent") < max(
        i for i, e in enumerate(seen) if e["type"] == "agent_wait_stop"
    )
    assert [
        (e["type"], e["name"])
        for e in seen
        if e["type"] in ("thread_participant_added", "thread_participant_removed")
    ] == [("thread_participant_added", "c"), ("thread_participant_removed", "c")]
    assert next(e for e in seen if e["type"] == "thread_closed") | {"seq": 0, "timestamp": 0} == {
        "seq": 0,
        "type": "thread_closed",
        "timestamp": 0,
        "threadId": tid,
        "summary": "all done",
    }
    assert kinds[-1] == "session_closed" and seen[-1]["reason"] == "deleted"
    assert "session_closing" in kinds and kinds.index("session_closing") < kinds.index("session_closed")
    assert {e["name"] for e in seen if e["type"] == "agent_disconnected"} == {"a", "b"}
    assert {e["name"] for e in seen if e["type"] == "runtime_stopped"} == {"a", "b", "c"}
    assert all(isinstance(e["timestamp"], int) for e in seen)


async def test_mid_session_snapshot_and_events_have_no_gap_or_duplicate(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    ua, ub = [await coral.connection_url(ns, sid, n) for n in ("a", "b")]
    total = 60
    texts = [f"m{i}" for i in range(total)]
    async with connect(ua) as a, connect(ub):
        tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
        some_sent = asyncio.Event()

        async def chatter() -> None:
            for i, text in enumerate(texts):
                await a.ok("coral_send_message", threadId=tid, content=text, mentions=[])
                if i == 10:
                    some_sent.set()

        sender = asyncio.create_task(chatter())
        await asyncio.wait_for(some_sent.wait(), 10)
        async with ws_stream(coral, ns, sid) as ws:  # connects while messages keep coming
            snapshot = await next_event(ws)
            assert snapshot is not None and snapshot["type"] == "snapshot"
            events = await read_until(
                ws, lambda e: e["type"] == "thread_message_sent" and e["message"]["text"] == "m59"
            )
        await sender
    assert_contiguous(events, snapshot["seq"])
    before = [m["text"] for m in snapshot["threads"][0]["messages"]]
    after = [e["message"]["text"] for e in events if e["type"] == "thread_message_sent"]
    assert len(before) >= 11
    assert before + after == texts


async def test_resume_with_after_and_last_event_id_replays_exactly_what_was_missed(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    ua, ub = [await coral.connection_url(ns, sid, n) for n in ("a", "b")]
    async with connect(ua) as a, connect(ub):
        tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
        async with ws_stream(coral, ns, sid) as ws:
            snapshot = await next_event(ws)
            assert snapshot is not None
            await a.ok("coral_send_message", threadId=tid, content="seen", mentions=[])
            seen = await read_until(ws, of_type("thread_message_sent"))
        last = seen[-1]["seq"]
        # Disconnected: these happen while nobody watches.
        for text in ("missed 1", "missed 2", "missed 3"):
            await a.ok("coral_send_message", threadId=tid, content=text, mentions=[])
        async with ws_stream(coral, ns, sid, f"?after={last}") as ws:
            replay = await read_until(ws, lambda e: e.get("message", {}).get("text") == "missed 3")
        assert replay[0]["type"] != "snapshot"
        assert_contiguous(replay, last)
        assert [e["message"]["text"] for e in replay if e["type"] == "thread_message_sent"] == [
            "missed 1",
            "missed 2",
            "missed 3",
        ]
        # The same resume over SSE, the way EventSource does it (Last-Event-ID wins over ?after).
        sse = await sse_read(
            coral, ns, sid, {"Last-Event-ID": str(last)}, query="?after=1", stop="thread_message_sent"
        )
        assert sse[0]["seq"] == last + 1 and sse[-1]["message"]["text"] == "missed 1"
        # A resume point the server never issued gets a fresh snapshot instead.
        async with ws_stream(coral, ns, sid, "?after=999999") as ws:
            fresh = await next_event(ws)
        assert fresh is not None and fresh["type"] == "snapshot" and fresh["seq"] == replay[-1]["seq"]
        # A bad resume point is a 400, before any upgrade.
        status, body = await coral.request("GET", f"/api/v1/events/{ns}/{sid}?after=soon")
        assert status == 400 and body["errors"][0]["field"] == "after"


async def test_sse_stream_and_type_filter(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    ua, ub = [await coral.connection_url(ns, sid, n) for n in ("a", "b")]
    url = f"{coral.base_url}/api/v1/events/{ns}/{sid}?types=thread_message_sent,session_closed"
    async with connect(ua) as a, connect(ub), coral.http.get(url, headers=coral.headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        stream = sse_events(resp)
        snapshot = await anext(stream)
        assert snapshot["type"] == "snapshot" and [a["name"] for a in snapshot["agents"]] == ["a", "b"]
        tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]
        await a.ok("coral_send_message", threadId=tid, content="one", mentions=["b"])
        event = await asyncio.wait_for(anext(stream), 10)
        assert event["type"] == "thread_message_sent" and event["message"]["text"] == "one"
        status, _ = await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
        assert status == 200
        rest = [e async for e in stream]  # the body ends after session_closed
    assert [e["type"] for e in rest] == ["session_closed"]


def sleeper(name: str, pid_file: Path, **options: object) -> dict[str, Any]:
    opts: dict[str, Any] = {"PID_FILE": {"type": "string", "value": str(pid_file)}}
    opts.update({k: {"value": v} for k, v in options.items()})
    return agent_spec(name, "sleeper", options=opts)


async def test_process_agent_log_and_exit_events(coral: Coral, tmp_path: Path) -> None:
    ns, sid = await coral.create_session(
        session_body(
            [sleeper("s", tmp_path / "s.pid", EXIT_AFTER_S=0.3)],
            persistenceMode={"mode": "hold_after_exit", "duration": 5000},
        )
    )
    # ?after=0 replays the topic from its first event: nothing is missed by connecting late.
    async with ws_stream(coral, ns, sid, "?after=0") as ws:
        events = await read_to_end(ws)
    assert_contiguous(events, 0)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session_created" and events[0]["agents"] == ["s"]
    started = next(e for e in events if e["type"] == "runtime_started")
    assert started["name"] == "s" and started["runtime"] == "executable"
    logs = [(e["name"], e["stream"], e["text"]) for e in events if e["type"] == "agent_log"]
    assert ("s", "stdout", "sleeper started") in logs
    assert ("s", "stderr", "sleeper stderr line") in logs
    exited = next(e for e in events if e["type"] == "runtime_stopped")
    assert exited["name"] == "s" and exited["status"] == "exited" and exited["exitCode"] == 7
    assert kinds.index("runtime_started") < kinds.index("agent_log") < kinds.index("runtime_stopped")
    assert kinds.index("runtime_stopped") < kinds.index("session_closing") < len(kinds) - 1
    assert kinds[-1] == "session_closed" and events[-1]["reason"] == "all_agents_exited"
    # The session is held for reading: a late client gets its final state and the stream ends.
    async with ws_stream(coral, ns, sid) as ws:
        late = await read_to_end(ws)
    assert [e["type"] for e in late] == ["snapshot"]
    assert late[0]["closing"] is True and late[0]["seq"] == events[-1]["seq"]


async def test_events_never_carry_secrets(coral: Coral) -> None:
    options = {
        "NAME": {"type": "string", "value": "abc"},
        "TOKEN": {"type": "secret", "value": "s3cr3t-value"},
    }
    ns, sid = await coral.create_session(
        session_body(
            [agent_spec("o", "opts", version="1.0.0", options=options), ext("me")],
            persistenceMode={"mode": "hold_after_exit", "duration": 5000},
        )
    )
    secret = (await coral.connection_url(ns, sid, "me")).rsplit("/", 2)[-2]
    async with ws_stream(coral, ns, sid, "?after=0") as ws:
        events = await read_until(ws, of_type("runtime_stopped", name="o"))
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        events += await read_to_end(ws)
    raw = json.dumps(events)
    assert "TOKEN_ECHO=***" in raw  # the agent printed it; the log line went out redacted
    assert "s3cr3t-value" not in raw and secret not in raw


async def test_unknown_session_is_404_before_upgrade(coral: Coral) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with ws_stream(coral, "nope", "missing"):
            pass
    assert info.value.status == 404
    status, body = await coral.request("GET", "/api/v1/events/nope/missing")
    assert status == 404 and "not found" in body["message"]


async def test_event_streams_require_the_key(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=("k1",)):
        ns, sid = await coral.create_session(session_body([ext("a")]))
        anonymous = {"Accept": "text/event-stream"}  # (an empty dict would mean "the default key")
        status, _ = await coral.request("GET", f"/api/v1/events/{ns}/{sid}", headers=anonymous)
        assert status == 401
        for query, headers in (("", {}), ("?token=wrong", {})):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await coral.http.ws_connect(ws_url(coral, ns, sid, query), headers=headers)
            assert info.value.status == 401
        # Browsers cannot set headers on a WebSocket: ?token= works there, and the header still does.
        async with coral.http.ws_connect(ws_url(coral, ns, sid, "?token=k1")) as ws:
            assert (await next_event(ws) or {}).get("type") == "snapshot"
        async with ws_stream(coral, ns, sid) as ws:
            assert (await next_event(ws) or {}).get("type") == "snapshot"
        # ?token= is for WebSockets only.
        status, _ = await coral.request("GET", f"/api/v1/events/{ns}/{sid}?token=k1", headers=anonymous)
        assert status == 401
        events = await sse_read(coral, ns, sid, {}, stop="snapshot")
        assert events[0]["type"] == "snapshot"


async def test_shutdown_ends_open_streams_promptly(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async for coral in start_coral(tmp_path):
            ns, sid = await coral.create_session(session_body([ext("a")]))
            ws = await http.ws_connect(ws_url(coral, ns, sid))
            assert (await next_event(ws) or {}).get("type") == "snapshot"
            reading = asyncio.create_task(read_to_end(ws))  # a live client keeps reading
            idle = await http.ws_connect(ws_url(coral, ns, sid))  # this one never reads again
            sse = await http.get(f"{coral.base_url}/api/v1/events/{ns}/{sid}")
            assert sse.status == 200
            started = loop.time()
        # The server has shut down (start_coral's cleanup) without waiting out the open streams.
        assert loop.time() - started < 4
        tail = await reading
        assert tail[-1]["type"] == "session_closed" and tail[-1]["reason"] == "server_shutdown"
        assert (await read_to_end(idle))[-1]["type"] == "session_closed"
        sse_tail = [e async for e in sse_events(sse)]
        assert sse_tail[-1]["type"] == "session_closed"
        sse.release()
        await ws.close()
        await idle.close()
