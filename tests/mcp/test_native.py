"""The native handshake-era transport answers exactly as the SDK's does, and keeps the same rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coral_server.app import MCP
from tests.conftest import Coral, agent_spec, session_body, start_coral
from tests.e2e.mcp_client import HEADERS, connect

# A scripted conversation of agent "a" (JSON-RPC bodies, in order); notifications have no id.
SCRIPT: list[dict[str, Any]] = [
    {"method": "notifications/initialized"},
    {"id": 2, "method": "tools/list", "params": {}},
    {"id": 3, "method": "resources/list"},
    {"id": 4, "method": "resources/read", "params": {"uri": "coral://instruction"}},
    {"id": 5, "method": "resources/read", "params": {"uri": "coral://nope"}},
    {
        "id": 6,
        "method": "tools/call",
        "params": {
            "name": "coral_create_thread",
            "arguments": {"threadName": "t", "participantNames": ["b"]},
        },
    },
    {"id": 7, "method": "tools/call", "params": {"name": "coral_no_such_tool", "arguments": {}}},
    {"id": 8, "method": "tools/call", "params": {"name": "coral_send_message", "arguments": {"threadId": 5}}},
    {
        "id": 9,
        "method": "tools/call",
        "params": {"name": "coral_wait_for_message", "arguments": {"maxWaitMs": 0}},
    },
    {"id": 10, "method": "ping"},
    {"id": 11, "method": "prompts/list"},
    {
        "id": "text-id",
        "method": "tools/call",
        "params": {"name": "coral_close_thread", "arguments": {"threadId": "x", "summary": "s"}},
    },
    {"id": 12, "method": "resources/read", "params": {"uri": "coral://state"}},
]

_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{13}|\d{4}-\d\d-\d\dT[\d:.]+Z?"
)


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return _VOLATILE.sub("<v>", value)
    if isinstance(value, list | tuple):
        return [_normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    return value


async def _transcript(coral: Coral, version: str) -> list[tuple[int, Any]]:
    agents = [agent_spec("a", runtime="external"), agent_spec("b", runtime="external")]
    ns, sid = await coral.create_session(session_body(agents))
    url = await coral.connection_url(ns, sid, "a")
    out: list[tuple[int, Any]] = []
    async with aiohttp.ClientSession() as http:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        async with http.post(url, json=init, headers=HEADERS) as resp:
            answer = await resp.json()
            out.append((resp.status, answer))
            mcp_sid = resp.headers["mcp-session-id"]
        negotiated = answer["result"]["protocolVersion"]
        headers = {**HEADERS, "mcp-session-id": mcp_sid, "mcp-protocol-version": negotiated}
        for step in SCRIPT:
            async with http.post(url, json={"jsonrpc": "2.0", **step}, headers=headers) as resp:
                text = await resp.text()
                out.append((resp.status, (await resp.json()) if text else None))
        async with http.delete(url, headers=headers) as resp:
            out.append((resp.status, None))
        async with http.post(url, json={"jsonrpc": "2.0", **SCRIPT[1]}, headers=headers) as resp:
            out.append((resp.status, None))  # the session is gone
    return _normalised(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2025-03-26", "1999-01-01"])
async def test_native_and_sdk_transcripts_match(tmp_path: Path, version: str) -> None:
    transcripts = []
    for transport in ("native", "sdk"):
        async for coral in start_coral(tmp_path / transport, mcp_transport=transport):
            transcripts.append(await _transcript(coral, version))
    native, sdk = transcripts
    for step, (mine, theirs) in enumerate(zip(native, sdk, strict=True)):
        assert mine == theirs, f"step {step}"


async def test_the_official_client_is_served_natively(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("a", runtime="external")]))
    async with connect(await coral.connection_url(ns, sid, "a")) as agent:
        assert (await agent.session.send_ping()) is not None
        await agent.ok("coral_wait_for_message", maxWaitMs=0)
        native = coral.app[MCP].native
        assert native is not None and native.count() == 1
    assert native.count() == 0  # the client's DELETE ended it


async def test_a_closed_session_ends_its_native_connections(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("a", runtime="external")]))
    async with connect(await coral.connection_url(ns, sid, "a")):
        assert coral.app[MCP].native.count() == 1
        await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
        assert coral.app[MCP].native.count() == 0


async def test_malformed_posts_are_clear_errors(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("a", runtime="external")]))
    url = await coral.connection_url(ns, sid, "a")
    async with aiohttp.ClientSession() as http:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18"},
        }
        async with http.post(url, json=init, headers=HEADERS) as resp:
            mcp_sid = resp.headers["mcp-session-id"]
        headers = {**HEADERS, "mcp-session-id": mcp_sid}
        async with http.post(url, data=b"{not json", headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == -32700
        async with http.post(
            url, json=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}], headers=headers
        ) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == -32600
        async with http.post(url, data=b"{}", headers={**headers, "Content-Type": "text/plain"}) as resp:
            assert resp.status == 415
        bad_version = {**headers, "mcp-protocol-version": "2020-01-01"}
        async with http.post(
            url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=bad_version
        ) as resp:
            assert resp.status == 400
