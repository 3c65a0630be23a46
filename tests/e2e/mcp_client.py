"""The test side of an agent: the official MCP SDK client, connected to an agent's URL."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

# For tests that speak raw JSON-RPC over HTTP (streamable HTTP, handshake era).
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


class McpAgent:
    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, tool: str, **arguments: Any) -> tuple[bool, Any]:
        """Call a tool; returns (is_error, parsed JSON or raw text)."""
        result = await self.session.call_tool(tool, arguments)
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        try:
            return bool(result.is_error), json.loads(text)
        except json.JSONDecodeError:
            return bool(result.is_error), text

    async def ok(self, tool: str, **arguments: Any) -> Any:
        is_error, payload = await self.call(tool, **arguments)
        assert not is_error, payload
        return payload


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[McpAgent]:
    if urlsplit(url).path.rstrip("/").endswith("/sse"):
        async with sse_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield McpAgent(session)
    else:
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield McpAgent(session)
