"""The one wire view of events: each event of the bus as our streams and the reference's streams send it.

The domain publishes plain data (names, ids, domain records); this module is the only place that
turns an event into JSON. One vocabulary serves both families of streams: the reference server's
event names and fields wherever it has the event, ours (`snapshot`, `overflow`, `agent_log`,
`agent_disconnected`, `custom_tool_called`, the close `reason`) beside them. The two dialects
differ only in the envelope and in the records they embed:

- ``coral`` (our streams, resumable): `{seq, type, timestamp: Unix ms, ...}`; threads and messages
  as `GET /api/v1/session/{ns}/{id}` shows them.
- ``reference`` (the reference's routes, which its console opens): `{type, timestamp: ISO 8601,
  ...}`; threads and messages in the reference's shape.

Session and namespace states inside lifecycle events are the reference's base states in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from coral_server.api import reference, views
from coral_server.events import Event
from coral_server.runtimes import LogLine
from coral_server.sessions import Message, SessionInfo, Thread
from coral_server.sessions.model import iso

Dialect = Literal["coral", "reference"]
Wire = dict[str, Any]

# What the reference's server-wide stream (`/ws/v1/events/lsm`) carries.
LSM_TYPES = frozenset(
    {
        "namespace_created",
        "namespace_closed",
        "session_created",
        "session_running",
        "session_closing",
        "session_closed",
    }
)


# -- records -------------------------------------------------------------------------------------


def _thread(thread: Thread, dialect: Dialect) -> Any:
    return views.thread_state(thread) if dialect == "coral" else reference.thread(thread)


def _message(message: Message, dialect: Dialect) -> Any:
    return views.message_state(message) if dialect == "coral" else reference.message(message)


# -- event fields, by type -----------------------------------------------------------------------


def _closing(data: dict[str, Any], fields: Wire) -> Wire:
    fields["reason"] = data["reason"]
    if data.get("detail") is not None:
        fields["detail"] = data["detail"]
    return fields


def _lifecycle(key: str) -> Callable[[Event, Dialect], Wire]:
    def fields(event: Event, dialect: Dialect) -> Wire:
        info: SessionInfo = event.data["session"]
        out: Wire = {
            key: reference.session_base_of(info, event.timestamp),
            "namespaceState": reference.namespace_base_of(info.namespace),
        }
        if "agents" in event.data:
            out["agents"] = list(event.data["agents"])
        if "reason" in event.data:
            _closing(event.data, out)
        return out

    return fields


def _name(event: Event, dialect: Dialect) -> Wire:
    return {"name": event.data["name"]}


def _runtime_stopped(event: Event, dialect: Dialect) -> Wire:
    data = event.data
    out: Wire = {"name": data["name"], "status": data["status"]}
    if data.get("exit_code") is not None:
        out["exitCode"] = data["exit_code"]
    if data.get("error") is not None:
        out["error"] = data["error"]
    return out


def _wait_stop(event: Event, dialect: Dialect) -> Wire:
    out: Wire = {"name": event.data["name"]}
    message: Message | None = event.data.get("message")
    if message is not None:
        out["message"] = _message(message, dialect)
    return out


def _participant(event: Event, dialect: Dialect) -> Wire:
    return {"threadId": event.data["thread_id"], "name": event.data["name"]}


def _custom_tool(event: Event, dialect: Dialect) -> Wire:
    data = event.data
    out: Wire = {
        "name": data["name"],
        "tool": data["tool"],
        "outcome": data["outcome"],
        "durationMs": data["duration_ms"],
    }
    if data.get("status") is not None:
        out["status"] = data["status"]
    return out


def _agent_log(event: Event, dialect: Dialect) -> Wire:
    return {"name": event.data["name"], "stream": event.data["stream"], "text": event.data["text"]}


FIELDS: dict[str, Callable[[Event, Dialect], Wire]] = {
    "namespace_created": lambda e, d: {"initialState": reference.namespace_base_of(e.data["namespace"])},
    "namespace_closed": lambda e, d: {"finalState": reference.namespace_base_of(e.data["namespace"])},
    "session_created": _lifecycle("initialSessionState"),
    "session_running": _lifecycle("sessionState"),
    "session_closing": _lifecycle("sessionState"),
    "session_closed": _lifecycle("finalSessionState"),
    "runtime_started": lambda e, d: {"name": e.data["name"], "runtime": e.data["runtime"]},
    "runtime_stopped": _runtime_stopped,
    "agent_connected": _name,
    "agent_disconnected": _name,
    "agent_wait_start": _name,
    "agent_wait_stop": _wait_stop,
    "thread_created": lambda e, d: {"thread": _thread(e.data["thread"], d)},
    "thread_message_sent": lambda e, d: {"message": _message(e.data["message"], d)},
    "thread_participant_added": _participant,
    "thread_participant_removed": _participant,
    "thread_closed": lambda e, d: {"threadId": e.data["thread_id"], "summary": e.data["summary"]},
    "agent_log": _agent_log,
    "custom_tool_called": _custom_tool,
}


def event(e: Event, dialect: Dialect = "coral") -> Wire:
    """One event as a stream of `dialect` sends it (events of other feeds, such as a run's, as published)."""
    fields = FIELDS.get(e.type)
    body = fields(e, dialect) if fields is not None else e.data
    if dialect == "coral":
        return {"seq": e.seq, "type": e.type, "timestamp": e.timestamp, **body}
    return {"type": e.type, "timestamp": iso(e.timestamp), **body}


def reference_event(e: Event) -> Wire:
    return event(e, "reference")


# -- logs ----------------------------------------------------------------------------------------

# An agent's output as the reference logs it: stdout at info, stderr at warning.
_LEVEL = {"stdout": "info", "stderr": "warning"}
_IO = {"stdout": "out", "stderr": "error"}


def log_event(e: Event) -> Wire:
    """An agent's output line as the reference's logs stream sends it: `{type, timestamp, text, tags}`."""
    if e.type != "agent_log":  # the overflow marker
        return reference_event(e)
    line: LogLine = e.data["line"]
    return {
        "type": _LEVEL.get(line.stream, "info"),
        "timestamp": iso(line.timestamp),
        "text": line.text,
        "tags": [
            {"type": "namespace", "namespace": e.data["namespace"]},
            {"type": "session", "sessionId": e.data["session_id"]},
            {"type": "agent", "name": e.data["name"]},
            {"type": "stdout", "io": _IO.get(line.stream, "out")},
        ],
    }
