"""A manifest's generation and the launch side of each (coral_server.registry.editions)."""

from __future__ import annotations

import pytest

from coral_server.registry.editions import (
    Generation,
    LaunchTarget,
    McpRoute,
    connection_url,
    default_transport,
    launch_env,
    manifest_generation,
    route_generation,
)


@pytest.mark.parametrize(
    ("edition", "generation", "transport"),
    [
        (None, Generation.V1, "sse"),
        (1, Generation.V1, "sse"),
        (2, Generation.V1, "sse"),
        (3, Generation.CURRENT, "streamable_http"),
        (4, Generation.CURRENT, "streamable_http"),
    ],
)
def test_edition_decides_the_generation(edition: int | None, generation: Generation, transport: str) -> None:
    assert manifest_generation(edition) is generation
    assert default_transport(edition) == transport


@pytest.mark.parametrize(
    ("agent", "route", "served"),
    [
        (Generation.CURRENT, "mcp", Generation.CURRENT),
        (Generation.CURRENT, "sse", Generation.CURRENT),
        (Generation.CURRENT, "devmode", Generation.CURRENT),  # today's agents never see older tools
        (Generation.V1, "mcp", Generation.V1),
        (Generation.V1, "sse", Generation.V1),
        (Generation.V1, "devmode", Generation.DEVMODE),  # reached through CORAL_SSE_URL
    ],
)
def test_route_generation(agent: Generation, route: McpRoute, served: Generation) -> None:
    assert route_generation(agent, route) is served


def target(generation: Generation, transport: str = "sse", **extra: str) -> LaunchTarget:
    return LaunchTarget(
        generation=generation,
        api_url="http://127.0.0.1:5555",
        secret="s3cr3t",
        agent_name=extra.pop("agent_name", "helper"),
        session_id="sid",
        runtime="executable",
        transport=transport,  # type: ignore[arg-type]
        **extra,
    )


def test_connection_urls() -> None:
    base = "http://127.0.0.1:5555/mcp/v1/s3cr3t"
    assert connection_url(target(Generation.CURRENT, "streamable_http")) == f"{base}/mcp"
    assert connection_url(target(Generation.CURRENT, "sse")) == f"{base}/sse/"
    assert connection_url(target(Generation.V1, "streamable_http")) == f"{base}/mcp"
    # 1.0 ended its SSE URL in /sse and named the agent in the query
    assert connection_url(target(Generation.V1, "sse")) == f"{base}/sse?agentId=helper"
    assert connection_url(target(Generation.V1, agent_name="a b/c")) == f"{base}/sse?agentId=a%20b%2Fc"


def test_current_environment() -> None:
    env = launch_env(target(Generation.CURRENT, "streamable_http"))
    assert env == {
        "CORAL_CONNECTION_URL": "http://127.0.0.1:5555/mcp/v1/s3cr3t/mcp",
        "CORAL_AGENT_ID": "helper",
        "CORAL_AGENT_SECRET": "s3cr3t",
        "CORAL_SESSION_ID": "sid",
        "CORAL_API_URL": "http://127.0.0.1:5555",
        "CORAL_RUNTIME_ID": "executable",
    }
    assert (
        launch_env(target(Generation.CURRENT, system_prompt="Be brief."))["CORAL_PROMPT_SYSTEM"]
        == "Be brief."
    )


def test_legacy_environment_adds_what_older_agents_read() -> None:
    env = launch_env(target(Generation.V1))
    current = launch_env(target(Generation.CURRENT))
    assert set(env) - set(current) == {"CORAL_ORCHESTRATION_RUNTIME", "CORAL_SEND_CLAIMS", "CORAL_SSE_URL"}
    assert env["CORAL_ORCHESTRATION_RUNTIME"] == "executable"  # set: orchestrated, no .env loading
    assert env["CORAL_SEND_CLAIMS"] == "0"
    assert env["CORAL_SSE_URL"] == "http://127.0.0.1:5555/mcp/v1/s3cr3t/devmode/sse"
    assert env["CORAL_CONNECTION_URL"] == "http://127.0.0.1:5555/mcp/v1/s3cr3t/sse?agentId=helper"
    assert "CORAL_PROMPT_SYSTEM" not in env
