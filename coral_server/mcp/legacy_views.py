"""How the older generations saw messages, threads and agents: their JSON, XML and markdown views."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from coral_server.sessions import Session, SessionAgent
from coral_server.sessions.model import Message, Thread

V1_INSTRUCTION_URI = "coral://agent/instruction"
V1_MESSAGES_URI = "coral://messages"
V1_AGENTS_URI = "coral://agents"

V1_INSTRUCTION = f"""\
# Coral resource: {V1_INSTRUCTION_URI}
You are one agent of a Coral multi-agent system: you get work done together with other agents, and you
talk to them only in threads.

- `coral_list_agents` lists the agents you can talk to, with their descriptions.
- `coral_create_thread` opens a thread with the agents in `participantIds` (you are added yourself);
  `coral_add_participant` / `coral_remove_participant` change who is in it, and `coral_close_thread`
  ends it with a summary once it has reached a conclusion.
- Other agents see only what you send with `coral_send_message`. Put the agents who should act in
  `mentions`, or they will not notice the message.
- When you need an answer, call `coral_wait_for_mentions`: it returns every message that mentions you
  and that you have not seen yet (or a timeout; then wait again).

Your threads and their messages are in `{V1_MESSAGES_URI}`. Plain assistant text reaches nobody, the
user included: use the tools.
"""


def _thread_name(session: Session, message: Message) -> str:
    thread = session.threads.get(message.thread_id)
    return thread.name if thread is not None else ""


def v1_message(session: Session, message: Message) -> dict[str, Any]:
    """A message as 1.0 wrote it (`senderId`, `content`, `mentions`, ms `timestamp`)."""
    return {
        "id": message.id,
        "threadName": _thread_name(session, message),
        "threadId": message.thread_id,
        "senderId": message.sender,
        "content": message.text,
        "timestamp": message.timestamp,
        "mentions": list(message.mentions),
    }


def v1_thread(session: Session, thread: Thread) -> dict[str, Any]:
    """A thread as 1.0 wrote it (`creatorId`, `isClosed`, `summary` only once closed)."""
    view: dict[str, Any] = {
        "id": thread.id,
        "name": thread.name,
        "creatorId": thread.creator,
        "participants": list(thread.participants),
        "messages": [v1_message(session, m) for m in thread.messages],
        "isClosed": thread.closed,
    }
    if thread.summary is not None:
        view["summary"] = thread.summary
    return view


def v1_state(agent: SessionAgent) -> str:
    """1.0's one-word agent state: disconnected, listening, busy or dead."""
    if agent.status in ("exited", "failed"):
        return "dead"
    if not agent.connected:
        return "disconnected"
    return "listening" if agent.waiting else "busy"


def linked_agents(session: Session, agent: SessionAgent) -> list[SessionAgent]:
    """The agents `agent` may talk to, by name."""
    return [session.agents[name] for name in sorted(agent.links) if name in session.agents]


def _message_element(session: Session, message: Message) -> ET.Element:
    element = ET.Element(
        "ResolvedMessage",
        {
            "id": message.id,
            "threadName": _thread_name(session, message),
            "threadId": message.thread_id,
            "senderId": message.sender,
            "content": message.text,
            "timestamp": str(message.timestamp),
        },
    )
    for name in message.mentions:
        ET.SubElement(element, "mentions").text = name
    return element


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def messages_xml(session: Session, messages: Iterable[Message]) -> str:
    """Messages as XML `ResolvedMessage` elements (the devmode wait result)."""
    root = ET.Element("messages")
    root.extend(_message_element(session, m) for m in messages)
    return _xml(root)


def threads_xml(session: Session, agent: SessionAgent) -> str:
    """The agent's threads and their messages as XML (the 1.0 `coral://messages` resource)."""
    root = ET.Element("threads")
    for thread in session.threads.values():
        if agent.name not in thread.participants:
            continue
        attributes = {
            "id": thread.id,
            "name": thread.name,
            "creatorId": thread.creator,
            "isClosed": "true" if thread.closed else "false",
        }
        if thread.summary is not None:
            attributes["summary"] = thread.summary
        element = ET.SubElement(root, "ResolvedThread", attributes)
        for name in thread.participants:
            ET.SubElement(element, "participants").text = name
        element.extend(_message_element(session, m) for m in thread.messages)
    return _xml(root)


def agents_markdown(session: Session, agent: SessionAgent) -> str:
    """The agents the reader may talk to (never itself), as 1.0's `coral://agents` listed them."""
    lines = [
        f"# Coral resource: {V1_AGENTS_URI}",
        "The agents you can talk to, with their descriptions.",
        "",
        "## Available agents",
    ]
    lines += [f"- {other.name}: {other.description}" for other in linked_agents(session, agent)]
    return "\n".join(lines) + "\n"


def v1_instruction(session: Session, agent: SessionAgent) -> str:
    return V1_INSTRUCTION
