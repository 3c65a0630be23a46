"""The one wire view: every HTTP response body, built from domain objects in the shapes of `api/models`.

Bodies are plain dicts typed by the response TypedDicts, so mypy checks each field against what the
OpenAPI document shows and serialising costs what building a dict costs (a large session state is
read often). `tests/api/test_wire.py` validates what a running server sends against `schemas/`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, cast

import orjson
from typing_extensions import TypedDict

from coral_server.api import models as m
from coral_server.api import reference
from coral_server.registry import AgentManifest, OptionSpec, Registry
from coral_server.runs.bodies import iso
from coral_server.runs.model import Run
from coral_server.scheduler import Preview
from coral_server.sessions import AgentEnd, Message, Namespace, Session, SessionAgent, SessionEnd, Thread
from coral_server.sessions.report import REPORT_KIND
from coral_server.store import Delivery, DeliveryAttempt
from coral_server.store.tasks import Task, TaskRunCounts

# How many of a dead agent's last output lines its state shows.
LAST_LOG_LINES = 10
# Messages serialised per step of a state read (a few ms) before the event loop runs again.
STATE_STEP = 1000


# -- sessions ------------------------------------------------------------------------------------


def created(session: Session) -> m.CreateSessionResponse:
    return {"namespace": session.namespace, "sessionId": session.id}


def session_summary(session: Session) -> m.SessionSummary:
    return {"sessionId": session.id, "closing": session.closing}


def namespace_sessions(namespace: Namespace) -> m.NamespaceSessions:
    return {
        "namespace": namespace.name,
        "sessions": [session_summary(s) for s in namespace.sessions.values()],
    }


def message_state(message: Message) -> m.MessageState:
    return {
        "id": message.id,
        "threadId": message.thread_id,
        "senderName": message.sender,
        "text": message.text,
        "timestamp": message.timestamp,
        "mentionNames": list(message.mentions),
    }


def thread_status(thread: Thread) -> m.ThreadStatus:
    if not thread.closed:
        return {"state": "open"}
    return {"state": "closed", "summary": thread.summary or "", "timestamp": thread.closed_at}


def thread_state(thread: Thread, *, messages: bool = True) -> m.ThreadState:
    return {
        "id": thread.id,
        "name": thread.name,
        "creatorName": thread.creator,
        "participants": list(thread.participants),
        "state": thread_status(thread),
        "timestamp": thread.timestamp,
        "messages": [message_state(x) for x in thread.messages] if messages else [],
    }


def agent_state(agent: SessionAgent) -> m.AgentState:
    manifest = agent.manifest
    state: m.AgentState = {
        "name": agent.name,
        "registryAgentIdentifier": {"name": manifest.name, "version": manifest.version, "source": "local"},
        "isConnected": agent.connected,
        "isWaiting": agent.waiting,
        "description": agent.description,
        "links": sorted(agent.links),
        "runtime": agent.runtime,
        "generation": cast(m.AgentGeneration, agent.generation.value),
        "status": cast(m.AgentStatus, agent.status),
    }
    if agent.exit_code is not None:
        state["exitCode"] = agent.exit_code
    if agent.error is not None:
        state["error"] = agent.error
    if agent.status in ("exited", "failed") and (agent.exit_code or agent.error):
        # Why it died, without a second request: the end of its output.
        state["lastLogLines"] = [line.text for line in agent.log.tail(LAST_LOG_LINES)]
    if agent.annotations:
        state["annotations"] = dict(agent.annotations)
    return state


def session_state(session: Session, *, messages: bool = True) -> m.SessionState:
    state: m.SessionState = {
        "id": session.id,
        "namespace": session.namespace,
        "timestamp": session.timestamp,
        "closing": session.closing,
        "status": reference.session_status(session.info()),
        "agents": [agent_state(a) for a in session.agents.values()],
        "threads": [thread_state(t, messages=messages) for t in session.threads.values()],
    }
    if session.close_reason is not None:
        state["closeReason"] = session.close_reason
        if session.close_detail is not None:
            state["closeDetail"] = session.close_detail
    if session.closed_at is not None:
        state["closedAt"] = session.closed_at
    if session.annotations:
        state["annotations"] = dict(session.annotations)
    return state


def session_snapshot(session: Session, seq: int) -> m.SessionSnapshot:
    """The session state as GET returns it, marked with the last seq it reflects."""
    return {**session_state(session), "seq": seq, "type": "snapshot"}


def session_state_later(session: Session) -> Callable[[], Awaitable[m.SessionState]]:
    """The session's state as of now, its messages serialised when awaited, in steps between which
    the event loop runs: a session with 100,000 messages is read without holding up the server.

    What it holds is fixed now (no await here): the agents and threads as they are, and how many
    messages each thread has. A thread's messages are only ever appended, so its first n then are
    its first n now. Each step's messages go straight to JSON (an orjson Fragment), so the final
    serialisation of the whole state copies bytes instead of walking it again.
    """
    state = session_state(session, messages=False)
    counts = [(thread, len(thread.messages)) for thread in session.threads.values()]

    async def complete() -> m.SessionState:
        budget = STATE_STEP  # messages left in this step
        for out, (thread, count) in zip(state["threads"], counts, strict=True):
            parts: list[bytes] = []
            start = 0
            while start < count:
                end = min(start + budget, count)
                parts.append(orjson.dumps([message_state(x) for x in thread.messages[start:end]])[1:-1])
                budget -= end - start
                start = end
                if not budget:
                    await asyncio.sleep(0)
                    budget = STATE_STEP
            out["messages"] = cast(Any, orjson.Fragment(b"[" + b",".join(parts) + b"]"))
        return state

    return complete


def session_snapshot_later(session: Session, seq: int) -> Callable[[], Awaitable[m.SessionSnapshot]]:
    """`session_snapshot`, its messages serialised in steps when awaited (see session_state_later)."""
    state = session_state_later(session)

    async def complete() -> m.SessionSnapshot:
        return {**await state(), "seq": seq, "type": "snapshot"}

    return complete


def agent_logs(agent: SessionAgent, tail: int) -> m.AgentLogs:
    return {
        "agent": agent.name,
        "dropped": agent.log.dropped,
        "lines": [
            {"stream": cast(m.LogStream, line.stream), "text": line.text, "timestamp": line.timestamp}
            for line in agent.log.tail(tail)
        ],
    }


def agent_connection(agent: SessionAgent, url: str) -> m.AgentConnection:
    base = url.rsplit("/", 1)[0]
    return {"agent": agent.name, "connectionUrl": url, "sseUrl": f"{base}/sse/"}


# -- the session-end report (webhook body) ---------------------------------------------------------


def _identifier(end: AgentEnd) -> dict[str, str]:
    return {"name": end.registry_name, "version": end.registry_version, "source": "local"}


def _agent_end(end: AgentEnd) -> dict[str, Any]:
    return {
        "name": end.name,
        "registryAgentIdentifier": _identifier(end),
        "runtime": end.runtime,
        "status": end.status,
        "exitCode": end.exit_code,
        "error": end.error,
        "startTime": end.started_at,
        "endTime": end.ended_at,
        "annotations": dict(end.annotations),
    }


def end_report(end: SessionEnd) -> dict[str, Any]:
    """The body of the session-end webhook: why it ended, how each agent ended, every thread.

    It also carries the reference server's fields (`namespaceState`, `sessionState`, `agentStats`)
    so receivers written for it keep working; `sessionState` is the full state when the session
    asked for an extended report.
    """
    base = {
        "id": end.session_id,
        "timestamp": end.created_at,
        "namespace": end.namespace,
        "annotations": dict(end.annotations),
    }
    return {
        "type": REPORT_KIND,
        "timestamp": end.closed_at,
        "sessionId": end.session_id,
        "namespace": end.namespace,
        "reason": end.reason,
        "detail": end.detail,
        "createdAt": end.created_at,
        "closedAt": end.closed_at,
        "annotations": dict(end.annotations),
        "agents": [_agent_end(a) for a in end.agents],
        "threads": [thread_state(t) for t in end.threads],
        "namespaceState": {
            "name": end.namespace,
            "deleteOnLastSessionExit": end.namespace_transient,
            "annotations": {},
        },
        "sessionState": (
            {"type": "extended", "state": session_state(end.session)}
            if end.session is not None
            else {"type": "base", "state": base}
        ),
        "agentStats": [
            {
                "name": a.name,
                "registryIdentifier": _identifier(a),
                "startTime": a.started_at,
                "endTime": a.ended_at,
                "annotations": dict(a.annotations),
            }
            for a in end.agents
        ],
    }


# -- registry ------------------------------------------------------------------------------------


def _local() -> m.SourceIdentifier:
    return {"type": "local"}


def registry_sources(registry: Registry) -> list[m.RegistrySource]:
    names = sorted({manifest.name for manifest in registry.agents()})
    return [
        {
            "identifier": _local(),
            "timestamp": registry.timestamp_ms,
            "agents": [{"name": name, "versions": registry.versions(name)} for name in names],
        }
    ]


def registry_agent_detail(manifest: AgentManifest) -> m.RegistryAgentDetail:
    return {"registryAgent": registry_agent(manifest), "restrictions": [_local()]}


# The optional fields that come before a required one on the wire (dict order is the JSON order).
class _InfoText(TypedDict, total=False):
    description: str
    summary: str


class _DockerCommand(TypedDict, total=False):
    command: list[str]


class _OptionDetails(TypedDict, total=False):
    description: str
    default: Any
    display: dict[str, Any]
    validation: dict[str, Any]


class _OptionFlags(TypedDict, total=False):
    secret: Literal[True]
    base64: Literal[True]


def registry_agent(manifest: AgentManifest) -> m.RegistryAgent:
    """A manifest as the registry routes show it: null fields omitted, secret defaults never shown."""
    text: _InfoText = {}
    if manifest.description is not None:
        text["description"] = manifest.description
    if manifest.summary is not None:
        text["summary"] = manifest.summary
    info: m.ManifestInfo = {
        **text,
        "capabilities": list(manifest.capabilities),
        "identifier": {"name": manifest.name, "version": manifest.version, "registrySourceId": _local()},
    }
    runtimes: m.ManifestRuntimes = {}
    if manifest.executable is not None:
        exe = manifest.executable
        runtimes["executable"] = {
            "path": exe.path,
            "arguments": list(exe.arguments),
            "transport": exe.transport,
        }
    if manifest.docker is not None:
        command: _DockerCommand = {}
        if manifest.docker.command is not None:
            command["command"] = list(manifest.docker.command)
        runtimes["docker"] = {
            "image": manifest.docker.image,
            **command,
            "transport": manifest.docker.transport,
        }
    return {
        "info": info,
        "runtimes": runtimes,
        "options": {name: option_out(spec) for name, spec in manifest.options.items()},
    }


def option_out(spec: OptionSpec) -> m.OptionOut:
    """One option; blob defaults as base64; `secret` and `base64` appear only when true."""
    details: _OptionDetails = {}
    if spec.description is not None:
        details["description"] = spec.description
    if spec.default is not None and not spec.secret:
        details["default"] = _json_default(spec.default)
    if spec.display is not None:
        details["display"] = dict(spec.display)
    if spec.validation is not None:
        details["validation"] = dict(spec.validation)
    flags: _OptionFlags = {}
    if spec.secret:
        flags["secret"] = True
    if spec.base64:
        flags["base64"] = True
    return {"type": spec.type, "required": spec.required, **details, "transport": spec.transport, **flags}


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_json_default(v) for v in value]
    return value


# -- webhooks ------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def delivery_out(d: Delivery) -> m.DeliveryOut:
    return {
        "id": d.id,
        "kind": d.kind,
        "url": d.url,
        "subject": d.subject,
        "status": d.status,
        "attempts": d.attempts,
        "maxAttempts": d.max_attempts,
        "nextAttemptAt": _ms(d.next_attempt_at) if d.status == "pending" else None,
        "lastStatus": d.last_status,
        "lastError": d.last_error,
        "createdAt": round(d.created_at * 1000),
        "deliveredAt": _ms(d.delivered_at),
    }


def delivery_attempt(a: DeliveryAttempt) -> m.DeliveryAttemptOut:
    return {
        "number": a.number,
        "at": round(a.at * 1000),
        "status": a.status,
        "error": a.error,
        "durationMs": None if a.duration_ms is None else round(a.duration_ms, 3),
    }


def delivery_detail(d: Delivery, attempts: list[DeliveryAttempt]) -> m.DeliveryDetail:
    return {
        **delivery_out(d),
        "payload": _payload(d.body),
        "attemptLog": [delivery_attempt(a) for a in attempts],
    }


def _payload(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


# -- runs ----------------------------------------------------------------------------------------


def run_submitted(run: Run) -> m.RunSubmitted:
    return {"run_id": run.id, "status": run.status}


def run_out(run: Run) -> m.RunOut:
    """A run as listings show it: the original jobs system's fields, then ours."""
    return {
        "id": run.id,
        "run_id": run.id,
        "status": run.status,
        "trigger_type": run.trigger,
        "kind": run.kind,
        "display_name": run.display_name,
        "agent_type": run.spec.get("agent_type"),
        "worktree_path": run.worktree_path,
        "branch": run.branch,
        "session_id": f"run-{run.id}",
        "scheduled_at": cast(str, iso(run.created_at)),
        "created_at": cast(str, iso(run.created_at)),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": run.duration_s,
        "exit_reason": run.exit_reason,
        "error_msg": run.error,
        "result": run.result,
        "waiting_for": run.waiting_for,
        "auto_accepts": list(run.auto_accepts),
        "task_id": run.task_id,
        "attempt": run.attempt,
        "priority": run.priority,
        "concurrency_key": run.concurrency_key,
        "waiting_reason": run.waiting_reason if run.status == "pending" else None,
        "not_before": iso(run.not_before),
        "retryable": run.retryable,
        "retry_of": run.retry_of,
        "prompt": run.spec.get("prompt"),
        "repo_path": run.spec.get("repo_path"),
    }


