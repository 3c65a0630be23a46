"""Tests of the agent helper library.

The first tests are plain unit tests; the last ones drive `CoralAgent` against a real Coral
server running in-process (`coral` fixture, or `start_coral` where the test stops the
server itself), over both MCP transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from mcp.types import CallToolResult, TextContent

from coral_server.agent import (
    AgentEnv,
    ConfigError,
    ConnectionLost,
    CoralAgent,
    ToolError,
    is_disconnect,
    message_of,
    parse_tool_result,
    result_text,
    transport_for,
)
from tests.conftest import Coral, agent_spec, session_body, start_coral

ROOT = Path(__file__).resolve().parents[2]


# -- transport selection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:5555/mcp/v1/abc/mcp", "streamable_http"),
        ("http://127.0.0.1:5555/mcp/v1/abc/sse/", "sse"),
        ("http://127.0.0.1:5555/mcp/v1/abc/sse", "sse"),
        ("https://example.com/sse?x=1", "sse"),
        ("http://127.0.0.1:5555/mcp/v1/sse-agent/mcp", "streamable_http"),
        ("http://127.0.0.1:5555/mcp/v1/abcsse/", "streamable_http"),
    ],
)
def test_transport_for(url: str, expected: str) -> None:
    assert transport_for(url) == expected


@pytest.mark.parametrize("url", ["", "127.0.0.1:5555/mcp", "ftp://host/mcp", "http:///mcp"])
def test_transport_for_rejects_non_http(url: str) -> None:
    with pytest.raises(ConfigError):
        transport_for(url)


# -- environment --------------------------------------------------------------------------------


def test_env_missing_connection_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="CORAL_CONNECTION_URL is not set"):
        AgentEnv.from_environ({"CORAL_AGENT_ID": "a"})
    with pytest.raises(ConfigError, match="CORAL_CONNECTION_URL"):
        CoralAgent.from_env({"CORAL_CONNECTION_URL": "   "})


def test_env_invalid_connection_url() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        AgentEnv.from_environ({"CORAL_CONNECTION_URL": "nonsense"})


def test_env_reads_every_variable() -> None:
    env = AgentEnv.from_environ(
        {
            "CORAL_CONNECTION_URL": "http://127.0.0.1:1/mcp/v1/s/sse/",
            "CORAL_AGENT_ID": "echo-a",
            "CORAL_AGENT_SECRET": "s",
            "CORAL_SESSION_ID": "sid",
            "CORAL_API_URL": "http://127.0.0.1:1",
            "CORAL_RUNTIME_ID": "executable",
            "CORAL_PROMPT_SYSTEM": "be nice",
        }
    )
    assert env == AgentEnv(
        "http://127.0.0.1:1/mcp/v1/s/sse/",
        "echo-a",
        "s",
        "sid",
        "http://127.0.0.1:1",
        "executable",
        "be nice",
    )
    agent = CoralAgent.from_env({"CORAL_CONNECTION_URL": env.connection_url, "CORAL_AGENT_ID": "echo-a"})
    assert (agent.name, agent.transport) == ("echo-a", "sse")


def test_not_connected_is_an_error() -> None:
    agent = CoralAgent("http://127.0.0.1:1/mcp", "a")
    with pytest.raises(ConnectionLost):
        _ = agent.session


# -- results ------------------------------------------------------------------------------------


def _result(text: str, *, error: bool = False, structured: dict[str, Any] | None = None) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], is_error=error, structured_content=structured
    )


def test_parse_tool_result_json_text() -> None:
    result = _result(json.dumps({"status": "Message sent successfully", "message": {"id": "m1"}}))
    assert parse_tool_result(result) == {"status": "Message sent successfully", "message": {"id": "m1"}}


def test_parse_tool_result_prefers_structured_content() -> None:
    assert parse_tool_result(_result("ignored", structured={"a": 1})) == {"a": 1}


def test_parse_tool_result_non_json_and_non_object() -> None:
    assert parse_tool_result(_result("plain words")) == {"text": "plain words"}
    assert parse_tool_result(_result("[1, 2]")) == {"value": [1, 2]}
    assert parse_tool_result(CallToolResult(content=[])) == {}


def test_parse_tool_result_error_raises_tool_error() -> None:
    with pytest.raises(ToolError, match="Thread not found") as info:
        parse_tool_result(_result("Thread not found", error=True), "coral_send_message")
    assert info.value.tool == "coral_send_message"
    assert info.value.message == "Thread not found"


def test_result_text_joins_text_blocks() -> None:
    result = CallToolResult(content=[TextContent(type="text", text="a"), TextContent(type="text", text="b")])
    assert result_text(result) == "ab"


def test_message_of() -> None:
    message = {"id": "m", "threadId": "t", "text": "hi", "senderName": "x", "mentionNames": []}
    assert message_of({"status": "Message received", "message": message}) == message
    assert message_of({"status": "Timeout reached"}) is None


def test_is_disconnect() -> None:
    assert is_disconnect(ConnectionLost("gone"))
    assert is_disconnect(ConnectionRefusedError())
    assert is_disconnect(BaseExceptionGroup("g", [OSError(), asyncio.CancelledError()]))
    assert not is_disconnect(ToolError("nope"))
    assert not is_disconnect(ValueError("bug"))
    assert not is_disconnect(BaseExceptionGroup("g", [OSError(), ValueError()]))


def test_import_is_lean() -> None:
    code = (
        "import sys, coral_server.agent; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'mcp', 'httpx2') "
        "or m.startswith(('coral_server.api', 'coral_server.sessions', 'coral_server.mcp', "
        "'coral_server.runtimes', 'coral_server.app'))); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- against a real Coral server (`coral` fixture) ----------------------------------------------

TRANSPORTS = pytest.mark.parametrize("sse", [False, True], ids=["streamable_http", "sse"])


def _sse(url: str) -> str:
    """The SSE endpoint of an agent, from its streamable HTTP connection URL."""
    return url.rsplit("/", 1)[0] + "/sse/"


async def _urls(coral: Coral, names: list[str], *, sse: bool = False, namespace: str = "client") -> list[str]:
    """A session of external agents `names` (all linked); their MCP URLs."""
    ns, sid = await coral.create_session(
        session_body([agent_spec(n, runtime="external") for n in names], namespace=namespace)
    )
    urls = [await coral.connection_url(ns, sid, n) for n in names]
    return [_sse(u) if sse else u for u in urls]


@TRANSPORTS
async def test_client_against_coral(coral: Coral, sse: bool) -> None:
    tester_url, echo_url = await _urls(coral, ["tester", "echo"], sse=sse)
    async with CoralAgent(tester_url, "tester") as tester, CoralAgent(echo_url, "echo") as echo:
        assert tester.transport == ("sse" if sse else "streamable_http")
        names = {tool.name for tool in await tester.tools()}
        assert {"coral_create_thread", "coral_send_message", "coral_wait_for_mention"} <= names
        assert "coral_wait_for_mention" in await tester.instruction()
        thread = await tester.create_thread("t", ["echo"])
        assert sorted(thread["participants"]) == ["echo", "tester"]
        sent = await tester.send_message(thread["id"], "hello", ["echo"])
        assert sent["text"] == "hello"
        got = await echo.wait_for_mention(5000)
        assert got is not None and got["id"] == sent["id"]
        assert await echo.wait_for_mention(50) is None
        with pytest.raises(ToolError, match="not found") as info:
            await tester.send_message("missing", "x", [])
        assert info.value.tool == "coral_send_message"
        state = await tester.state()
        assert "You are an agent named tester" in state and thread["id"] in state


async def test_serve_calls_handler_and_stops(coral: Coral) -> None:
    tester_url, bot_url = await _urls(coral, ["tester", "bot"])
    seen: list[str] = []

    async def handler(agent: CoralAgent, message: dict[str, Any]) -> None:
        seen.append(message["text"])
        if message["text"] == "boom":
            raise RuntimeError("handler bug is logged, loop goes on")
        if message["text"] == "stop":
            agent.stop()

    async with CoralAgent(tester_url, "tester") as tester, CoralAgent(bot_url, "bot") as bot:
        thread = await tester.create_thread("t", ["bot"])
        for text in ("one", "boom", "two", "stop"):
            await tester.send_message(thread["id"], text, ["bot"])
        await asyncio.wait_for(bot.serve(handler, max_wait_ms=200), 10)
    assert seen == ["one", "boom", "two", "stop"]


async def _serve_until_gone(url: str, connected: Callable[[], Awaitable[None]], go_away: Any) -> None:
    """Run `serve()` for agent `bot` at `url`; once connected, `go_away()`; serve() must return."""

    async def handler(agent: CoralAgent, message: dict[str, Any]) -> None:
        raise AssertionError("no mention expected")

    async def serve() -> None:
        async with CoralAgent(url, "bot") as bot:
            await bot.serve(handler, max_wait_ms=200)

    task = asyncio.create_task(serve())
    try:
        await asyncio.wait_for(connected(), 15)
        await go_away()
        try:
            await asyncio.wait_for(task, 15)  # serve() returns...
        except BaseException as exc:  # ...though leaving the dead transport may raise
            assert is_disconnect(exc), exc
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@TRANSPORTS
async def test_serve_returns_when_session_is_closed(coral: Coral, sse: bool) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("bot", runtime="external")]))
    url = await coral.connection_url(ns, sid, "bot")

    async def connected() -> None:
        await coral.wait_for(ns, sid, lambda s: s["agents"][0]["isWaiting"])

    async def close() -> None:
        status, _ = await coral.request("DELETE", f"/api/v1/local/session/{ns}/{sid}")
        assert status == 200

    await _serve_until_gone(_sse(url) if sse else url, connected, close)


@TRANSPORTS
async def test_serve_returns_when_server_stops(tmp_path: Path, sse: bool) -> None:
    # start_coral is an async generator: aclose() stops the server (closing its sessions).
    server = cast(AsyncGenerator[Coral, None], start_coral(tmp_path))
    coral = await anext(server)
    try:
        ns, sid = await coral.create_session(session_body([agent_spec("bot", runtime="external")]))
        url = await coral.connection_url(ns, sid, "bot")

        async def connected() -> None:
            await coral.wait_for(ns, sid, lambda s: s["agents"][0]["isWaiting"])

        await _serve_until_gone(_sse(url) if sse else url, connected, server.aclose)
    finally:
        await server.aclose()


async def test_run_forever_exits_cleanly_on_sigterm(coral: Coral) -> None:
    ns, sid = await coral.create_session(
        session_body([agent_spec("tester", runtime="external"), agent_spec("echo", runtime="external")])
    )
    echo_url = await coral.connection_url(ns, sid, "echo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORAL_")}
    env.update(
        {
            "CORAL_CONNECTION_URL": echo_url,
            "CORAL_AGENT_ID": "echo",
            "CORAL_SESSION_ID": sid,
            "CORAL_API_URL": coral.base_url,
            "CORAL_RUNTIME_ID": "external",
            "PREFIX": "E: ",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "agents" / "echo" / "agent.py"),
        cwd=ROOT / "registry" / "echo",
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        # A cold interpreter importing the MCP SDK takes seconds on a busy machine: the reply's 10 s
        # count from when the echo agent is connected, not from its start.
        await coral.wait_for(
            ns, sid, lambda s: any(a["isConnected"] for a in s["agents"] if a["name"] == "echo")
        )
        async with CoralAgent(await coral.connection_url(ns, sid, "tester"), "tester") as tester:
            thread = await tester.create_thread("t", ["echo"])
            await tester.send_message(thread["id"], "ping", ["echo"])
            reply = await tester.wait_for_mention(10_000)
            assert reply is not None and reply["text"] == "E: ping"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()


async def test_run_forever_without_env_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORAL_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "agents" / "echo" / "agent.py"),
        env=env,
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"CORAL_CONNECTION_URL is not set" in stderr
