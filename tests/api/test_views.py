"""`api/views.py` sends byte for byte what the domain's own JSON views sent before it.

The domain's `to_http()`/`summary()` and the registry's `listing()`/`detail()` still exist (event
payloads and the end report use some); until they go, these tests pin the wire views to them. Delete
each comparison together with the domain view it compares against. Runs have no domain view: their
wire shape (the original jobs system's field names and order, which its clients read) is pinned here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from coral_server.api import views
from coral_server.api.keys import REGISTRY, SESSIONS
from coral_server.runs.model import Run
from coral_server.runs.service import run_summary
from coral_server.sessions import Session
from tests.conftest import Coral, agent_spec, session_body, wait_until


def same_bytes(ours: Any, theirs: Any) -> None:
    assert orjson.dumps(ours) == orjson.dumps(theirs)


def assert_same_as_domain(session: Session) -> None:
    same_bytes(views.session_state(session), session.to_http())
    same_bytes(views.session_summary(session), session.summary())
    for agent in session.agents.values():
        same_bytes(views.agent_state(agent), agent.to_http())
    for thread in session.threads.values():
        same_bytes(views.thread_state(thread), thread.to_http())
        for message in thread.messages:
            same_bytes(views.message_state(message), message.to_http())


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
            {"namespace": ns.name, "sessions": [s.summary() for s in ns.sessions.values()]},
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
