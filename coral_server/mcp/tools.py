"""Today's Coral collaboration tools: argument models, handlers and result shapes."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from coral_server.mcp.surface import Args, Caller, ToolDef
from coral_server.sessions.model import Message


class CreateThreadArgs(Args):
    threadName: str = Field(description="Name (topic) of the new thread.")
    participantNames: list[str] = Field(description="Agents to add; you are added automatically.")


class CloseThreadArgs(Args):
    threadId: str = Field(description="The thread to close.")
    summary: str = Field(description="A summary of the thread's outcome.")


class ParticipantArgs(Args):
    threadId: str = Field(description="The thread.")
    participantName: str = Field(description="The agent to add or remove.")


class SendMessageArgs(Args):
    threadId: str = Field(description="The thread to post in; you must be a participant.")
    content: str = Field(description="The message text.")
    mentions: list[str] = Field(description="Names of participants to mention (they are woken up).")


class WaitArgs(Args):
    currentUnixTime: int | None = Field(
        default=None, description="Unix time in ms of your last wait (accepted for compatibility)."
    )
    maxWaitMs: int = Field(
        default=60_000, ge=0, description="How long to wait, in ms (capped by the server)."
    )


class WaitForAgentArgs(WaitArgs):
    agentName: str = Field(description="Only return messages sent by this agent.")


class CloseSessionArgs(Args):
    reason: str = Field(description="Why the session should end.")


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
    await c.session.hand_over(message)
    return {"status": "Message sent successfully", "message": message.to_mcp()}


async def _wait_for_message(c: Caller, a: WaitArgs) -> dict[str, Any]:
    return _received(await c.take(lambda m: True, a.maxWaitMs))


async def _wait_for_mention(c: Caller, a: WaitArgs) -> dict[str, Any]:
    me = c.agent.name
    return _received(await c.take(lambda m: me in m.mentions, a.maxWaitMs))


async def _wait_for_agent(c: Caller, a: WaitForAgentArgs) -> dict[str, Any]:
    # Unknown or unlinked agent: the error coral_create_thread gives, not a silent long wait.
    c.session.linked_target(c.agent, a.agentName)
    sender = a.agentName
    return _received(await c.take(lambda m: m.sender == sender, a.maxWaitMs))


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
