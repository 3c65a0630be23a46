"""The session-end report: what an app learns (by signed webhook) when one of its sessions ends.

The domain says what the report holds (`SessionEnd`, plain records); the API layer turns it into the
webhook body (`api.views.end_report`), passed to the reporter as its encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from coral_server.sessions.agent import SessionAgent
from coral_server.sessions.model import Thread
from coral_server.sessions.session import CloseReason, Session

log = logging.getLogger("coral_server.sessions")

REPORT_KIND = "session_end"
CRASH_DETAIL = "the server stopped unexpectedly; the session was closed when it restarted"
CRASH_ERROR = "the server stopped unexpectedly"


class WebhookSender(Protocol):
    """What the reporter needs from the delivery queue: persist a webhook, deliver it later."""

    async def send(self, kind: str, url: str, payload: Any, *, subject: str | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class AgentEnd:
    """How one agent ended (`started_at` None when unknown, as after a crash)."""

    name: str
    registry_name: str
    registry_version: str
    runtime: str
    status: str
    exit_code: int | None
    error: str | None
    started_at: int | None
    ended_at: int | None
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """Why a session ended, how each agent ended, every thread and message.

    `session` is the closed session itself when it asked for an extended report (its full state
    goes in); None otherwise and after a crash.
    """

    session_id: str
    namespace: str
    reason: CloseReason | None
    detail: str | None
    created_at: int
    closed_at: int | None
    annotations: dict[str, str]
    namespace_transient: bool
    agents: tuple[AgentEnd, ...]
    threads: tuple[Thread, ...]
    session: Session | None = None


def _agent_end(agent: SessionAgent) -> AgentEnd:
    return AgentEnd(
        name=agent.name,
        registry_name=agent.manifest.name,
        registry_version=agent.manifest.version,
        runtime=agent.runtime,
        status=agent.status,
        exit_code=agent.exit_code,
        error=agent.error,
        started_at=agent.started_at,
        ended_at=agent.ended_at,
        annotations=dict(agent.annotations),
    )


def end_of(session: Session) -> SessionEnd:
    """The report of a closed session."""
    extended = session.end_webhook is not None and session.end_webhook.extended
    return SessionEnd(
        session_id=session.id,
        namespace=session.namespace,
        reason=session.close_reason,
        detail=session.close_detail,
        created_at=session.timestamp,
        closed_at=session.closed_at,
        annotations=dict(session.annotations),
        namespace_transient=session.namespace_transient,
        agents=tuple(_agent_end(a) for a in session.agents.values()),
        threads=tuple(session.threads.values()),
        session=session if extended else None,
    )


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
                "registryAgentIdentifier": {
                    "name": a.manifest.name,
                    "version": a.manifest.version,
                    "source": "local",
                },
                "runtime": a.runtime,
                "annotations": dict(a.annotations),
            }
            for a in session.agents.values()
        ],
    }


def crash_end(
    session_id: str,
    namespace: str,
    created_at: int,
    record: dict[str, Any],
    threads: list[Thread],
    closed_at: int,
) -> SessionEnd:
    """The report of a session a crashed server lost, from what the store kept of it (`record_of`).

    The agents are known by name and identity only (their processes died with the server, or were
    killed at restart), and the threads and messages are those the journal had written.
    """
    agents = []
    for agent in record.get("agents", []):
        identity = agent.get("registryAgentIdentifier") or {}
        agents.append(
            AgentEnd(
                name=agent["name"],
                registry_name=identity.get("name", ""),
                registry_version=identity.get("version", ""),
                runtime=agent.get("runtime", ""),
                status="exited",
                exit_code=None,
                error=CRASH_ERROR,
                started_at=None,
                ended_at=closed_at,
                annotations=agent.get("annotations", {}),
            )
        )
    return SessionEnd(
        session_id=session_id,
        namespace=namespace,
        reason="server_restart",
        detail=CRASH_DETAIL,
        created_at=created_at,
        closed_at=closed_at,
        annotations=record.get("annotations", {}),
        namespace_transient=record.get("namespaceTransient", True),
        agents=tuple(agents),
        threads=tuple(threads),
    )


class EndReporter:
    """A closed-session hook: queues the signed report of every session that asked for one.

    `encode` makes the webhook body of a report (the API layer owns that format).
    """

    def __init__(self, sender: WebhookSender, encode: Callable[[SessionEnd], dict[str, Any]]) -> None:
        self._sender = sender
        self._encode = encode

    async def __call__(self, session: Session) -> None:
        hook = session.end_webhook
        if hook is None:
            return
        await self.send(hook.url, end_of(session), session.topic)

    async def send(self, url: str, end: SessionEnd, subject: str) -> None:
        delivery = await self._sender.send(REPORT_KIND, url, self._encode(end), subject=subject)
        log.info(
            "session.end_report_queued session=%s reason=%s delivery=%s",
            end.session_id,
            end.reason,
            getattr(delivery, "id", "?"),
        )
