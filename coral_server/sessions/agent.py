"""One agent instance in a session: identity, links, secret, mailbox, process state and log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from coral_server.registry import AgentManifest, Generation, ResolvedOption
from coral_server.runtimes import AgentLog
from coral_server.sessions.mailbox import Mailbox
from coral_server.supervision import Unit


def new_agent_secret() -> str:
    """256 random bits, URL-safe: the agent's MCP credential."""
    return secrets.token_urlsafe(32)


@dataclass(slots=True, eq=False)
class SessionAgent:
    name: str
    manifest: AgentManifest
    runtime: str
    description: str
    secret: str
    blocking: bool = False
    system_prompt: str | None = None
    options: list[ResolvedOption] = field(default_factory=list)
    custom_tool_access: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    # The surface it was written for: its manifest's, except for external agents (today's).
    generation: Generation = Generation.CURRENT
    links: set[str] = field(default_factory=set)
    mailbox: Mailbox = field(default_factory=Mailbox)
    log: AgentLog = field(default_factory=AgentLog)
    connected: bool = False
    secret_values: set[str] = field(default_factory=set)
    unit: Unit | None = None  # its process or container, once the session has started it

    @property
    def waiting(self) -> bool:
        return self.mailbox.waiting > 0

    # What its supervised unit knows (pending until the session starts it).
    @property
    def status(self) -> str:
        """pending | running | exited | failed"""
        return "pending" if self.unit is None else self.unit.status

    @property
    def exit_code(self) -> int | None:
        return None if self.unit is None else self.unit.exit_code

    @property
    def error(self) -> str | None:
        return None if self.unit is None else self.unit.error

    @property
    def started_at(self) -> int | None:
        return None if self.unit is None else self.unit.started_at

    @property
    def ended_at(self) -> int | None:
        return None if self.unit is None else self.unit.ended_at

    def identifier(self) -> dict[str, Any]:
        return {"name": self.manifest.name, "version": self.manifest.version, "source": "local"}

    def to_http(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "name": self.name,
            "registryAgentIdentifier": self.identifier(),
            "isConnected": self.connected,
            "isWaiting": self.waiting,
            "description": self.description,
            "links": sorted(self.links),
            "runtime": self.runtime,
            "generation": self.generation.value,
            "status": self.status,
        }
        if self.exit_code is not None:
            state["exitCode"] = self.exit_code
        if self.error is not None:
            state["error"] = self.error
        if self.status in ("exited", "failed") and (self.exit_code or self.error):
            # Why it died, without a second request: the end of its output.
            state["lastLogLines"] = [line.text for line in self.log.tail(10)]
        if self.annotations:
            state["annotations"] = dict(self.annotations)
        return state
