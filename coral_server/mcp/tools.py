"""The Coral collaboration tools agents call over MCP: argument models, handlers, results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp.types as types
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coral_server.mcp.delivery import Delivery
from coral_server.sessions import CustomToolSpec, Session, SessionAgent, SessionError
from coral_server.sessions.mailbox import MessageFilter
from coral_server.sessions.model import Message
from coral_server.tools import CustomToolError, CustomToolForwarder


class _Args(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateThreadArgs(_Args):
    threadName: str = Field(description="Name (topic) of the new thread.")
    participantNames: list[str] = Field(description="Agents to add; you are added automatically.")


class CloseThreadArgs(_Args):
    threadId: str = Field(description="The thread to close.")
    summary: str = Field(description="A summary of the thread's outcome.")


class ParticipantArgs(_Args):
    threadId: str = Field(description="The thread.")
    participantName: str = Field(description="The agent to add or remove.")


class SendMessageArgs(_Args):
    threadId: str = Field(description="The thread to post in; you must be a participant.")
    content: str = Field(description="The message text.")
    mentions: list[str] = Field(description="Names of participants to mention (they are woken up).")


class WaitArgs(_Args):
    currentUnixTime: int | None = Field(
        default=None, description="Unix time in ms of your last wait (accepted for compatibility)."
    )
    maxWaitMs: int = Field(
        default=60_000, ge=0, description="How long to wait, in ms (capped by the server)."
    )


class WaitForAgentArgs(WaitArgs):
    agentName: str = Field(description="Only return messages sent by this agent.")


class CloseSessionArgs(_Args):
    reason: str = Field(description="Why the session should end.")


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity behind a tool call, fixed by the agent's secret in the MCP URL."""

    session: Session
    agent: SessionAgent
    wait_cap_ms: int
    delivery: Delivery
    forwarder: CustomToolForwarder | None = None

    async def wait(self, accept: MessageFilter, args: WaitArgs) -> dict[str, Any]:
        timeout = min(args.maxWaitMs, self.wait_cap_ms) / 1000
        take = self.session.wait(self.agent, accept, timeout)
        return _received(await self.delivery.wait(self.agent.mailbox, take))


