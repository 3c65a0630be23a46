"""Black-box: the reference server's namespaces, states and deferred execution, as its console reads them.

Each check names a field the console (Coral-Protocol/console) reads: `base.name` and `sessions[].id`
of the namespace listing, `base.status.type`, agents' nested `status` (`running` ->
`connectionStatus` -> `communicationStatus`), threads with `participants`, `messages`, `state`.
Agents are real: the official MCP SDK client, and sleeper processes for launches.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from tests.conftest import Coral, agent_spec, session_body, wait_until
from tests.e2e.mcp_client import connect
from tests.e2e.test_lifecycle import alive, sleeper, wait_dead, wait_pids

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
HOLD = {"mode": "hold_after_exit", "duration": 60_000}


async def ok(coral: Coral, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    got, out = await coral.request(method, path, body)
    assert got == status, (method, path, got, out)
    return out


async def extended(coral: Coral, ns: str, sid: str) -> dict[str, Any]:
    return await ok(coral, "GET", f"/api/v1/local/session/{ns}/{sid}/extended")  # type: ignore[no-any-return]


async def wait_extended(coral: Coral, ns: str, sid: str, predicate: Any) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def holds() -> dict[str, Any] | None:
        nonlocal last
        last = await extended(coral, ns, sid)
        return last if predicate(last) else None

    return await wait_until(holds, 20, interval=0.05, what=lambda: f"extended state {last}")


def agent_of(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in state["agents"] if a["name"] == name)


async def test_namespaces_are_listed_created_and_deleted(coral: Coral, tmp_path: Path) -> None:
    await ok(coral, "POST", "/api/v1/local/namespace", {"name": "team", "annotations": {"owner": "ops"}})
    await ok(coral, "POST", "/api/v1/local/namespace", {"name": "team"}, status=409)
    await ok(coral, "POST", "/api/v1/local/namespace", {"name": "bad name!"}, status=400)
    assert await ok(coral, "GET", "/api/v1/local/namespace") == [
        {"name": "team", "deleteOnLastSessionExit": True, "annotations": {"owner": "ops"}}
    ]
    assert await ok(coral, "GET", "/api/v1/local/namespace/team") == []
    # A session in it (a real process), with use_existing as the console's creator may send it.
    await coral.warm_python_agents()
    pid_file = tmp_path / "s.pid"
    body = session_body([sleeper("s", pid_file, IGNORE_TERM=False)], namespace="team")
    body["namespaceProvider"] = {"type": "use_existing", "name": "team"}
    body["annotations"] = {"run": "7"}
    ns, sid = await coral.create_session(body)
    pids = await wait_pids(pid_file)
    # The console's session list: [{base: {name, ...}, sessions: [{id, timestamp, namespace, status, ...}]}]
    listing = await ok(coral, "GET", "/api/v1/local/namespace/extended")
    assert [n["base"]["name"] for n in listing] == ["team"]
    assert listing[0]["base"] == {
        "name": "team",
        "deleteOnLastSessionExit": True,
        "annotations": {"owner": "ops"},
    }
    (session,) = listing[0]["sessions"]
    assert set(session) == {"id", "timestamp", "namespace", "status", "annotations"}
    assert (session["id"], session["namespace"], session["annotations"]) == (sid, "team", {"run": "7"})
    assert ISO.match(session["timestamp"]) and session["status"]["type"] == "executed"
    assert ISO.match(session["status"]["executionTime"])
    assert [s["id"] for s in await ok(coral, "GET", f"/api/v1/local/namespace/{ns}")] == [sid]
    (full,) = await ok(coral, "GET", f"/api/v1/local/namespace/{ns}/extended")
    assert full["base"]["id"] == sid and full["agents"][0]["name"] == "s"
    # Deleting the namespace closes its sessions: the agent's processes are stopped.
    await ok(coral, "DELETE", f"/api/v1/local/namespace/{ns}")
    await wait_dead(pids)
    await ok(coral, "GET", f"/api/v1/local/namespace/{ns}", status=404)
    await ok(coral, "GET", f"/api/v1/local/session/{ns}/{sid}", status=404)
    await ok(coral, "DELETE", f"/api/v1/local/namespace/{ns}", status=404)
    assert await ok(coral, "GET", "/api/v1/local/namespace/extended") == []


async def test_a_namespace_called_extended_is_not_the_listing(coral: Coral) -> None:
    await ok(coral, "POST", "/api/v1/local/namespace", {"name": "extended", "deleteOnLastSessionExit": False})
    listing = await ok(coral, "GET", "/api/v1/local/namespace/extended")
    assert [n["base"]["name"] for n in listing] == ["extended"]


async def test_extended_state_follows_an_mcp_agent_and_its_threads(coral: Coral) -> None:
    agents = [agent_spec("a", runtime="external"), agent_spec("b", runtime="external", description="bee")]
    ns, sid = await coral.create_session(session_body(agents, namespace="ext", persistenceMode=HOLD))
    state = await extended(coral, ns, sid)
    assert set(state) == {"base", "agents", "threads"}
    base = state["base"]
    assert (base["id"], base["namespace"], base["annotations"]) == (sid, ns, {})
    assert base["status"]["type"] == "executed" and ISO.match(base["status"]["executionTime"])
    b = agent_of(state, "b")
    assert set(b) == {
        "name",
        "registryAgentIdentifier",
        "status",
        "description",
        "links",
        "annotations",
        "tokensByModel",
    }
    assert b["registryAgentIdentifier"] == {
        "name": "echo",
        "version": "0.1.0",
        "registrySourceId": {"type": "local"},
    }
    assert (b["description"], b["links"], b["annotations"], b["tokensByModel"]) == ("bee", ["a"], {}, {})
    assert b["status"]["type"] == "running"
    assert b["status"]["connectionStatus"] == {"type": "not_connected"} and ISO.match(
        b["status"]["startTime"]
    )

    async with connect(await coral.connection_url(ns, sid, "a")) as mcp:
        connected = await wait_extended(
            coral,
            ns,
            sid,
            lambda s: agent_of(s, "a")["status"].get("connectionStatus", {}).get("type") == "connected",
        )
        assert agent_of(connected, "a")["status"]["connectionStatus"] == {
            "type": "connected",
            "communicationStatus": {"type": "thinking"},
        }
        waiting = asyncio.create_task(mcp.ok("coral_wait_for_mention", maxWaitMs=30_000))
        await wait_extended(
            coral,
            ns,
            sid,
            lambda s: (
                agent_of(s, "a")["status"]["connectionStatus"].get("communicationStatus")
                == {"type": "waiting_message"}
            ),
        )
        puppet = f"/api/v1/puppet/{ns}/{sid}/b"
        created = await ok(
            coral, "POST", puppet + "/thread", {"threadName": "plan", "participantNames": ["a"]}
        )
        tid = created["thread"]["id"]
        sent = {"threadId": tid, "content": "your turn", "mentions": ["a"]}
        await ok(coral, "POST", puppet + "/thread/message", sent)
        got = await asyncio.wait_for(waiting, 20)
        assert got["message"]["text"] == "your turn"
        await mcp.ok("coral_send_message", threadId=tid, content="done", mentions=["b"])
        state = await wait_extended(coral, ns, sid, lambda s: len(s["threads"][0]["messages"]) == 2)
        (thread,) = state["threads"]
        assert list(thread) == ["id", "name", "creatorName", "participants", "messages", "state", "timestamp"]
        assert (thread["id"], thread["name"], thread["creatorName"]) == (tid, "plan", "b")
        assert thread["participants"] == ["b", "a"] and thread["state"] == {"state": "open"}
        assert ISO.match(thread["timestamp"])
        first, second = thread["messages"]
        assert first == {
            "id": first["id"],
            "threadId": tid,
            "text": "your turn",
            "senderName": "b",
            "mentionNames": ["a"],
            "timestamp": first["timestamp"],
        }
        assert ISO.match(first["timestamp"]) and first["id"] == got["message"]["id"]
        assert (second["senderName"], second["text"], second["mentionNames"]) == ("a", "done", ["b"])
        await ok(coral, "DELETE", puppet + "/thread", {"threadId": tid, "summary": "agreed"})
        closed = (await extended(coral, ns, sid))["threads"][0]
        assert closed["state"]["state"] == "closed" and closed["state"]["summary"] == "agreed"
        assert ISO.match(closed["state"]["timestamp"])
        assert len(closed["messages"]) == 2  # kept readable here (the reference erases them)

    await ok(coral, "DELETE", f"/api/v1/local/session/{ns}/{sid}")
    final = await wait_extended(coral, ns, sid, lambda s: s["base"]["status"]["type"] == "closing")
    status = final["base"]["status"]
    assert ISO.match(status["executionTime"]) and ISO.match(status["closingTime"])
    assert status["executionTime"] <= status["closingTime"]
    assert {agent_of(final, n)["status"]["type"] for n in ("a", "b")} == {"stopped"}
    # Today's route keeps today's shape, with the status beside it.
    today = await coral.state(ns, sid)
    assert today["closing"] is True and today["status"]["type"] == "closing"
    assert today["status"]["executionTime"] == status["executionTime"]


async def test_deferred_execution_waits_for_execute_and_its_ttl_counts_from_then(
    coral: Coral, tmp_path: Path
) -> None:
    await coral.warm_python_agents()
    pid_file = tmp_path / "deferred.pid"
    body = session_body([sleeper("d", pid_file, IGNORE_TERM=False)], namespace="later")
    body["execution"] = {"mode": "defer"}
    body["sessionRuntimeSettings"] = {"ttl": 300}  # would have ended it long ago had it run
    ns, sid = await coral.create_session(body)
    state = await extended(coral, ns, sid)
    assert state["base"]["status"] == {"type": "pending_execution"}
    assert agent_of(state, "d")["status"] == {"type": "waiting"}
    today = await coral.state(ns, sid)
    assert today["status"] == {"type": "pending_execution"} and today["agents"][0]["status"] == "pending"
    # An immediate session with the same TTL runs out meanwhile; the deferred one waits on, unlaunched.
    quick_file = tmp_path / "quick.pid"
    q_ns, q_sid = await coral.create_session(
        session_body([sleeper("q", quick_file, IGNORE_TERM=False)], namespace="now", ttl=300)
    )
    await coral.wait_gone(q_ns, q_sid)
    assert (await extended(coral, ns, sid))["base"]["status"] == {"type": "pending_execution"}
    assert not pid_file.exists()

    await ok(coral, "POST", f"/api/v1/local/session/{ns}/{sid}", {"ttl": 600_000, "persistenceMode": HOLD})
    pids = await wait_pids(pid_file)
    assert all(alive(p) for p in pids)
    running = await wait_extended(coral, ns, sid, lambda s: agent_of(s, "d")["status"]["type"] == "running")
    assert running["base"]["status"]["type"] == "executed"
    again = await ok(coral, "POST", f"/api/v1/local/session/{ns}/{sid}", {}, status=400)
    assert "not pending" in again["message"]
    await ok(coral, "POST", f"/api/v1/local/session/{ns}/nope", {}, status=404)
    await ok(coral, "POST", f"/api/v1/local/session/{ns}/{sid}", {"ttl": -1}, status=400)
    await ok(coral, "DELETE", f"/api/v1/local/session/{ns}/{sid}")
    await wait_dead(pids)
    final = await wait_extended(coral, ns, sid, lambda s: s["base"]["status"]["type"] == "closing")
    assert agent_of(final, "d")["status"]["type"] == "stopped"


async def test_a_deferred_session_can_be_closed_unexecuted(coral: Coral) -> None:
    body = session_body([agent_spec("x", runtime="external")], namespace="never")
    body["execution"] = {"mode": "defer"}
    ns, sid = await coral.create_session(body)
    await ok(coral, "DELETE", f"/api/v1/local/session/{ns}/{sid}")
    await coral.wait_gone(ns, sid)
    await ok(coral, "POST", f"/api/v1/local/session/{ns}/{sid}", {}, status=404)
