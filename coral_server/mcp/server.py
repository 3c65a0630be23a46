"""The MCP server object: one SDK `Server` whose handlers act for the agent behind each request."""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from coral_server import __version__
from coral_server.mcp.resources import INSTRUCTION, INSTRUCTION_URI, STATE_URI, state_text
from coral_server.mcp.tools import Caller, call_tool, error_result, list_tools

CALLER_KEY = "coral.caller"

_RESOURCES = [
    types.Resource(
        uri=INSTRUCTION_URI,
        name="instruction",
        description="How to use the Coral tools",
        mime_type="text/markdown",
    ),
    types.Resource(
        uri=STATE_URI,
        name="state",
        description="You, the agents you are linked to, and your threads",
        mime_type="text/markdown",
    ),
]


class UnknownCaller(Exception):
    """A request reached a handler without an agent identity (cannot happen through our routes)."""


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    caller = request.scope.get(CALLER_KEY) if request is not None else None
    if not isinstance(caller, Caller):
        raise UnknownCaller("request carries no agent identity")
    return caller


async def _list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=list_tools(caller_of(ctx)))


async def _call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    try:
        caller = caller_of(ctx)
    except UnknownCaller as exc:
        return error_result(str(exc))
    return await call_tool(caller, params.name, params.arguments)


async def _list_resources(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=_RESOURCES)


async def _read_resource(
    ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    caller = caller_of(ctx)
    uri = str(params.uri)
    if uri == INSTRUCTION_URI:
        text = INSTRUCTION
    elif uri == STATE_URI:
        text = state_text(caller.session, caller.agent)
    else:
        raise ValueError(f"unknown resource {uri}")
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="text/markdown", text=text)]
    )


def build_server() -> Server[Any]:
    server: Server[Any] = Server(
        "Coral Agent Server",
        version=__version__,
        instructions="Collaborate with the other agents of your session through threads and mentions.",
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
        on_list_resources=_list_resources,
        on_read_resource=_read_resource,
    )
    # The default OpenTelemetry middleware costs ~7 % of a call; we log at our own boundary instead.
    server.middleware = []
    return server
