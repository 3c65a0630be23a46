"""Manifest editions: the generation of the reference server each was written for, and its launch side.

A manifest's ``edition`` says which generation its agent was written for: none, 1 or 2 is the
1.0 generation (coral-server 1.0, late 2025), 3 and later is today's. The 1.0 manifest format was
also that of the older devmode generation (before 1.0), so those agents are told apart by the URL
they connect through: the 1.0 template reads ``CORAL_CONNECTION_URL``, devmode agents (and the
agents updated from them for 1.0) read ``CORAL_SSE_URL``, which leads to a path of its own.

This module owns the launch side of the mapping (transport default, MCP URLs, environment);
``coral_server.mcp.generations`` owns the MCP side (tools, arguments, results, resources).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import quote

__all__ = [
    "CURRENT_EDITION",
    "DESCRIPTION_QUERY",
    "ROUTE_TAILS",
    "Generation",
    "LaunchTarget",
    "McpRoute",
    "Transport",
    "connection_url",
    "default_transport",
    "launch_env",
    "manifest_generation",
    "route_generation",
]

Transport = Literal["streamable_http", "sse"]

# The first edition of today's manifest format (the reference accepts 3 and 4).
CURRENT_EDITION = 3
# Devmode-era agents name themselves in their URL; it fills an empty description.
DESCRIPTION_QUERY = "agentDescription"


class Generation(StrEnum):
    """The agent-facing surface an agent was written for."""

    CURRENT = "current"
    V1 = "1.0"  # coral_wait_for_mentions, participantIds, coral://messages; SSE only
    DEVMODE = "devmode"  # CORAL_SSE_URL readers: the 1.0 tools, also without the coral_ prefix


McpRoute = Literal["mcp", "sse", "devmode"]

# Path tails under /mcp/v1/{secret}/ of each route: streamable HTTP, SSE, devmode SSE.
ROUTE_TAILS: dict[McpRoute, str] = {"mcp": "mcp", "sse": "sse", "devmode": "devmode/sse"}


def manifest_generation(edition: int | None) -> Generation:
    """The generation a manifest of this edition was written for (no edition: 1.0)."""
    if edition is not None and edition >= CURRENT_EDITION:
        return Generation.CURRENT
    return Generation.V1


def default_transport(edition: int | None) -> Transport:
    """The transport of a runtime that names none: 1.0 agents speak only SSE."""
    return "streamable_http" if manifest_generation(edition) is Generation.CURRENT else "sse"


def route_generation(agent: Generation, route: McpRoute) -> Generation:
    """The surface served on one route to an agent of generation ``agent``.

    Today's agents see today's surface everywhere; a 1.0-format agent that connects through the
    devmode route (``CORAL_SSE_URL``) gets the devmode surface (1.0's plus the unprefixed names).
    """
    if agent is Generation.CURRENT:
        return Generation.CURRENT
    return Generation.DEVMODE if route == "devmode" else Generation.V1


@dataclass(frozen=True, slots=True)
class LaunchTarget:
    """Who is being launched, and where its MCP endpoint is."""

    generation: Generation
    api_url: str  # e.g. http://127.0.0.1:5555 (the Docker host address for containers)
    secret: str
    agent_name: str
    session_id: str
    runtime: str  # executable | docker | external
    transport: Transport
    system_prompt: str | None = None


def _mcp_base(target: LaunchTarget) -> str:
    return f"{target.api_url}/mcp/v1/{target.secret}"


def connection_url(target: LaunchTarget) -> str:
    """``CORAL_CONNECTION_URL``: the streamable or SSE endpoint, as the generation spelled it."""
    base = _mcp_base(target)
    if target.transport == "streamable_http":
        return f"{base}/{ROUTE_TAILS['mcp']}"
    if target.generation is Generation.CURRENT:
        return f"{base}/{ROUTE_TAILS['sse']}/"
    # 1.0 ended the path in /sse (clients detect SSE by it) and named the agent in the query.
    return f"{base}/{ROUTE_TAILS['sse']}?agentId={quote(target.agent_name, safe='')}"


def launch_env(target: LaunchTarget) -> dict[str, str]:
    """The CORAL_* variables an agent of this generation reads."""
    env = {
        "CORAL_CONNECTION_URL": connection_url(target),
        "CORAL_AGENT_ID": target.agent_name,
        "CORAL_AGENT_SECRET": target.secret,
        "CORAL_SESSION_ID": target.session_id,
        "CORAL_API_URL": target.api_url,
        "CORAL_RUNTIME_ID": target.runtime,
    }
    if target.system_prompt:
        env["CORAL_PROMPT_SYSTEM"] = target.system_prompt
    if target.generation is not Generation.CURRENT:
        # Set means "orchestrated" (unset, 1.0 agents load a .env file); claims are for remote agents.
        env["CORAL_ORCHESTRATION_RUNTIME"] = target.runtime
        env["CORAL_SEND_CLAIMS"] = "0"
        # Devmode agents append ?agentId=...&agentDescription=... to this one themselves.
        env["CORAL_SSE_URL"] = f"{_mcp_base(target)}/{ROUTE_TAILS['devmode']}"
    return env
