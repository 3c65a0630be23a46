"""The OpenAPI document of the HTTP API, built from the pydantic models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from coral_server import __version__
from coral_server.api import models as m
from coral_server.api.errors import json_response
from coral_server.api.keys import SETTINGS
from coral_server.api.runs import MAX_LIMIT, MAX_RUN_ID
from coral_server.api.tasks import MAX_OFFSET
from coral_server.jobs.spec import JobSpec
from coral_server.runs.model import RUN_STATUSES, TRIGGERS

REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented route: its body shapes and every status it answers with."""

    method: str
    path: str
    summary: str
    tag: str
    request: type[BaseModel] | None = None
    response: Any = None  # a response shape, [shape] for a JSON array, None for no JSON body
    status: int = 200
    errors: tuple[int, ...] = (400, 404)
    notes: tuple[tuple[int, str], ...] = ()  # (status, why) where the general reason says too little
    stream: str | None = None  # the media type of a streamed answer
    first_event: Any = None  # the shape of a stream's first event (WebSocket or SSE)
    events: tuple[Any, ...] = ()  # the shapes of the events that follow it
    description: str | None = None  # what the summary and the statuses leave unsaid
    also: tuple[tuple[int, str], ...] = ()  # other success statuses (same body), and when


SUCCESS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    101: "Switching to the WebSocket protocol: one JSON event per message, the first a {first}",
}
# Why each error status is answered (the body is always an ErrorBody).
ERRORS = {
    400: "Invalid request: `errors` names each wrong field",
    401: "Missing or wrong bearer key",
    403: "Not allowed on this server (see `message`)",
    404: "No such session, namespace, agent, thread, registry agent or delivery",
    409: "Conflicts with the current state (see `message`)",
    415: "The body says it is not JSON: send Content-Type: application/json",
    429: "Too many at once: try again after Retry-After seconds",
    503: "The store cannot keep it (a full disk, a read-only file...): nothing was done; try again later",
}
# Headers an error answer carries besides its body.
ERROR_HEADERS = {
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
}

_S = "/api/v1/session"
_SID = "/api/v1/session/{namespace}/{sessionId}"
_NS = "/api/v1/local/namespace"
_P = "/api/v1/puppet/{namespace}/{sessionId}/{agent}"
_D = "/api/v1/webhooks/deliveries"
_R = "/api/tasks/runs/{run_id}"
_NO_RUN = (404, "No such run")
_RUN_EVENTS = tuple(m.RUN_EVENTS.values())
_JOBS_NOTE = (
    "At the cap (CORAL_MAX_CONCURRENT_JOBS active runs, counted in the store) the answer is 429 before "
    "the job is validated; Retry-After is the number of seconds until the first started run reaches its "
    "max_duration_s (when a slot is sure to free), at least 1 and at most 60, since runs mostly end "
    "sooner. A run whose server dies (crash, kill -9) cannot be taken over by the next one (the CLI's "
    "terminal or pipe died with it): at start-up the next server stops the orphaned CLI, commits what "
    "the run left uncommitted to its branch coral/run-{id}, removes its worktree when cleanup_worktree, "
    "and ends the run failed with exit_reason server_restart (its result says what the branch holds)."
)
_T = "/tasks/{task_id}"
_NO_TASK = (404, "No such task")
_FINAL = (409, "The task is canceled (final), or comes from a file (read-only here)")
_BAD_TASK = (
    400,
    "Invalid task: `errors` names each wrong field (a cron or RRULE expression: what and where; an unknown "
    "timezone; priority outside 1-9; a once time in the past; payload.pipeline[i].uses...)",
)
_WITH_BODY = (400, 404, 409, 415)

_STORED = (*_WITH_BODY, 503)  # also needs the store (a full disk: 503)
_STREAM_ERRORS = (400, 404, 429)
_SESSION_CAP = (429, "The server runs max_sessions live sessions: try again after Retry-After")
_STREAM_CAP = (429, "This client (bearer key, else address) has max_streams_per_client streams open")


def _task_op(
    method: str,
    path: str,
    summary: str,
    request: type[BaseModel] | None = None,
    response: Any = m.TaskDetail,
    *,
    status: int = 200,
    errors: tuple[int, ...] = (404, 409, 503),
    notes: tuple[tuple[int, str], ...] = (_NO_TASK, _FINAL),
    also: tuple[tuple[int, str], ...] = (),
) -> Operation:
    """A route of the "tasks" tag; by default an action on one task that answers the task."""
    return Operation(method, path, summary, "tasks", request, response, status, errors, notes, also=also)


OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/api/v1/local/session",
        "Create a session",
        "sessions",
        m.CreateSessionRequest,
        m.CreateSessionResponse,
        errors=(*_STORED, 429),
        notes=(_SESSION_CAP,),
    ),
    Operation(
        "post",
        _S,
        "Create a session (alias)",
        "sessions",
        m.CreateSessionRequest,
        m.CreateSessionResponse,
        errors=(*_STORED, 429),
        notes=(_SESSION_CAP,),
    ),
    Operation(
        "get", _S, "List sessions of every namespace", "sessions", response=[m.NamespaceSessions], errors=()
    ),
    Operation(
        "get", _S + "/{namespace}", "List sessions of a namespace", "sessions", response=[m.SessionSummary]
    ),
    Operation("get", _SID, "Session state: agents, threads, messages", "sessions", response=m.SessionState),
    Operation("delete", _SID, "Close a session (every agent is stopped)", "sessions", errors=(404,)),
    Operation(
        "post",
        _SID,
        "Execute a session created with execution {mode: defer} (the body: its runtime settings)",
        "sessions",
        m.RuntimeSettings,
        errors=(*_STORED,),
        notes=((400, "Invalid runtime settings, or the session is not pending execution"),),
    ),
    Operation(
        "get",
        _SID + "/extended",
        "Session state in the reference server's shape: {base, agents, threads}",
        "sessions",
        response=m.SessionStateExtended,
        errors=(404,),
    ),
    Operation(
        "get",
        _NS,
        "List namespaces (the reference server's shape)",
        "namespaces",
        response=[m.SessionNamespaceStateBase],
        errors=(),
    ),
    Operation(
        "get",
        _NS + "/extended",
        "List namespaces with their sessions' base states (what the console lists)",
        "namespaces",
        response=[m.SessionNamespaceStateExtended],
        errors=(),
    ),
    Operation(
        "post",
        _NS,
        "Create an empty namespace (409 if the name is taken)",
        "namespaces",
        m.NamespaceRequest,
        errors=(400, 409, 415),
    ),
    Operation(
        "get",
        _NS + "/{namespace}",
        "Base states of a namespace's sessions",
        "namespaces",
        response=[m.SessionStateBase],
        errors=(404,),
    ),
    Operation(
        "get",
        _NS + "/{namespace}/extended",
        "Extended states of a namespace's sessions",
        "namespaces",
        response=[m.SessionStateExtended],
        errors=(404,),
    ),
    Operation(
        "delete",
        _NS + "/{namespace}",
        "Delete a namespace: every session in it is closed",
        "namespaces",
        errors=(404,),
    ),
    Operation(
        "get", _SID + "/agents/{agent}/logs", "An agent's recent output", "sessions", response=m.AgentLogs
    ),
    Operation(
        "get",
        _SID + "/agents/{agent}/connection",
        "MCP URL of an external agent (409 for an agent the server launches)",
        "sessions",
        response=m.AgentConnection,
        errors=(404, 409),
    ),
    Operation(
        "get", "/api/v1/registry", "List registry agents", "registry", response=[m.RegistrySource], errors=()
    ),
    Operation(
        "get",
        "/api/v1/registry/{source}/{name}/{version}",
        "Registry agent details (options, runtimes)",
        "registry",
        response=m.RegistryAgentDetail,
        errors=(404,),
    ),
    Operation(
        "post",
        _P + "/thread",
        "Act as an agent: create a thread",
        "puppet",
        m.PuppetCreateThread,
        m.PuppetThreadAnswer,
        errors=_WITH_BODY,
    ),
    Operation(
        "delete",
        _P + "/thread",
        "Act as an agent: close a thread",
        "puppet",
        m.PuppetCloseThread,
        m.PuppetThreadAnswer,
        errors=_WITH_BODY,
    ),
    Operation(
        "post",
        _P + "/thread/message",
        "Act as an agent: send a message (mentions wake their agents)",
        "puppet",
        m.PuppetSendMessage,
        m.PuppetMessageAnswer,
        errors=_WITH_BODY,
    ),
    Operation(
        "post",
        _P + "/thread/participant",
        "Act as an agent: add a participant",
        "puppet",
        m.PuppetParticipant,
        m.PuppetThreadAnswer,
        errors=_WITH_BODY,
    ),
    Operation(
        "delete",
        _P + "/thread/participant",
        "Act as an agent: remove a participant",
        "puppet",
        m.PuppetParticipant,
        m.PuppetThreadAnswer,
        errors=_WITH_BODY,
    ),
    Operation(
        "delete",
        _P,
        "Stop the agent (its state shows it exited)",
        "puppet",
        response=m.PuppetAgentAnswer,
        errors=(404, 409),
    ),
    Operation(
        "get",
        _D,
        "Outgoing webhook deliveries, newest first (filter by status, kind, namespace, sessionId)",
        "webhooks",
        response=[m.DeliveryOut],
        errors=(400,),
        notes=((400, "Invalid filter: a bad status or limit, or sessionId without namespace"),),
    ),
    Operation(
        "get",
        _D + "/{id}",
        "One delivery: its payload and every attempt",
        "webhooks",
        response=m.DeliveryDetail,
        errors=(404,),
    ),
    Operation(
        "post",
        _D + "/{id}/retry",
        "Give a failed delivery more attempts, the first at once (409 unless it failed)",
        "webhooks",
        m.RetryDeliveryRequest,
        m.DeliveryOut,
        status=202,
        errors=_STORED,
    ),
    Operation(
        "get",
        "/api/v1/events/{namespace}/{sessionId}",
        "Live session events as Server-Sent Events (snapshot, then every change; Last-Event-ID resumes)",
        "events",
        stream="text/event-stream",
        first_event=m.SessionSnapshot,
        errors=_STREAM_ERRORS,
        notes=(_STREAM_CAP,),
    ),
    Operation(
        "get",
        "/ws/v1/events/{namespace}/{sessionId}",
        "Live session events over a WebSocket (same events; ?token= instead of the header)",
        "events",
        status=101,
        first_event=m.SessionSnapshot,
        errors=_STREAM_ERRORS,
        notes=(_STREAM_CAP,),
    ),
    Operation(
        "get",
        "/ws/v1/events/session/{namespace}/{sessionId}",
        "A session's events from now on, as the reference server sends them (its console opens this); "
        "agents' output lines (agent_log) only when ?types= names them: they are on /ws/v1/logs",
        "events",
        status=101,
        first_event=m.SessionEvent,
    ),
    Operation(
        "get",
        "/ws/v1/events/{token}/session/{namespace}/{sessionId}",
        "As /ws/v1/events/session/{namespace}/{sessionId}, the API key in the path",
        "events",
        status=101,
        first_event=m.SessionEvent,
    ),
    Operation(
        "get",
        "/ws/v1/events/lsm",
        "Every namespace and session created, launched, closing and closed, as the reference sends them",
        "events",
        status=101,
        first_event=m.LocalSessionManagerEvent,
        errors=(400,),
        notes=((400, "namespaceAnnotationFilters is not base64url of a JSON object of strings"),),
    ),
    Operation(
        "get",
        "/ws/v1/events/{token}/lsm",
        "As /ws/v1/events/lsm, the API key in the path",
        "events",
        status=101,
        first_event=m.LocalSessionManagerEvent,
        errors=(400,),
    ),
    Operation(
        "get",
        "/ws/v1/logs",
        "Agents' output (the last `limit` lines kept, then every new one), as the reference sends it",
        "events",
        status=101,
        first_event=m.LoggingEvent,
        errors=(400,),
    ),
    Operation(
        "get",
        "/ws/v1/logs/{token}",
        "As /ws/v1/logs, the API key in the path",
        "events",
        status=101,
        first_event=m.LoggingEvent,
        errors=(400,),
    ),
    Operation(
        "post",
        "/api/tasks/run",
        "Run a one-time job: a coding agent on a prompt in its own git worktree (answers at once)",
        "jobs",
        JobSpec,
        m.RunSubmitted,
        errors=(400, 403, 415, 429, 503),
        description=_JOBS_NOTE,
        notes=(
            (400, "Invalid job: `errors` names the field (prompt, repo_path, agent_type, base_branch, ...)"),
            (403, "repo_path is not under a directory that jobs may use (the jobs.allowedRoots setting)"),
            (429, "At the cap of concurrent runs (CORAL_MAX_CONCURRENT_JOBS): try again after Retry-After"),
        ),
    ),
    Operation(
        "get",
        "/api/tasks/runs",
        "List runs, newest first (filter by status, trigger; ?before= pages on)",
        "jobs",
        response=m.RunPage,
        errors=(400,),
        notes=((400, "Invalid listing: a bad limit, before, status or trigger"),),
    ),
    Operation(
        "get",
        _R,
        "One run: status, worktree, branch, times, exit reason, result and terminal output",
        "jobs",
        response=m.RunDetail,
        errors=(404,),
        notes=(_NO_RUN,),
    ),
    Operation(
        "post",
        _R + "/kill",
        "Stop an active run (its work is kept on its branch); a run that another server on the same "
        "data dir executes is stopped by that server, within 2 s",
        "jobs",
        response=m.OkBody,
        errors=(404, 503),
        notes=((404, "No such run, or the run is no longer active (`message` says which)"),),
    ),
    Operation(
        "post",
        _R + "/input",
        "Answer a run that waits for input (status waiting_input); a run that another server on the "
        "same data dir executes gets the answer from that server, within 2 s",
        "jobs",
        m.RunInput,
        m.OkBody,
        errors=_WITH_BODY,
        notes=(_NO_RUN, (409, "The run is not waiting for input, or an answer is already on its way to it")),
    ),
    Operation(
        "get",
        _R + "/events",
        "Live run events as Server-Sent Events (snapshot, run_status, run_output, run_input_needed, "
        "run_auto_accepted; Last-Event-ID resumes)",
        "jobs",
        stream="text/event-stream",
        first_event=m.RunSnapshot,
        events=_RUN_EVENTS,
        errors=_STREAM_ERRORS,
        notes=(_NO_RUN, _STREAM_CAP),
    ),
    Operation(
        "get",
        "/ws/v1/runs/{run_id}/events",
        "Live run events over a WebSocket (same events; ?token= instead of the header)",
        "jobs",
        status=101,
        first_event=m.RunSnapshot,
        events=_RUN_EVENTS,
        errors=_STREAM_ERRORS,
        notes=(_NO_RUN, _STREAM_CAP),
    ),
    _task_op(
        "post",
        "/tasks",
        "Create a scheduled task (cron, rrule, once or event) whose payload is a pipeline of steps",
        m.CreateTaskRequest,
        m.TaskCreated,
        status=201,
        also=((200, "Its dedupe rule found an existing task: that one (deduplicated: true), none made"),),
        errors=(400, 415, 503),
        notes=(_BAD_TASK,),
    ),
    _task_op(
        "get",
        "/tasks",
        "List tasks, oldest first (filter by status, created_by, schedule_kind; limit/offset)",
        response=m.TaskPage,
        errors=(400,),
        notes=((400, "Invalid listing: a bad status, schedule_kind, limit or offset"),),
    ),
    _task_op(
        "post",
        "/tasks/preview",
        "The next fire times of a schedule as POST /tasks would plan it (nothing is stored)",
        m.PreviewRequest,
        m.SchedulePreview,
        errors=(400, 415),
        notes=((400, "The schedule is invalid: `errors` names the field and says what is wrong and where"),),
    ),
    _task_op(
        "get",
        _T,
        "One task: its fields, next 5 fire times, newest run and runs per status",
        errors=(404,),
        notes=(_NO_TASK,),
    ),
    _task_op(
        "put",
        _T,
        "Change a task: only the fields given (a changed schedule is planned anew from now)",
        m.UpdateTaskRequest,
        errors=(*_WITH_BODY, 503),
        notes=(_BAD_TASK, _NO_TASK, _FINAL),
    ),
    _task_op(
        "get",
        _T + "/runs",
        "A task's runs, every attempt, newest first (filter by status; ?before= pages on)",
        response=m.TaskRunPage,
        errors=(400, 404),
        notes=(_NO_TASK,),
    ),
    _task_op(
        "post",
        _T + "/run_now",
        "Run the task once now (trigger manual), outside its schedule",
        response=m.TaskRunStarted,
        status=202,
    ),
    _task_op(
        "post",
        _T + "/snooze",
        "Delay the task's next fire by delay_seconds (at most a week)",
        m.SnoozeRequest,
        errors=(*_WITH_BODY, 503),
        notes=(_BAD_TASK, _NO_TASK, _FINAL),
    ),
    _task_op("post", _T + "/pause", "Stop firing the task until it is resumed"),
    _task_op("post", _T + "/resume", "Fire a paused task again, planned from now"),
    _task_op("post", _T + "/cancel", "Cancel a task for good (its runs not started yet are killed)"),
    _task_op(
        "get",
        "/runs",
        "Every task's runs, newest first, as the public tasks system lists them (filter by task_id, "
        "success, start_time/end_time on creation; limit/offset)",
        response=m.TaskRunList,
        errors=(400,),
        notes=(
            (
                400,
                "Invalid listing: a bad task_id (not a UUID), success or include_errors (not a boolean), "
                "start_time or end_time (not ISO 8601), limit or offset",
            ),
        ),
    ),
    _task_op(
        "get",
        "/runs/{run_id}",
        "One task's run, with the public tasks system's fields (success, error, output...)",
        response=m.TaskRun,
        errors=(404,),
        notes=((404, "No such run, or the run is a one-time job's (see /api/tasks/runs/{run_id})"),),
    ),
    _task_op(
        "post",
        "/events",
        "Fire every active event task of a topic; each run gets the payload as ${event.x}",
        m.EventRequest,
        m.EventAccepted,
        status=202,
        errors=(400, 415, 503),
        notes=(),
    ),
]

