"""The one map from a generation of agents to its MCP surface: tool names, arguments, results, resources.

- current: today's tools (`coral_wait_for_mention`, `participantNames`), `coral://instruction` and
  `coral://state`, JSON results (text + structured), real errors flagged `isError`.
- 1.0: `coral_wait_for_mentions` (`timeoutMs`, returns every unseen mention), `coral_list_agents`,
  `participantIds` / `participantId`; results `{"result": "<kind>", ...}` as JSON text; errors are
  results too (`{"result": "error"}`: the 1.0 template crashes on `isError`); resources
  `coral://agent/instruction`, `coral://messages` (XML), `coral://agents` and their first spellings
  (`Instruction.resource`, `Message.resource`, `Agent.resource`).
- devmode (agents that build their URL from `CORAL_SSE_URL`): written before 1.0 they call the 1.0
  tools without the `coral_` prefix and read text results (waits return `ResolvedMessage` XML);
  updated for 1.0 they call the 1.0 tools. Both read the same variable, so they get both: the 1.0
  surface plus the unprefixed tools. Only they see a doubled list; today's agents never do.

Every generation runs on the same session model; only the spelling differs. Which generation an
agent gets is decided in `coral_server.registry.editions` (its manifest's edition, and the route).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import mcp.types as types
from pydantic import Field

from coral_server.mcp.legacy_views import (
    V1_AGENTS_URI,
    V1_INSTRUCTION_URI,
    V1_MESSAGES_URI,
    agents_markdown,
    linked_agents,
    messages_xml,
    threads_xml,
    v1_instruction,
    v1_message,
    v1_state,
    v1_thread,
)
from coral_server.mcp.resources import RESOURCES
from coral_server.mcp.surface import (
    Args,
    Caller,
    ResourceDef,
    Spelling,
    Surface,
    ToolDef,
    error_result,
    json_text_result,
    text_result,
)
from coral_server.mcp.tools import TOOLS, CloseSessionArgs, CloseThreadArgs
from coral_server.registry import Generation
from coral_server.sessions import Session, SessionAgent
from coral_server.sessions.model import Message, Thread

__all__ = ["SURFACES", "surface_for"]

# 1.0 waited 30 s when asked nothing; the server's cap still applies.
V1_DEFAULT_WAIT_MS = 30_000


# -- arguments of the older generations (translated to the session's operations below) -------------


class CreateThreadIdsArgs(Args):
    threadName: str = Field(description="Name of the thread.")
    participantIds: list[str] = Field(description="IDs (names) of the agents to include; you are added.")


class ParticipantIdArgs(Args):
    threadId: str = Field(description="ID of the thread.")
    participantId: str = Field(description="ID (name) of the agent.")


class SendMessageMentionsArgs(Args):
    threadId: str = Field(description="ID of the thread.")
    content: str = Field(description="Content of the message.")
    mentions: list[str] = Field(
        default_factory=list,
        description="IDs of the agents to mention: only mentioned agents are made aware of the message.",
    )


class WaitForMentionsArgs(Args):
    timeoutMs: int = Field(
        default=V1_DEFAULT_WAIT_MS, ge=0, description="How long to wait, in ms (capped by the server)."
    )


class ListAgentsArgs(Args):
    includeDetails: bool = Field(default=True, description="Include each agent's description and state.")


# -- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Results:
    """What one older generation answers to each tool."""

    thread_created: Callable[[Session, Thread], Any]
    participant_added: Callable[[str, str], Any]
    participant_removed: Callable[[str, str], Any]
    thread_closed: Callable[[str, str], Any]
    message_sent: Callable[[Session, Message], Any]
    mentions: Callable[[Session, list[Message]], Any]  # an empty list is a timeout
    agents: Callable[[list[SessionAgent], bool], Any]
    session_closed: Callable[[], Any]


def _v1_mentions(session: Session, messages: list[Message]) -> dict[str, Any]:
    if not messages:
        return {"result": "error_timeout"}
    return {"result": "wait_for_mentions_success", "messages": [v1_message(session, m) for m in messages]}


def _v1_agents(agents: list[SessionAgent], details: bool) -> dict[str, Any]:
    if not details:
        return {"result": "agent_list_success", "agents": [a.name for a in agents]}
    return {
        "result": "agent_list_success_with_details",
        "agents": [{"id": a.name, "description": a.description, "state": v1_state(a)} for a in agents],
    }


V1_RESULTS = _Results(
    thread_created=lambda s, t: {"result": "create_thread_success", "thread": v1_thread(s, t)},
    participant_added=lambda tid, name: {"result": "add_participant_success"},
    participant_removed=lambda tid, name: {"result": "remove_participant_success"},
    thread_closed=lambda tid, summary: {"result": "close_thread_success"},
    message_sent=lambda s, m: {"result": "send_message_success", "message": v1_message(s, m)},
    mentions=_v1_mentions,
    agents=_v1_agents,
    session_closed=lambda: {"result": "close_session_success"},
)


def _devmode_thread(session: Session, thread: Thread) -> str:
    return (
        f"Thread created successfully:\nID: {thread.id}\nName: {thread.name}\n"
        f"Creator: {thread.creator}\nParticipants: {', '.join(thread.participants)}"
    )


def _devmode_mentions(session: Session, messages: list[Message]) -> str:
    if not messages:
        return "No new messages received within the timeout period"
    return messages_xml(session, messages)


def _devmode_agents(agents: list[SessionAgent], details: bool) -> str:
    if not agents:
        return "No agents are currently registered in the system"
    if details:
        listing = "\n".join(
            f"ID: {a.name}, Description: {a.description}" if a.description else f"ID: {a.name}"
            for a in agents
        )
    else:
        listing = ", ".join(a.name for a in agents)
    return f"Registered Agents ({len(agents)}):\n{listing}"


DEVMODE_RESULTS = _Results(
    thread_created=_devmode_thread,
    participant_added=lambda tid, name: f"Participant added successfully to thread {tid}",
    participant_removed=lambda tid, name: f"Participant removed successfully from thread {tid}",
    thread_closed=lambda tid, summary: f"Thread closed successfully with summary: {summary}",
    message_sent=lambda s, m: (
        f"Message sent successfully:\nID: {m.id}\nThread: {m.thread_id}\nSender: {m.sender}"
    ),
    mentions=_devmode_mentions,
    agents=_devmode_agents,
    session_closed=lambda: "Session closed successfully",
)


# -- the older tools: the session's operations under older names and spellings ---------------------


def _legacy_tools(
    prefix: str, results: _Results, spelling: Spelling, *, close_session: bool
) -> tuple[ToolDef, ...]:
    async def list_agents(c: Caller, a: ListAgentsArgs) -> Any:
        return results.agents(linked_agents(c.session, c.agent), a.includeDetails)

    async def create_thread(c: Caller, a: CreateThreadIdsArgs) -> Any:
        thread = c.session.create_thread(c.agent, a.threadName, a.participantIds)
        return results.thread_created(c.session, thread)

    async def add_participant(c: Caller, a: ParticipantIdArgs) -> Any:
        c.session.add_participant(c.agent, a.threadId, a.participantId)
        return results.participant_added(a.threadId, a.participantId)

    async def remove_participant(c: Caller, a: ParticipantIdArgs) -> Any:
        c.session.remove_participant(c.agent, a.threadId, a.participantId)
        return results.participant_removed(a.threadId, a.participantId)

    async def close_thread(c: Caller, a: CloseThreadArgs) -> Any:
        c.session.close_thread(c.agent, a.threadId, a.summary)
        return results.thread_closed(a.threadId, a.summary)

    async def send_message(c: Caller, a: SendMessageMentionsArgs) -> Any:
        message = c.session.send_message(c.agent, a.threadId, a.content, a.mentions)
        await c.session.hand_over(message)
        return results.message_sent(c.session, message)

    async def wait_for_mentions(c: Caller, a: WaitForMentionsArgs) -> Any:
        me = c.agent.name
        return results.mentions(c.session, await c.take_all(lambda m: me in m.mentions, a.timeoutMs))

    async def close_session_(c: Caller, a: CloseSessionArgs) -> Any:
        c.session.request_close("closed_by_agent", f"{c.agent.name}: {a.reason}")
        return results.session_closed()

    tools = [
        ToolDef(f"{prefix}list_agents", "List the agents you can talk to.", ListAgentsArgs, list_agents),
        ToolDef(
            f"{prefix}create_thread",
            "Create a thread with a list of participants.",
            CreateThreadIdsArgs,
            create_thread,
        ),
        ToolDef(
            f"{prefix}add_participant", "Add a participant to a thread.", ParticipantIdArgs, add_participant
        ),
        ToolDef(
            f"{prefix}remove_participant",
            "Remove a participant from a thread.",
            ParticipantIdArgs,
            remove_participant,
        ),
        ToolDef(f"{prefix}close_thread", "Close a thread with a summary.", CloseThreadArgs, close_thread),
        ToolDef(
            f"{prefix}send_message",
            "Send a message to a thread; mention the agents who should see it.",
            SendMessageMentionsArgs,
            send_message,
        ),
        ToolDef(
            f"{prefix}wait_for_mentions",
            "Wait until you are mentioned in a thread; returns every message mentioning you that you have"
            " not seen yet. Call it when you are done or expect an answer.",
            WaitForMentionsArgs,
            wait_for_mentions,
        ),
    ]
    if close_session:
        tools.append(
            ToolDef(
                f"{prefix}close_session",
                "End the whole session (all agents stop). Use only when the work is done.",
                CloseSessionArgs,
                close_session_,
                plugin="close_session_tool",
            )
        )
    return tuple(replace(tool, spelling=spelling) for tool in tools)


# -- resources -------------------------------------------------------------------------------------


def _messages(uri: str) -> ResourceDef:
    return ResourceDef(uri, "messages", "Your threads and their messages", threads_xml, "application/xml")


def _instruction(uri: str) -> ResourceDef:
    return ResourceDef(uri, "instructions", "How to use the Coral tools", v1_instruction)


def _agents(uri: str) -> ResourceDef:
    return ResourceDef(uri, "agents", "The agents you can talk to", agents_markdown)


V1_RESOURCES: tuple[ResourceDef, ...] = (
    _instruction(V1_INSTRUCTION_URI),
    _messages(V1_MESSAGES_URI),
    _agents(V1_AGENTS_URI),
    # 1.0.0's first spellings, still answered by later 1.0 releases.
    _instruction("Instruction.resource"),
    _messages("Message.resource"),
    _agents("Agent.resource"),
)


# -- the surfaces ----------------------------------------------------------------------------------


def _v1_failure(message: str) -> types.CallToolResult:
    return json_text_result({"result": "error", "message": message})


def _v1_input_failure(message: str) -> types.CallToolResult:
    return json_text_result({"result": "tool_input_error", "message": message})


def _devmode_failure(message: str) -> types.CallToolResult:
    return text_result(f"Error: {message}")


V1_SPELLING = Spelling(json_text_result, _v1_failure, _v1_input_failure)
DEVMODE_SPELLING = Spelling(text_result, _devmode_failure, _devmode_failure)
V1_TOOLS = _legacy_tools("coral_", V1_RESULTS, V1_SPELLING, close_session=True)
DEVMODE_TOOLS = _legacy_tools("", DEVMODE_RESULTS, DEVMODE_SPELLING, close_session=False)

SURFACES: dict[Generation, Surface] = {
    Generation.CURRENT: Surface(Generation.CURRENT, TOOLS, RESOURCES, error_result),
    Generation.V1: Surface(Generation.V1, V1_TOOLS, V1_RESOURCES, _v1_failure),
    Generation.DEVMODE: Surface(Generation.DEVMODE, V1_TOOLS + DEVMODE_TOOLS, V1_RESOURCES, _devmode_failure),
}


def surface_for(generation: Generation) -> Surface:
    """What an agent of `generation` sees over MCP."""
    return SURFACES[generation]
