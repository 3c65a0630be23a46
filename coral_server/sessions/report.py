"""The session-end report: what an app learns (by signed webhook) when one of its sessions ends."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from coral_server.sessions.agent import SessionAgent
from coral_server.sessions.session import Session

log = logging.getLogger("coral_server.sessions")

REPORT_KIND = "session_end"


class WebhookSender(Protocol):
    """What the reporter needs from the delivery queue: persist a webhook, deliver it later."""

    async def send(self, kind: str, url: str, payload: Any, *, subject: str | None = None) -> Any: ...


def _agent_end(agent: SessionAgent) -> dict[str, Any]:
    return {
        "name": agent.name,
        "registryAgentIdentifier": agent.identifier(),
        "runtime": agent.runtime,
        "status": agent.status,
        "exitCode": agent.exit_code,
        "error": agent.error,
        "startTime": agent.started_at,
        "endTime": agent.ended_at,
        "annotations": dict(agent.annotations),
    }


def end_report(session: Session) -> dict[str, Any]:
    """The report of a closed session: why it ended, how each agent ended, every thread and message.

    It also carries the reference server's fields (`namespaceState`, `sessionState`, `agentStats`)
    so receivers written for it keep working; `sessionState` is the full state when the session
    asked for an extended report.
    """
    extended = session.end_webhook is not None and session.end_webhook.extended
    base = {
        "id": session.id,
        "timestamp": session.timestamp,
        "namespace": session.namespace,
        "annotations": dict(session.annotations),
    }
    return {
        "type": REPORT_KIND,
        "timestamp": session.closed_at,
        "sessionId": session.id,
        "namespace": session.namespace,
        "reason": session.close_reason,
        "detail": session.close_detail,
        "createdAt": session.timestamp,
        "closedAt": session.closed_at,
        "annotations": dict(session.annotations),
        "agents": [_agent_end(a) for a in session.agents.values()],
        "threads": [t.to_http() for t in session.threads.values()],
        "namespaceState": {
            "name": session.namespace,
            "deleteOnLastSessionExit": session.namespace_transient,
            "annotations": {},
        },
        "sessionState": (
            {"type": "extended", "state": session.to_http()} if extended else {"type": "base", "state": base}
        ),
        "agentStats": [
            {
                "name": a.name,
                "registryIdentifier": a.identifier(),
                "startTime": a.started_at,
                "endTime": a.ended_at,
                "annotations": dict(a.annotations),
            }
            for a in session.agents.values()
        ],
    }


def record_of(session: Session) -> dict[str, Any]:
    """What the store keeps of a live session, so a crash can still be reported (JSON-able)."""
    hook = session.end_webhook
    return {
        "endWebhook": None if hook is None else {"url": hook.url, "extended": hook.extended},
        "annotations": dict(session.annotations),
        "namespaceTransient": session.namespace_transient,
        "agents": [
            {
                "name": a.name,
                "registryAgentIdentifier": a.identifier(),
                "runtime": a.runtime,
                "annotations": dict(a.annotations),
            }
            for a in session.agents.values()
        ],
    }


def crash_report(
    session_id: str,
    namespace: str,
    created_at: int,
    record: dict[str, Any],
    threads: list[dict[str, Any]],
    closed_at: int,
) -> dict[str, Any]:
    """The end report of a session a crashed server lost, from what the store kept of it.

    Same shape as `end_report`: the agents are known by name and identity only (their processes
    died with the server, or were killed at restart), and the threads and messages are those the
    journal had written (everything said up to about the crash).
    """
    detail = "the server stopped unexpectedly; the session was closed when it restarted"
    agents = [
        {
            **agent,
            "status": "exited",
            "exitCode": None,
            "error": "the server stopped unexpectedly",
            "startTime": None,
            "endTime": closed_at,
        }
        for agent in record.get("agents", [])
    ]
    base = {
        "id": session_id,
        "timestamp": created_at,
        "namespace": namespace,
        "annotations": record.get("annotations", {}),
    }
    return {
        "type": REPORT_KIND,
        "timestamp": closed_at,
        "sessionId": session_id,
        "namespace": namespace,
        "reason": "server_restart",
        "detail": detail,
        "createdAt": created_at,
        "closedAt": closed_at,
        "annotations": record.get("annotations", {}),
        "agents": agents,
        "threads": threads,
        "namespaceState": {
            "name": namespace,
            "deleteOnLastSessionExit": record.get("namespaceTransient", True),
            "annotations": {},
        },
        "sessionState": {"type": "base", "state": base},
        "agentStats": [
            {
                "name": a["name"],
                "registryIdentifier": a.get("registryAgentIdentifier"),
                "startTime": None,
                "endTime": closed_at,
                "annotations": a.get("annotations", {}),
            }
            for a in agents
        ],
    }


class EndReporter:
    """A closed-session hook: queues the signed report of every session that asked for one."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    async def __call__(self, session: Session) -> None:
        hook = session.end_webhook
        if hook is None:
            return
        await self.send(hook.url, end_report(session), session.topic)

    async def send(self, url: str, report: dict[str, Any], subject: str) -> None:
        delivery = await self._sender.send(REPORT_KIND, url, report, subject=subject)
        log.info(
            "session.end_report_queued session=%s reason=%s delivery=%s",
            report.get("sessionId"),
            report.get("reason"),
            getattr(delivery, "id", "?"),
        )