Handler = Callable[[Caller, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ToolDef:
    name: str
    description: str
    args: type[_Args]
    handler: Handler
    plugin: str | None = None

    def to_mcp(self) -> types.Tool:
        return types.Tool(name=self.name, description=self.description, input_schema=_input_schema(self.args))


def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def _received(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {"status": "Timeout reached"}
    return {"status": "Message received", "message": message.to_mcp()}


async def _create_thread(c: Caller, a: CreateThreadArgs) -> dict[str, Any]:
    thread = c.session.create_thread(c.agent, a.threadName, a.participantNames)
    return {"thread": thread.to_mcp()}


async def _close_thread(c: Caller, a: CloseThreadArgs) -> dict[str, Any]:
    c.session.close_thread(c.agent, a.threadId, a.summary)
    return {"message": f"Successfully closed thread {a.threadId}"}


async def _add_participant(c: Caller, a: ParticipantArgs) -> dict[str, Any]:
    c.session.add_participant(c.agent, a.threadId, a.participantName)
    return {"message": f"Successfully added participant {a.participantName} to thread {a.threadId}"}


async def _remove_participant(c: Caller, a: ParticipantArgs) -> dict[str, Any]:
    c.session.remove_participant(c.agent, a.threadId, a.participantName)
    return {"message": f"Successfully removed participant {a.participantName} from thread {a.threadId}"}


async def _send_message(c: Caller, a: SendMessageArgs) -> dict[str, Any]:
    message = c.session.send_message(c.agent, a.threadId, a.content, a.mentions)
    return {"status": "Message sent successfully", "message": message.to_mcp()}


async def _wait_for_message(c: Caller, a: WaitArgs) -> dict[str, Any]:
    return await c.wait(lambda m: True, a)


async def _wait_for_mention(c: Caller, a: WaitArgs) -> dict[str, Any]:
    me = c.agent.name
    return await c.wait(lambda m: me in m.mentions, a)


async def _wait_for_agent(c: Caller, a: WaitForAgentArgs) -> dict[str, Any]:
    c.session.agent(a.agentName)  # unknown agent: a clear error instead of a silent long wait
    sender = a.agentName
    return await c.wait(lambda m: m.sender == sender, a)


async def _close_session(c: Caller, a: CloseSessionArgs) -> dict[str, Any]:
    c.session.request_close("closed_by_agent", f"{c.agent.name}: {a.reason}")
    return {"message": "Successfully closed session"}


_WAIT_NOTE = (
    " Returns {status, message} or {status: 'Timeout reached'}. Messages that arrived while you were busy"
    " are queued and returned first, in order, so nothing is missed."
)

TOOLS: tuple[ToolDef, ...] = (
    ToolDef(
        "coral_create_thread",
        "Create a thread (a conversation topic) with the given participants; you become a participant.",
        CreateThreadArgs,
        _create_thread,
    ),
    ToolDef(
        "coral_add_participant", "Add an agent to a thread you are in.", ParticipantArgs, _add_participant
    ),
    ToolDef(
        "coral_remove_participant",
        "Remove an agent from a thread you are in.",
        ParticipantArgs,
        _remove_participant,
    ),
    ToolDef(
        "coral_close_thread", "Close a thread with a summary of its outcome.", CloseThreadArgs, _close_thread
    ),
    ToolDef(
        "coral_send_message",
        "Send a message in a thread; mentioned agents are woken from coral_wait_for_mention.",
        SendMessageArgs,
        _send_message,
    ),
    ToolDef(
        "coral_wait_for_message",
        "Wait for the next message in any of your threads." + _WAIT_NOTE,
        WaitArgs,
        _wait_for_message,
    ),
    ToolDef(
        "coral_wait_for_mention",
        "Wait until another agent mentions you in a message." + _WAIT_NOTE,
        WaitArgs,
        _wait_for_mention,
    ),
    ToolDef(
        "coral_wait_for_agent",
        "Wait for the next message sent by a specific agent." + _WAIT_NOTE,
        WaitForAgentArgs,
        _wait_for_agent,
    ),
    ToolDef(
        "coral_close_session",
        "End the whole session (all agents stop). Use only when the work is done.",
        CloseSessionArgs,
        _close_session,
        plugin="close_session_tool",
    ),
)
TOOLS_BY_NAME = {t.name: t for t in TOOLS}


def tools_for(agent: SessionAgent) -> list[ToolDef]:
    """The tools this agent sees: the collaboration tools plus those its plugins grant."""
    return [t for t in TOOLS if t.plugin is None or t.plugin in agent.plugins]


def _custom_tools(caller: Caller) -> list[CustomToolSpec]:
    tools = caller.session.custom_tools
    return [tools[name] for name in caller.agent.custom_tool_access if name in tools]


def _custom_to_mcp(tool: CustomToolSpec) -> types.Tool:
    output = tool.output_schema if tool.output_schema and tool.output_schema.get("type") == "object" else None
    return types.Tool(
        name=tool.name, description=tool.description, input_schema=tool.input_schema, output_schema=output
    )


def list_tools(caller: Caller) -> list[types.Tool]:
    """What this agent sees: the collaboration tools, its plugins' tools, its custom tools."""
    return [t.to_mcp() for t in tools_for(caller.agent)] + [_custom_to_mcp(t) for t in _custom_tools(caller)]


async def _call_custom(
    caller: Caller, tool: CustomToolSpec, arguments: dict[str, Any]
) -> types.CallToolResult:
    if caller.forwarder is None:
        return error_result(f"custom tool {tool.name} is not available on this server")
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
        return error_result(str(exc))
    caller.session.custom_tool_called(
        caller.agent.name, tool.name, "ok", duration_ms=outcome.duration_ms, status=outcome.status
    )
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=outcome.text)],
        structured_content=outcome.structured,
        is_error=False,
    )


def json_result(payload: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    text = orjson.dumps(payload).decode()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=payload, is_error=error
    )


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        structured_content={"error": message},
        is_error=True,
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "Invalid arguments: " + "; ".join(parts)


async def call_tool(caller: Caller, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
    """Run one tool call for `caller`; every failure becomes a tool error, never an exception."""
    tool = TOOLS_BY_NAME.get(name)
    if tool is None or tool not in tools_for(caller.agent):
        custom = next((t for t in _custom_tools(caller) if t.name == name), None)
        if custom is None:
            return error_result(f"Tool {name} not found")
        await caller.session.ready(caller.agent)
        return await _call_custom(caller, custom, arguments or {})
    try:
        args = tool.args.model_validate(arguments or {})
    except ValidationError as exc:
        return error_result(_describe(exc))
    await caller.session.ready(caller.agent)
    try:
        payload = await tool.handler(caller, args)
    except SessionError as exc:
        return error_result(str(exc))
    return json_result(payload)
