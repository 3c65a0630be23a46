"""One agent instance in a session: identity, links, secret, mailbox, process state and log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

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
