"""The MCP server object: one SDK `Server` whose handlers act for the agent behind each request."""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from coral_server import __version__
from coral_server.mcp.surface import (
    Caller,
    call_tool,
    error_result,
    list_resources,
    list_tools,
    read_resource,
)

CALLER_KEY = "coral.caller"


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
    return types.ListResourcesResult(resources=list_resources(caller_of(ctx)))


async def _read_resource(
    ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    try:
        return read_resource(caller_of(ctx), str(params.uri))
    except LookupError as exc:
        raise ValueError(str(exc)) from None


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
