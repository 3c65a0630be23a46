"""What an agent sees over MCP (a generation's tools and resources) and the dispatch of its calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp.types as types
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from coral_server.mcp.request_waits import RequestWaits
from coral_server.registry import Generation
from coral_server.sessions import CustomToolSpec, Session, SessionAgent, SessionError
from coral_server.sessions.mailbox import MessageFilter
from coral_server.sessions.model import Message
from coral_server.tools import CustomToolError, CustomToolForwarder


class Args(BaseModel):
    """Base of every tool's argument model: unknown arguments are ignored, as the reference does."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True, slots=True)
class Spelling:
    """How a generation writes a tool's result, its refusals and its argument errors."""

    success: Callable[[Any], types.CallToolResult]
    failure: Callable[[str], types.CallToolResult]  # a rule or the session said no
    input_failure: Callable[[str], types.CallToolResult]  # the arguments did not fit


# -- result spellings ------------------------------------------------------------------------------


def json_result(payload: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    """JSON as text and as structured content (today's spelling)."""
    text = orjson.dumps(payload).decode()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=payload, is_error=error
    )


def error_result(message: str) -> types.CallToolResult:
    """Today's tool error: the message as text, `{"error": ...}` as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        structured_content={"error": message},
        is_error=True,
    )


def text_result(text: str) -> types.CallToolResult:
    """Plain text and nothing else (never an error: older agents crash on `isError`)."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=False)


def json_text_result(payload: dict[str, Any]) -> types.CallToolResult:
    """JSON as text only, never flagged as an error (the 1.0 spelling)."""
    return text_result(orjson.dumps(payload).decode())


TODAY = Spelling(json_result, error_result, error_result)


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity behind a tool call, fixed by the agent's secret in the MCP URL, and its surface."""

    session: Session
    agent: SessionAgent
    wait_cap_ms: int
    waits: RequestWaits
    surface: Surface
    forwarder: CustomToolForwarder | None = None

    async def take(self, accept: MessageFilter, max_wait_ms: int) -> Message | None:
        """The next queued message `accept` takes, waiting up to `max_wait_ms` (capped by the server)."""
        timeout = min(max_wait_ms, self.wait_cap_ms) / 1000
        take = self.session.wait(self.agent, accept, timeout)
        return await self.waits.wait(self.agent.mailbox, take)

    async def take_all(self, accept: MessageFilter, max_wait_ms: int) -> list[Message]:
        """Wait like `take`, then also every other message `accept` takes that is already queued."""
        first = await self.take(accept, max_wait_ms)
        if first is None:
            return []
        taken = [first]
        while True:
            more = await self.waits.wait(self.agent.mailbox, self.session.wait(self.agent, accept, 0))
            if more is None:
                return taken
            taken.append(more)


Handler = Callable[[Caller, Any], Awaitable[Any]]
Renderer = Callable[[Session, SessionAgent], str]


@dataclass(frozen=True, slots=True)
class ToolDef:
    """One tool: its name, its arguments, a handler, and how its results are written."""

    name: str
    description: str
    args: type[Args]
    handler: Handler
    plugin: str | None = None
    spelling: Spelling = TODAY

    def to_mcp(self) -> types.Tool:
        return types.Tool(name=self.name, description=self.description, input_schema=_input_schema(self.args))


@dataclass(frozen=True, slots=True)
class ResourceDef:
    """One resource: its URI and how its text is rendered for the reading agent."""

    uri: str
    name: str
    description: str
    render: Renderer
    mime_type: str = "text/markdown"

    def to_mcp(self) -> types.Resource:
        return types.Resource(
            uri=self.uri, name=self.name, description=self.description, mime_type=self.mime_type
        )


@dataclass(frozen=True, slots=True)
class Surface:
    """Everything one generation of agents sees: tools and resources."""

    generation: Generation
    tools: tuple[ToolDef, ...]
    resources: tuple[ResourceDef, ...]
    # Unknown tools and failed custom tools, in the generation's spelling.
    failure: Callable[[str], types.CallToolResult]

    def tools_for(self, agent: SessionAgent) -> list[ToolDef]:
        """The tools this agent sees: the collaboration tools plus those its plugins grant."""
        return [t for t in self.tools if t.plugin is None or t.plugin in agent.plugins]

    def resource(self, uri: str) -> ResourceDef | None:
        return next((r for r in self.resources if r.uri == uri), None)


def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


# -- dispatch --------------------------------------------------------------------------------------


def _custom_tools(caller: Caller) -> list[CustomToolSpec]:
    tools = caller.session.custom_tools
    return [tools[name] for name in caller.agent.custom_tool_access if name in tools]


def _custom_to_mcp(tool: CustomToolSpec) -> types.Tool:
    output = tool.output_schema if tool.output_schema and tool.output_schema.get("type") == "object" else None
    return types.Tool(
        name=tool.name, description=tool.description, input_schema=tool.input_schema, output_schema=output
    )


def list_tools(caller: Caller) -> list[types.Tool]:
    """What this agent sees: its generation's tools, its plugins' tools, its custom tools."""
    own = [t.to_mcp() for t in caller.surface.tools_for(caller.agent)]
    return own + [_custom_to_mcp(t) for t in _custom_tools(caller)]


async def _call_custom(
    caller: Caller, tool: CustomToolSpec, arguments: dict[str, Any]
) -> types.CallToolResult:
    if caller.forwarder is None:
        return caller.surface.failure(f"custom tool {tool.name} is not available on this server")
    try:
        outcome = await caller.forwarder.call(
            tool,
            arguments,
            namespace=caller.session.namespace,
            session_id=caller.session.id,
            agent=caller.agent.name,
        )
    except CustomToolError as exc:
        caller.session.custom_tool_called(
            caller.agent.name, tool.name, exc.outcome, duration_ms=exc.duration_ms, status=exc.status
        )
        return caller.surface.failure(str(exc))
    caller.session.custom_tool_called(
        caller.agent.name, tool.name, "ok", duration_ms=outcome.duration_ms, status=outcome.status
    )
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=outcome.text)],
        structured_content=outcome.structured,
        is_error=False,
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "Invalid arguments: " + "; ".join(parts)


async def call_tool(caller: Caller, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
    """Run one tool call for `caller`; every failure becomes a result of its surface, never an exception."""
    surface = caller.surface
    tool = next((t for t in surface.tools_for(caller.agent) if t.name == name), None)
    if tool is None:
        custom = next((t for t in _custom_tools(caller) if t.name == name), None)
        if custom is None:
            return surface.failure(f"Tool {name} not found")
        await caller.session.ready(caller.agent)
        return await _call_custom(caller, custom, arguments or {})
    spelling = tool.spelling
    try:
        args = tool.args.model_validate(arguments or {})
    except ValidationError as exc:
        return spelling.input_failure(_describe(exc))
    await caller.session.ready(caller.agent)
    try:
        payload = await tool.handler(caller, args)
    except SessionError as exc:
        return spelling.failure(str(exc))
    return spelling.success(payload)


def list_resources(caller: Caller) -> list[types.Resource]:
    return [r.to_mcp() for r in caller.surface.resources]


def read_resource(caller: Caller, uri: str) -> types.ReadResourceResult:
    """The text of one of the caller's resources; an unknown URI raises ``LookupError``."""
    resource = caller.surface.resource(uri)
    if resource is None:
        raise LookupError(f"unknown resource {uri}")
    text = resource.render(caller.session, caller.agent)
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type=resource.mime_type, text=text)]
    )