def run_detail(run: Run) -> m.RunDetail:
    """A run as `GET /api/tasks/runs/{id}` shows it: with the tail of its terminal output."""
    return {**run_out(run), "output": run.output}


def run_snapshot(run: Run, seq: int) -> m.RunSnapshot:
    """The run as GET returns it, marked with the last seq of its topic it reflects."""
    return {"seq": seq, "type": "snapshot", **run_detail(run)}


def run_page(runs: list[Run], next_before: int | None) -> m.RunPage:
    return {"runs": [run_out(r) for r in runs], "next_before": next_before}


# -- scheduled tasks -----------------------------------------------------------------------------


def task_out(task: Task, ended: bool) -> m.TaskOut:
    return {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "schedule_kind": cast(m.ScheduleKindName, task.schedule_kind),
        "schedule_expr": task.schedule_expr,
        "timezone": task.timezone,
        "payload": task.payload,
        "created_by": task.created_by,
        "priority": task.priority,
        "max_retries": task.max_retries,
        "backoff_strategy": cast(m.BackoffName, task.backoff_strategy),
        "dedupe_key": task.dedupe_key,
        "dedupe_window_seconds": task.dedupe_window_seconds,
        "concurrency_key": task.concurrency_key,
        "status": task.status,
        "source": task.source,
        "created_at": cast(str, iso(task.created_at)),
        "updated_at": cast(str, iso(task.updated_at)),
        "next_fire_at": iso(task.next_fire_at),
        "ended": ended,
        "snoozed_until": iso(task.snoozed_until),
        "snooze_reason": task.snooze_reason,
        "last_fire_at": iso(task.last_fire_at),
        "last_run_id": task.last_run_id,
        "fire_count": task.fire_count,
        "skip_count": task.skip_count,
        "last_skip_at": iso(task.last_skip_at),
        "last_skip_reason": task.last_skip_reason,
    }


