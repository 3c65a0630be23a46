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


class EndReporter:
    """A closed-session listener: queues the signed report of every session that asked for one."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    async def __call__(self, session: Session) -> None:
        hook = session.end_webhook
        if hook is None:
            return
        report = end_report(session)
        delivery = await self._sender.send(REPORT_KIND, hook.url, report, subject=session.topic)
        log.info("session.end_report_queued session=%s delivery=%s", session.id, getattr(delivery, "id", "?"))
