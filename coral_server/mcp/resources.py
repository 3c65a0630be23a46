"""Today's MCP resources: how to collaborate (`coral://instruction`) and the session (`coral://state`)."""

from __future__ import annotations

from typing import Any

import orjson

from coral_server.mcp.surface import ResourceDef
from coral_server.sessions import Session, SessionAgent
from coral_server.sessions.model import iso, now_ms

INSTRUCTION_URI = "coral://instruction"
STATE_URI = "coral://state"

INSTRUCTION = """\
# Collaborating in a Coral session

You are one agent in a team. You talk to the other agents in *threads*:

- `coral_create_thread` opens a thread with the agents you name (only agents you are linked to; see
  `coral://state`). You are added automatically.
- `coral_send_message` posts in a thread. Put the names of the agents who should act in `mentions`:
  mentioned agents are woken up from `coral_wait_for_mention`.
- `coral_wait_for_mention` blocks until someone mentions you (or the wait times out; then simply wait
  again). Messages sent while you were busy are queued and returned in order, so nothing is missed.
  `coral_wait_for_message` returns any message of your threads; `coral_wait_for_agent` only those of one
  agent.
- `coral_add_participant` / `coral_remove_participant` change who is in a thread; `coral_close_thread`
  ends a thread with a summary when its topic is done.

Typical loop: wait for a mention, do the work, answer in the same thread mentioning the asker, wait again.
"""


def _agent_view(session: Session, name: str) -> dict[str, Any]:
    other = session.agents[name]
    view: dict[str, Any] = {
        "agentName": other.name,
        "agentDescription": other.description,
        "agentConnected": other.connected,
        "agentWaiting": other.waiting,
        "agentRunning": other.status == "running",
    }
    if other.started_at is not None:
        view["agentStartTime"] = iso(other.started_at)
    return view


def _thread_view(thread: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "threadId": thread.id,
        "threadName": thread.name,
        "owningAgentName": thread.creator,
        "participatingAgents": list(thread.participants),
        "state": "closed" if thread.closed else "open",
    }
    if thread.closed:
        view["summary"] = thread.summary or ""
    view["messages"] = [
        {
            "messageText": m.text,
            "sendingAgentName": m.sender,
            "messageTimestamp": iso(m.timestamp),
            **({"mentionAgentNames": list(m.mentions)} if m.mentions else {}),
        }
        for m in thread.messages
    ]
    return view


def state_text(session: Session, agent: SessionAgent) -> str:
    """The agent's view of its session: who it is, who it may talk to, its threads."""
    now = now_ms()
    parts = [f"You are an agent named {agent.name}. The current UNIX time is {now} (ISO-8601: {iso(now)})."]
    if agent.description:
        parts.append(f"Your description: {agent.description}")
    links = sorted(agent.links)
    if links:
        parts.append(
            "Agents you can talk to (name, description, status):\n"
            + orjson.dumps([_agent_view(session, n) for n in links], option=orjson.OPT_INDENT_2).decode()
        )
    else:
        parts.append("You are not linked to any other agent in this session.")
    threads = [t for t in session.threads.values() if agent.name in t.participants]
    if threads:
        parts.append(
            "Your threads:\n"
            + orjson.dumps([_thread_view(t) for t in threads], option=orjson.OPT_INDENT_2).decode()
        )
    else:
        parts.append("You are not in any thread yet.")
    return "\n\n".join(parts)


def instruction_text(session: Session, agent: SessionAgent) -> str:
    return INSTRUCTION


RESOURCES: tuple[ResourceDef, ...] = (
    ResourceDef(INSTRUCTION_URI, "instruction", "How to use the Coral tools", instruction_text),
    ResourceDef(STATE_URI, "state", "You, the agents you are linked to, and your threads", state_text),
)