# Routes whose request body may be left out (the request model's defaults apply).
OPTIONAL_BODY = frozenset({_D + "/{id}/retry", _SID})

_EVENT_QUERY = [
    {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "Resume after this seq: only the missed events (a snapshot if no longer buffered).",
        "schema": {"type": "integer", "minimum": 0},
    },
    {
        "name": "types",
        "in": "query",
        "required": False,
        "description": "Comma-separated event types to receive (snapshot and overflow always come).",
        "schema": {"type": "string"},
    },
]


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_DELIVERY_QUERY = [
    _query("status", "Only deliveries in this state.", {"enum": ["pending", "delivered", "failed"]}),
    _query("kind", 'Only this kind, e.g. "session_end".', {"type": "string"}),
    _query("namespace", "Only deliveries about sessions of this namespace.", {"type": "string"}),
    _query(
        "sessionId",
        "Only deliveries about this session. Needs `namespace` as well (400 without it).",
        {"type": "string"},
    ),
    _query("limit", "At most this many (default 100).", {"type": "integer", "minimum": 1, "maximum": 1000}),
]
_RUN_QUERY = [
    _query("status", "Only runs in this state.", {"enum": list(RUN_STATUSES)}),
    _query("trigger", "Only runs started this way.", {"enum": list(TRIGGERS)}),
    _query("task_id", "Only the runs of this scheduled task.", {"type": "string"}),
    _query(
        "before",
        "Only runs with a smaller id: the previous page's next_before.",
        {"type": "integer", "minimum": 1, "maximum": MAX_RUN_ID},
    ),
    _query(
        "limit", "At most this many (default 50).", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    ),
]
_TASK_QUERY = [
    _query("status", "Only tasks in this state.", {"enum": ["active", "paused", "canceled"]}),
    _query("created_by", "Only tasks of this creator (UUID).", {"type": "string"}),
    _query("schedule_kind", "Only this kind.", {"enum": ["cron", "rrule", "once", "event"]}),
    _query(
        "limit", "At most this many (default 50).", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    ),
    _query("offset", "Skip this many (default 0).", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
]
_TASK_RUN_QUERY = [
    _query("status", "Only runs in this state.", {"enum": list(RUN_STATUSES)}),
    _query(
        "before",
        "Only runs with a smaller id: the previous page's next_before.",
        {"type": "integer", "minimum": 1, "maximum": MAX_RUN_ID},
    ),
    _query(
        "limit", "At most this many (default 50).", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    ),
]
_BOOLEAN = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]}
_ALL_TASK_RUNS_QUERY = [
    _query("task_id", "Only the runs of this task (UUID).", {"type": "string", "format": "uuid"}),
    _query("success", "true: completed runs only; false: failed or killed ones only.", _BOOLEAN),
    _query(
        "include_errors",
        "true: each run's error as it is; otherwise a placeholder where there is one (default false).",
        _BOOLEAN,
    ),
    _query(
        "start_time",
        "Only runs created at or after this time (ISO 8601; without an offset: UTC).",
        {"type": "string", "format": "date-time"},
    ),
    _query(
        "end_time",
        "Only runs created at or before this time (ISO 8601; without an offset: UTC).",
        {"type": "string", "format": "date-time"},
    ),
    _query(
        "limit", "At most this many (default 50).", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    ),
    _query("offset", "Skip this many (default 0).", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
]
_SSE_QUERY = [
    *_EVENT_QUERY,
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "As ?after= (EventSource sends it when it reconnects).",
        "schema": {"type": "integer", "minimum": 0},
    },
]
_WS_QUERY = [
    *_EVENT_QUERY,
    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
]
_LSM_QUERY = [
    _query("namespaceFilter", "Only events of this namespace.", {"type": "string"}),
    _query(
        "namespaceAnnotationFilters",
        "Only namespaces with these annotations: a JSON object of strings, base64url-encoded.",
        {"type": "string"},
    ),
]
_LOGS_QUERY = [
    _query("namespaceFilter", "Only lines of agents of this namespace.", {"type": "string"}),
    _query("sessionFilter", "Only lines of agents of this session.", {"type": "string"}),
    _query("agentFilter", "Only lines of agents of this name.", {"type": "string"}),
    _query(
        "limit",
        "Replay at most this many of the lines kept (default 1024, at most 2048).",
        {"type": "integer", "minimum": 0},
    ),
]
QUERY_PARAMS: dict[str, list[dict[str, Any]]] = {
    "/ws/v1/events/lsm": _LSM_QUERY,
    "/ws/v1/events/{token}/lsm": _LSM_QUERY,
    "/ws/v1/logs": _LOGS_QUERY,
    "/ws/v1/logs/{token}": _LOGS_QUERY,
    "/api/v1/webhooks/deliveries": _DELIVERY_QUERY,
    "/api/v1/events/{namespace}/{sessionId}": _SSE_QUERY,
    "/ws/v1/events/{namespace}/{sessionId}": _WS_QUERY,
    "/api/tasks/runs": _RUN_QUERY,
    "/tasks": _TASK_QUERY,
    _T + "/runs": _TASK_RUN_QUERY,
    "/runs": _ALL_TASK_RUNS_QUERY,
    _R + "/events": _SSE_QUERY,
    "/ws/v1/runs/{run_id}/events": _WS_QUERY,
}