def task_detail(task: Task, ended: bool, next_fires: list[datetime], counts: TaskRunCounts) -> m.TaskDetail:
    """A task with its next fire times, its newest run and its runs per status."""
    return {
        **task_out(task, ended),
        "next_fire_times": [_utc(t) for t in next_fires],
        "last_run": None if counts.last is None else task_run(counts.last),
        "run_counts": {str(status): n for status, n in counts.by_status.items()},
        "runs_total": counts.total,
    }


def task_created(detail: m.TaskDetail, deduplicated: bool) -> m.TaskCreated:
    return {**detail, "deduplicated": deduplicated}


def task_page(tasks: list[tuple[Task, bool]], total: int, limit: int, offset: int) -> m.TaskPage:
    return {
        "items": [task_out(t, ended) for t, ended in tasks],
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(tasks) < total,
    }


# What GET /runs shows for an error without include_errors=true (as the public tasks system does).
ERROR_HIDDEN = "[Error details hidden - use include_errors=true]"


def task_run(run: Run, *, errors: bool = True) -> m.TaskRun:
    """A task's run: a run's fields, then the public tasks system's (`errors` False: `error` hidden)."""
    success = {"completed": True, "failed": False, "killed": False}.get(run.status)
    error = run.error if errors or run.error is None else ERROR_HIDDEN
    return {
        **run_out(run),
        "lease_owner": run.owner,
        "leased_until": None,
        "success": success,
        "error": error,
        "output": run.result,
    }


