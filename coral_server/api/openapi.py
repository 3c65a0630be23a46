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


SUCCESS = {
    200: "OK",
    202: "Accepted",
    101: "Switching to the WebSocket protocol: one JSON event per message, the first a SessionSnapshot",
}
# Why each error status is answered (the body is always an ErrorBody).
ERRORS = {
    400: "Invalid request: `errors` names each wrong field",
    401: "Missing or wrong bearer key",
    404: "No such session, namespace, agent, thread, registry agent or delivery",
    409: "Conflicts with the current state (see `message`)",
    415: "The body says it is not JSON: send Content-Type: application/json",
}

_S = "/api/v1/session"
_SID = "/api/v1/session/{namespace}/{sessionId}"
_P = "/api/v1/puppet/{namespace}/{sessionId}/{agent}"
_D = "/api/v1/webhooks/deliveries"
_WITH_BODY = (400, 404, 409, 415)
OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/api/v1/local/session",
        "Create a session",
        "sessions",
        m.CreateSessionRequest,
        m.CreateSessionResponse,
        errors=_WITH_BODY,
    ),
    Operation(
        "post",
        _S,
        "Create a session (alias)",
        "sessions",
        m.CreateSessionRequest,
        m.CreateSessionResponse,
        errors=_WITH_BODY,
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
        m.ThreadState,
        errors=_WITH_BODY,
    ),
    Operation(
        "delete",
        _P + "/thread",
        "Act as an agent: close a thread",
        "puppet",
        m.PuppetCloseThread,
        m.ThreadState,
        errors=_WITH_BODY,
    ),
    Operation(
        "post",
        _P + "/thread/message",
        "Act as an agent: send a message (mentions wake their agents)",
        "puppet",
        m.PuppetSendMessage,
        m.MessageState,
        errors=_WITH_BODY,
    ),
    Operation(
        "post",
        _P + "/thread/participant",
        "Act as an agent: add a participant",
        "puppet",
        m.PuppetParticipant,
        m.ThreadState,
        errors=_WITH_BODY,
    ),
    Operation(
        "delete",
        _P + "/thread/participant",
        "Act as an agent: remove a participant",
        "puppet",
        m.PuppetParticipant,
        m.ThreadState,
        errors=_WITH_BODY,
    ),
    Operation(
        "delete",
        _P,
        "Stop the agent (its state shows it exited)",
        "puppet",
        response=m.AgentState,
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
        errors=_WITH_BODY,
    ),
    Operation(
        "get",
        "/api/v1/events/{namespace}/{sessionId}",
        "Live session events as Server-Sent Events (snapshot, then every change; Last-Event-ID resumes)",
        "events",
        stream="text/event-stream",
    ),
    Operation(
        "get",
        "/ws/v1/events/{namespace}/{sessionId}",
        "Live session events over a WebSocket (same events; ?token= instead of the header)",
        "events",
        status=101,
    ),
]

# Routes whose request body may be left out (the request model's defaults apply).
OPTIONAL_BODY = frozenset({_D + "/{id}/retry"})

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
QUERY_PARAMS: dict[str, list[dict[str, Any]]] = {
    "/api/v1/webhooks/deliveries": _DELIVERY_QUERY,
    "/api/v1/events/{namespace}/{sessionId}": [
        *_EVENT_QUERY,
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "As ?after= (EventSource sends it when it reconnects).",
            "schema": {"type": "integer", "minimum": 0},
        },
    ],
    "/ws/v1/events/{namespace}/{sessionId}": [
        *_EVENT_QUERY,
        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
    ],
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
    ok: dict[str, Any] = {"description": SUCCESS[op.status]}
    if op.response is not None:
        ok["content"] = _content(op.response)
    if op.stream is not None:
        ok["description"] = (
            "Events (id: seq, event: type, data: the event's JSON); the first a SessionSnapshot"
        )
        ok["content"] = {op.stream: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.status): ok}
    notes = dict(op.notes)
    for status in sorted({*op.errors, *((401,) if auth else ())}):
        why = notes.get(status, ERRORS[status])
        responses[str(status)] = {"description": why, "content": _content(m.ErrorBody)}
    out: dict[str, Any] = {
        "summary": op.summary,
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