def _name(shape: Any) -> str:
    return str(shape.__name__)


def _ref(shape: Any) -> dict[str, str]:
    return {"$ref": REF.format(model=_name(shape))}


def _content(spec: Any) -> dict[str, Any]:
    schema = {"type": "array", "items": _ref(spec[0])} if isinstance(spec, list) else _ref(spec)
    return {"application/json": {"schema": schema}}


def _components() -> dict[str, Any]:
    shapes = [*m.REQUEST_MODELS.values(), *m.RESPONSE_MODELS.values()]
    _, defs = TypeAdapter.json_schemas(
        [(_name(shape), "validation", TypeAdapter(shape)) for shape in shapes], ref_template=REF
    )
    return dict(defs.get("$defs", {}))


def _operation(op: Operation, auth: bool) -> dict[str, Any]:
    params = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in op.path.split("/")
        if part.startswith("{")
    ] + QUERY_PARAMS.get(op.path, [])
    first = "" if op.first_event is None else _name(op.first_event)
    ok: dict[str, Any] = {"description": SUCCESS[op.status].format(first=first)}
    if op.response is not None:
        ok["content"] = _content(op.response)
    if op.stream is not None:
        ok["description"] = f"Events (id: seq, event: type, data: the event's JSON); the first a {first}"
        ok["content"] = {op.stream: {"schema": {"type": "string"}}}
    if op.events:
        names = ", ".join(_name(shape) for shape in op.events)
        ok["description"] += f", then any of {names} (components; `type` tells which)"
        ok["x-events"] = {"oneOf": [_ref(shape) for shape in op.events]}
    responses: dict[str, Any] = {str(op.status): ok}
    for status, why in op.also:
        responses[str(status)] = {**ok, "description": why}
    notes = dict(op.notes)
    for status in sorted({*op.errors, *((401,) if auth else ())}):
        why = notes.get(status, ERRORS[status])
        responses[str(status)] = {"description": why, "content": _content(m.ErrorBody)}
        if status in ERROR_HEADERS:
            responses[str(status)]["headers"] = ERROR_HEADERS[status]
    out: dict[str, Any] = {
        "summary": op.summary,
        **({"description": op.description} if op.description else {}),
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    }
    if op.request is not None:
        out["requestBody"] = {"required": op.path not in OPTIONAL_BODY, "content": _content(op.request)}
    return out


def build_openapi(auth: bool = True) -> dict[str, Any]:
    """The OpenAPI document; `auth` says whether the server asks for a bearer key (it has keys)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        spec = _operation(op, auth)
        paths.setdefault(op.path, {}).setdefault(op.method, spec)
        if op.path.startswith("/api/v1/session"):
            local = op.path.replace("/api/v1/session", "/api/v1/local/session")
            paths.setdefault(local, {}).setdefault(op.method, spec)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "coral_server", "version": __version__},
        "paths": paths,
        "components": {"schemas": _components()},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(auth=bool(request.app[SETTINGS].auth_keys)))
