"""What a session request asks for, in domain terms (the API layer builds these from JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class CustomToolSpec:
    """An app-defined tool: agents call it over MCP, the server forwards the call to the app's URL."""

    name: str
    url: str
    signature_header: str = "X-Coral-Signature"
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EndWebhook:
    """Where the session-end report goes; `extended` adds the full state in the reference's shape."""

    url: str
    extended: bool = False


@dataclass(slots=True)
class AgentRequest:
    name: str
    registry_name: str
    registry_version: str
    runtime: str  # "executable" | "docker" | "external"
    description: str | None = None
    system_prompt: str | None = None
    blocking: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    custom_tool_access: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SessionRequest:
    namespace: str
    agents: list[AgentRequest]
    groups: list[list[str]] = field(default_factory=list)
    create_namespace: bool = True
    delete_namespace_on_last_exit: bool = True
    custom_tools: dict[str, CustomToolSpec] = field(default_factory=dict)
    ttl_ms: int | None = None
    hold_after_exit_ms: int = 0
    minimum_time_ms: int = 0
    end_webhook: EndWebhook | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    # Deferred execution: created pending, nothing launched until `Sessions.execute`.
    defer: bool = False
    # JSON paths of the agents list and the end webhook's URL in the request, for error messages.
    agents_path: str = "agentGraphRequest.agents"
    end_webhook_path: str = "sessionRuntimeSettings.webhooks.sessionEnd.url"
    # ... of the runtime settings (either spelling), and of the field that gave the hold time.
    settings_path: str = "execution.runtimeSettings"
    persistence_path: str = "execution.runtimeSettings.persistenceMode"
    # Where local agents work (a job's worktree); None: each in its manifest's folder.
    work_dir: Path | None = None