def task_run_page(runs: list[Run], total: int, next_before: int | None) -> m.TaskRunPage:
    return {"items": [task_run(r) for r in runs], "total": total, "next_before": next_before}


def task_run_list(runs: list[Run], total: int, limit: int, offset: int, *, errors: bool) -> m.TaskRunList:
    return {
        "items": [task_run(r, errors=errors) for r in runs],
        "total": total,
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(runs) < total,
    }


def task_run_started(task_id: str, run: Run) -> m.TaskRunStarted:
    return {"task_id": task_id, "run": task_run(run)}


def schedule_preview(preview: Preview) -> m.SchedulePreview:
    schedule = preview.schedule
    return {
        "schedule_kind": schedule.kind,
        "schedule_expr": schedule.expr,
        "timezone": schedule.timezone,
        "fire_times": [_utc(t) for t in preview.fires],
        "local_fire_times": [t.isoformat() for t in preview.local_fires],
    }


def event_accepted(topic: str, runs: list[Run]) -> m.EventAccepted:
    return {
        "topic": topic,
        "triggered_tasks": [r.task_id for r in runs if r.task_id is not None],
        "runs": [task_run(r) for r in runs],
    }


def _utc(moment: datetime) -> str:
    return cast(str, iso(moment.timestamp()))


def ok() -> m.OkBody:
    return {"ok": True}


# -- errors --------------------------------------------------------------------------------------


def error_body(
    message: str, problems: list[tuple[str, str]] | None = None, *, detail: str | None = None
) -> m.ErrorBody:
    """`error` is `message`; so is the body's `message`, unless a longer `detail` is given."""
    body: m.ErrorBody = {"error": message, "message": detail or message}
    if problems:
        body["errors"] = [{"field": f, "message": text} for f, text in problems]
    return body
