"""The reference server's views of sessions, agents, threads, messages and namespaces.

The shapes its console and apps read (`/extended` routes, the reference event streams): ISO 8601
timestamps, nested status objects, absent rather than null fields. Built from domain objects like
`api/views.py` builds ours; `api/models.py` holds the shapes (and so `schemas/` and the OpenAPI).
"""

from __future__ import annotations

from typing import cast

from coral_server.api import models as m
from coral_server.sessions import (
    Message,
    Namespace,
    NamespaceInfo,
    Session,
    SessionAgent,
    SessionInfo,
    Thread,
)
from coral_server.sessions.model import iso


def message(msg: Message) -> m.SessionThreadMessage:
    """`{id, threadId, text, senderName, mentionNames, timestamp}` (what the MCP tools return too)."""
    return cast(m.SessionThreadMessage, msg.to_mcp())


def thread(t: Thread) -> m.SessionThread:
    """`{id, name, creatorName, participants, messages, state, timestamp}`; a closed thread keeps
    its messages here (the reference erases them)."""
    return cast(m.SessionThread, t.to_mcp())


def session_status(info: SessionInfo) -> m.SessionStatus:
    """pending_execution (deferred, not executed), executed, or closing (also once closed and held)."""
    if info.phase in ("closing", "closed"):
        executed = info.executed_at if info.executed_at is not None else info.created_at
        closing = info.closing_at if info.closing_at is not None else executed
        return {"type": "closing", "executionTime": iso(executed), "closingTime": iso(closing)}
    if info.executed_at is None:
        return {"type": "pending_execution"}
    return {"type": "executed", "executionTime": iso(info.executed_at)}


def session_base_of(info: SessionInfo, at_ms: int) -> m.SessionStateBase:
    """`{id, timestamp, namespace, status, annotations}` of the session as `info` saw it at `at_ms`
    (what the server-wide event stream's session events carry)."""
    return {
        "id": info.id,
        "timestamp": iso(at_ms),
        "namespace": info.namespace.name,
        "status": session_status(info),
        "annotations": dict(info.annotations),
    }


def session_base(session: Session, now_ms: int) -> m.SessionStateBase:
    """`{id, timestamp, namespace, status, annotations}`; `timestamp` is when the state was read."""
    return session_base_of(session.info(), now_ms)


def agent_status(agent: SessionAgent) -> m.SessionAgentStatus:
    """waiting (not launched) | running {connectionStatus, startTime} | stopped {startTime}."""
    status = agent.status
    started = agent.started_at
    if status == "pending" or (status == "running" and started is None):
        return {"type": "waiting"}
    if status == "running":
        connection: m.SessionAgentConnectionStatus = {"type": "not_connected"}
        if agent.connected:
            communication: m.SessionAgentCommunicationStatus = {
                "type": "waiting_message" if agent.waiting else "thinking"
            }
            connection = {"type": "connected", "communicationStatus": communication}
        return {"type": "running", "connectionStatus": connection, "startTime": iso(cast(int, started))}
    stopped: m.SessionAgentStatus = {"type": "stopped"}
    if started is not None:
        stopped["startTime"] = iso(started)
    return stopped


def agent(a: SessionAgent) -> m.SessionAgentState:
    return {
        "name": a.name,
        "registryAgentIdentifier": {
            "name": a.manifest.name,
            "version": a.manifest.version,
            "registrySourceId": {"type": "local"},
        },
        "status": agent_status(a),
        "description": a.description,
        "links": sorted(a.links),
        "annotations": dict(a.annotations),
        "tokensByModel": {},  # no LLM proxy here: nothing is counted
    }


def session_extended(session: Session, now_ms: int) -> m.SessionStateExtended:
    """`{base, agents, threads}`: what the console reads when it opens a session."""
    return {
        "base": session_base(session, now_ms),
        "agents": [agent(a) for a in session.agents.values()],
        "threads": [thread(t) for t in session.threads.values()],
    }


def namespace_base_of(ns: NamespaceInfo) -> m.SessionNamespaceStateBase:
    return {
        "name": ns.name,
        "deleteOnLastSessionExit": ns.delete_on_last_exit,
        "annotations": dict(ns.annotations),
    }


def namespace_base(ns: Namespace) -> m.SessionNamespaceStateBase:
    return namespace_base_of(ns.info())


def namespace_extended(ns: Namespace, now_ms: int) -> m.SessionNamespaceStateExtended:
    """`{base, sessions: [base session state]}`: the console's session list."""
    return {
        "base": namespace_base(ns),
        "sessions": [session_base(s, now_ms) for s in ns.sessions.values()],
    }
