"""The OpenAPI document of the HTTP API, built from the pydantic models."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from coral_server import __version__
from coral_server.api import models as m
from coral_server.api.errors import json_response

REF = "#/components/schemas/{model}"

# (method, path, summary, request model, response model or list[model], tag)
_S = "/api/v1/session"
_SID = "/api/v1/session/{namespace}/{sessionId}"
_P = "/api/v1/puppet/{namespace}/{sessionId}/{agent}"
OPERATIONS: list[tuple[str, str, str, type[BaseModel] | None, Any, str]] = [
    (
        "post",
        "/api/v1/local/session",
        "Create a session",
        m.CreateSessionRequest,
        m.CreateSessionResponse,
        "sessions",
    ),
    ("post", _S, "Create a session (alias)", m.CreateSessionRequest, m.CreateSessionResponse, "sessions"),
    ("get", _S, "List sessions of every namespace", None, [m.NamespaceSessions], "sessions"),
    ("get", _S + "/{namespace}", "List sessions of a namespace", None, [m.SessionSummary], "sessions"),
    ("get", _SID, "Session state: agents, threads, messages", None, m.SessionState, "sessions"),
    ("delete", _SID, "Close a session (every agent is stopped)", None, None, "sessions"),
    ("get", _SID + "/agents/{agent}/logs", "An agent's recent output", None, m.AgentLogs, "sessions"),
    (
        "get",
        _SID + "/agents/{agent}/connection",
        "MCP URL of an external agent",
        None,
        m.AgentConnection,
        "sessions",
    ),
    ("get", "/api/v1/registry", "List registry agents", None, [m.RegistrySource], "registry"),
    (
        "get",
        "/api/v1/registry/{source}/{name}/{version}",
        "Registry agent details (options, runtimes)",
        None,
        m.RegistryAgentDetail,
        "registry",
    ),
    (
        "post",
        _P + "/thread",
        "Act as an agent: create a thread",
        m.PuppetCreateThread,
        m.ThreadState,
        "puppet",
    ),
    (
        "delete",
        _P + "/thread",
        "Act as an agent: close a thread",
        m.PuppetCloseThread,
        m.ThreadState,
        "puppet",
    ),
    (
        "post",
        _P + "/thread/message",
        "Act as an agent: send a message (mentions wake their agents)",
        m.PuppetSendMessage,
        m.MessageState,
        "puppet",
    ),
    (
        "post",
        _P + "/thread/participant",
        "Act as an agent: add a participant",
        m.PuppetParticipant,
        m.ThreadState,
        "puppet",
    ),
    (
        "delete",
        _P + "/thread/participant",
        "Act as an agent: remove a participant",
        m.PuppetParticipant,
        m.ThreadState,
        "puppet",
    ),
    ("delete", _P, "Stop the agent (its state shows it exited)", None, m.AgentState, "puppet"),
    (
        "get",
        "/api/v1/webhooks/deliveries",
        "Outgoing webhook deliveries, newest first (filter by status, kind, namespace, sessionId)",
        None,
        [m.DeliveryOut],
        "webhooks",
    ),
    (
        "get",
        "/api/v1/webhooks/deliveries/{id}",
        "One delivery: its payload and every attempt",
        None,
        m.DeliveryDetail,
        "webhooks",
    ),
    (
        "post",
        "/api/v1/webhooks/deliveries/{id}/retry",
        "Give a failed delivery more attempts, the first at once (409 unless it failed)",
        m.RetryDeliveryRequest,
        m.DeliveryOut,
        "webhooks",
    ),
    (
        "get",
        "/api/v1/events/{namespace}/{sessionId}",
        "Live session events as Server-Sent Events (snapshot, then every change; Last-Event-ID resumes)",
        None,
        None,
        "events",
    ),
    (
        "get",
        "/ws/v1/events/{namespace}/{sessionId}",
        "Live session events over a WebSocket (same events; ?token= instead of the header)",
        None,
        None,
        "events",
    ),
]

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
    _query("sessionId", "Only deliveries about this session (needs namespace).", {"type": "string"}),
    _query("limit", "At most this many (default 100).", {"type": "integer", "minimum": 1, "maximum": 1000}),
]
QUERY_PARAMS: dict[str, list[dict[str, Any]]] = {
    "/api/v1/webhooks/deliveries": _DELIVERY_QUERY,
    "/api/v1/events/{namespace}/{sessionId}": _EVENT_QUERY,
    "/ws/v1/events/{namespace}/{sessionId}": [
        *_EVENT_QUERY,
        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
    ],
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _content(spec: Any) -> dict[str, Any]:
    schema = {"type": "array", "items": _ref(spec[0])} if isinstance(spec, list) else _ref(spec)
    return {"application/json": {"schema": schema}}


def build_openapi() -> dict[str, Any]:
    models = [*m.REQUEST_MODELS.values(), *m.RESPONSE_MODELS.values()]
    _, defs = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    error = {"description": "Error", "content": _content(m.ErrorBody)}
    for method, path, summary, request_model, response, tag in OPERATIONS:
        params = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in path.split("/")
            if part.startswith("{")
        ] + QUERY_PARAMS.get(path, [])
        op: dict[str, Any] = {
            "summary": summary,
            "tags": [tag],
            "parameters": params,
            "responses": {
                "200": {"description": "OK", **({"content": _content(response)} if response else {})},
                "400": error,
                "401": error,
                "404": error,
            },
        }
        if request_model is not None:
            op["requestBody"] = {"required": True, "content": _content(request_model)}
        paths.setdefault(path, {}).setdefault(method, op)
        if path.startswith("/api/v1/session"):
            local = path.replace("/api/v1/session", "/api/v1/local/session")
            paths.setdefault(local, {}).setdefault(method, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "coral_server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi())
