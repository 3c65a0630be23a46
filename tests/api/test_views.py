"""`api/views.py` sends byte for byte what the domain's own JSON views sent before it.

The session domain's `to_http()`/`summary()` are gone (the views are the one place that builds the
wire); the builders below are those methods as they were, kept here as the pinned shape. The
registry's `listing()`/`detail()` still exist; delete each comparison together with the domain view
it compares against. Runs have no domain view: their wire shape (the original jobs system's field
names and order, which its clients read) is pinned here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from coral_server.api import views
from coral_server.api.keys import REGISTRY, SESSIONS
from coral_server.runs.model import Run
from coral_server.runs.service import run_summary
from coral_server.sessions import Message, Session, SessionAgent, Thread
from coral_server.sessions.journal import replay
from coral_server.sessions.model import iso
from coral_server.sessions.report import crash_end
from coral_server.store.sessions import JournalEntry
from tests.conftest import Coral, agent_spec, session_body, wait_until


def same_bytes(ours: Any, theirs: Any) -> None:
    assert orjson.dumps(ours) == orjson.dumps(theirs)


# -- the domain's JSON views as they were, before the wire moved to api/views.py


def message_before(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "threadId": m.thread_id,
        "senderName": m.sender,
        "text": m.text,
        "timestamp": m.timestamp,
        "mentionNames": list(m.mentions),
    }


def thread_before(t: Thread) -> dict[str, Any]:
    state: dict[str, Any] = {"state": "open"}
    if t.closed:
        state = {"state": "closed", "summary": t.summary or "", "timestamp": t.closed_at}
    return {
        "id": t.id,
        "name": t.name,
        "creatorName": t.creator,
        "participants": list(t.participants),
        "state": state,
        "timestamp": t.timestamp,
        "messages": [message_before(m) for m in t.messages],
    }


def agent_before(a: SessionAgent) -> dict[str, Any]:
    state: dict[str, Any] = {
        "name": a.name,
        "registryAgentIdentifier": {
            "name": a.manifest.name,
            "version": a.manifest.version,
            "source": "local",
        },
        "isConnected": a.connected,
        "isWaiting": a.waiting,
        "description": a.description,
        "links": sorted(a.links),
        "runtime": a.runtime,
        "generation": a.generation.value,
        "status": a.status,
    }
    if a.exit_code is not None:
        state["exitCode"] = a.exit_code
    if a.error is not None:
        state["error"] = a.error
    if a.status in ("exited", "failed") and (a.exit_code or a.error):
        state["lastLogLines"] = [line.text for line in a.log.tail(10)]
    if a.annotations:
        state["annotations"] = dict(a.annotations)
    return state


def status_before(s: Session) -> dict[str, Any]:
    if s.closing:
        executed = s.executed_at if s.executed_at is not None else s.timestamp
        closing = s.closing_at if s.closing_at is not None else executed
        return {"type": "closing", "executionTime": iso(executed), "closingTime": iso(closing)}
    if s.executed_at is None:
        return {"type": "pending_execution"}
    return {"type": "executed", "executionTime": iso(s.executed_at)}


def session_before(s: Session) -> dict[str, Any]:
    state: dict[str, Any] = {
        "id": s.id,
        "namespace": s.namespace,
        "timestamp": s.timestamp,
        "closing": s.closing,
        "status": status_before(s),
        "agents": [agent_before(a) for a in s.agents.values()],
        "threads": [thread_before(t) for t in s.threads.values()],
    }
    if s.close_reason is not None:
        state["closeReason"] = s.close_reason
        if s.close_detail is not None:
            state["closeDetail"] = s.close_detail
    if s.closed_at is not None:
        state["closedAt"] = s.closed_at
    if s.annotations:
        state["annotations"] = dict(s.annotations)
    return state


def summary_before(s: Session) -> dict[str, Any]:
    return {"sessionId": s.id, "closing": s.closing}


def assert_same_as_domain(session: Session) -> None:
    same_bytes(views.session_state(session), session_before(session))
    same_bytes(views.session_summary(session), summary_before(session))
    for agent in session.agents.values():
        same_bytes(views.agent_state(agent), agent_before(agent))
    for thread in session.threads.values():
        same_bytes(views.thread_state(thread), thread_before(thread))
        for message in thread.messages:
            same_bytes(views.message_state(message), message_before(message))


async def test_session_views_match_the_domain_in_every_state(coral: Coral, tmp_path: Path) -> None:
    exiter = {"PID_FILE": {"type": "string", "value": str(tmp_path / "x.pid")}, "EXIT_AFTER_S": 0.05}
    agents = [
        agent_spec("human", runtime="external", annotations={"role": "reviewer"}, description="a person"),
        agent_spec("peer", runtime="external"),
        agent_spec("exiter", "sleeper", options=exiter),
        agent_spec("broken", "broken-path"),
    ]
    body = session_body(agents, ttl=60_000, persistenceMode={"mode": "hold_after_exit", "duration": 60_000})
    body["annotations"] = {"tenant": "acme", "ünïcode": "✓"}
    ns, sid = await coral.create_session(body)
    session = coral.app[SESSIONS].get(ns, sid)
    assert_same_as_domain(session)  # just created: agents pending or running, no threads

    human, peer = session.agent("human"), session.agent("peer")
    open_thread = session.create_thread(human, "open one", ["peer"])
    closed = session.create_thread(human, "closed one", ["peer", "exiter"])
    for i in range(3):
        session.send_message(peer, open_thread.id, f'message {i} \u2028 "quoted"', ["human"])
    session.send_message(human, closed.id, "bye", [])
    session.remove_participant(human, closed.id, "exiter")
    session.close_thread(human, closed.id, "")
    await wait_until(lambda: {session.agent(n).status for n in ("exiter", "broken")} == {"exited", "failed"})
    assert session.agent("exiter").exit_code == 7 and session.agent("broken").error
    assert_same_as_domain(session)  # threads open and closed, an agent exited with a code, one failed

    await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    await wait_until(lambda: session.closed_at is not None)
    assert session.close_reason is not None
    assert_same_as_domain(session)  # closed: reason, time


async def test_ttl_close_detail_matches(coral: Coral) -> None:
    body = session_body([agent_spec("solo", runtime="external")], ttl=100)
    body["execution"]["runtimeSettings"]["persistenceMode"] = {"mode": "hold_after_exit", "duration": 60_000}
    ns, sid = await coral.create_session(body)
    session = coral.app[SESSIONS].get(ns, sid)
    await wait_until(lambda: session.closed_at is not None)
    assert session.close_detail
    assert_same_as_domain(session)


async def test_namespace_listing_matches(coral: Coral) -> None:
    for _ in range(2):
        await coral.create_session(session_body([agent_spec("solo", runtime="external")], namespace="listed"))
    for ns in coral.app[SESSIONS].namespaces.values():
        same_bytes(
            views.namespace_sessions(ns),
            {"namespace": ns.name, "sessions": [summary_before(s) for s in ns.sessions.values()]},
        )


async def test_registry_views_match_the_catalog(coral: Coral) -> None:
    registry = coral.app[REGISTRY]
    same_bytes(views.registry_sources(registry), registry.listing())
    manifests = registry.agents()
    assert len(manifests) >= 10
    for manifest in manifests:
        same_bytes(views.registry_agent_detail(manifest), registry.detail(manifest.name, manifest.version))


def test_run_views_keep_the_jobs_wire_shape() -> None:
    run = Run(
        id=7,
        kind="job",
        trigger="api",
        status="completed",
        spec={"agent_type": "claude", "prompt": "add hello.txt", "repo_path": "/src/app", "flags": ""},
        display_name="Hello",
        created_at=1_700_000_000.0,
        started_at=1_700_000_001.5,
        finished_at=1_700_000_003.25,
        exit_reason="agent_done",
        result={"mode": "headless", "commit_count": 1},
        worktree_path="/src/app_task_run_7",
        branch="coral/run-7",
        auto_accepts=[{"at": "2023-11-14T22:13:21.000Z", "question": "Bash: ls", "answer": "yes"}],
        output="done\n",
    )
    detail = {
        "id": 7,
        "run_id": 7,
        "status": "completed",
        "trigger_type": "api",
        "kind": "job",
        "display_name": "Hello",
        "agent_type": "claude",
        "worktree_path": "/src/app_task_run_7",
        "branch": "coral/run-7",
        "session_id": "run-7",
        "scheduled_at": "2023-11-14T22:13:20.000Z",
        "created_at": "2023-11-14T22:13:20.000Z",
        "started_at": "2023-11-14T22:13:21.500Z",
        "finished_at": "2023-11-14T22:13:23.250Z",
        "duration_s": 1.75,
        "exit_reason": "agent_done",
        "error_msg": None,
        "result": {"mode": "headless", "commit_count": 1},
        "waiting_for": None,
        "auto_accepts": [{"at": "2023-11-14T22:13:21.000Z", "question": "Bash: ls", "answer": "yes"}],
        "task_id": None,
        "attempt": 1,
        "priority": 5,
        "concurrency_key": None,
        "waiting_reason": None,
        "not_before": None,
        "retryable": True,
        "retry_of": None,
        "prompt": "add hello.txt",
        "repo_path": "/src/app",
        "output": "done\n",
    }
    listed = {k: v for k, v in detail.items() if k != "output"}
    same_bytes(views.run_detail(run), detail)
    same_bytes(views.run_out(run), listed)
    same_bytes(views.run_snapshot(run, 3), {"seq": 3, "type": "snapshot", **detail})
    same_bytes(views.run_page([run], None), {"runs": [listed], "next_before": None})
    same_bytes(views.run_submitted(run), {"run_id": 7, "status": "completed"})
    same_bytes(views.ok(), {"ok": True})
    # The run events' summary says what the view says.
    summary = run_summary(run)
    assert {k: listed[k] for k in summary} == summary


def test_error_body_with_detail_keeps_error_short() -> None:
    same_bytes(
        views.error_body(
            "Run not found or not active", detail="Run not found or not active (run 3 is killed)"
        ),
        {"error": "Run not found or not active", "message": "Run not found or not active (run 3 is killed)"},
    )


def test_crash_report_keeps_its_shape() -> None:
    """The end report of a session a crashed server lost: its journal replayed, as it was sent before."""
    thread = {
        "id": "t1",
        "name": "review",
        "creatorName": "a",
        "participants": ["a", "b"],
        "state": {"state": "open"},
        "timestamp": 1000,
        "messages": [],
    }
    message = {
        "id": "m1",
        "threadId": "t1",
        "senderName": "a",
        "text": "hi",
        "timestamp": 1100,
        "mentionNames": ["b"],
    }
    closed = {"threadId": "t1", "state": {"state": "closed", "summary": "done", "timestamp": 1200}}
    entries = [
        JournalEntry(1, "thread", orjson.dumps(thread)),
        JournalEntry(2, "message", orjson.dumps(message)),
        JournalEntry(3, "participants", orjson.dumps({"threadId": "t1", "participants": ["a"]})),
        JournalEntry(4, "thread_closed", orjson.dumps(closed)),
    ]
    identity = {"name": "echo", "version": "0.1.0", "source": "local"}
    record = {
        "endWebhook": {"url": "http://x", "extended": False},
        "annotations": {"k": "v"},
        "namespaceTransient": False,
        "agents": [
            {"name": "a", "registryAgentIdentifier": identity, "runtime": "executable", "annotations": {}}
        ],
    }
    report = views.end_report(crash_end("s1", "ns", 500, record, replay(entries), 2000))
    detail = "the server stopped unexpectedly; the session was closed when it restarted"
    assert report == {
        "type": "session_end",
        "timestamp": 2000,
        "sessionId": "s1",
        "namespace": "ns",
        "reason": "server_restart",
        "detail": detail,
        "createdAt": 500,
        "closedAt": 2000,
        "annotations": {"k": "v"},
        "agents": [
            {
                "name": "a",
                "registryAgentIdentifier": identity,
                "runtime": "executable",
                "annotations": {},
                "status": "exited",
                "exitCode": None,
                "error": "the server stopped unexpectedly",
                "startTime": None,
                "endTime": 2000,
            }
        ],
        "threads": [{**thread, "participants": ["a"], "messages": [message], "state": closed["state"]}],
        "namespaceState": {"name": "ns", "deleteOnLastSessionExit": False, "annotations": {}},
        "sessionState": {
            "type": "base",
            "state": {"id": "s1", "timestamp": 500, "namespace": "ns", "annotations": {"k": "v"}},
        },
        "agentStats": [
            {
                "name": "a",
                "registryIdentifier": identity,
                "startTime": None,
                "endTime": 2000,
                "annotations": {},
            }
        ],
    }
