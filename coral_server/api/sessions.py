"""HTTP routes of sessions: create, list, read state, read agent logs, close."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from coral_server.api import reference, views
from coral_server.api.body import read_json, read_model
from coral_server.api.errors import BadRequest, json_response, problems_of
from coral_server.api.keys import SESSIONS
from coral_server.api.models import (
    AgentGraphRequest,
    AgentSpec,
    CreateSessionRequest,
    CustomTool,
    PersistenceMode,
    RuntimeSettings,
)
from coral_server.sessions import (
    AgentRequest,
    CustomToolSpec,
    EndWebhook,
    ExecutionSettings,
    Session,
    SessionRequest,
    Sessions,
)
from coral_server.sessions.errors import NotExternal, SessionRequestInvalid

MAX_LOG_LINES = 10_000


def to_domain(body: CreateSessionRequest) -> SessionRequest:
    """Translate the API model (either spelling of each field) into the domain request."""
    graph = body.agentGraphRequest
    provider = body.namespaceProvider
    namespace, create, delete_on_exit = "default", True, True
    if provider is not None:
        if provider.type == "use_existing":
            namespace, create = provider.name or "default", False
        elif provider.namespaceRequest is not None:
            namespace = provider.namespaceRequest.name
            delete_on_exit = provider.namespaceRequest.deleteOnLastSessionExit
    settings = body.sessionRuntimeSettings or (body.execution.runtimeSettings if body.execution else None)
    settings_path = "sessionRuntimeSettings" if body.sessionRuntimeSettings else "execution.runtimeSettings"
    persistence = settings.persistenceMode if settings else None
    agents = [
        AgentRequest(
            name=a.name,
            registry_name=a.id.name,
            registry_version=a.id.version,
            runtime=a.provider.runtime,
            description=a.description,
            system_prompt=a.systemPrompt,
            blocking=a.blocking,
            options=dict(a.options),
            custom_tool_access=list(a.customToolAccess),
            plugins=[p.type for p in a.plugins],
            annotations=dict(a.annotations),
        )
        for a in graph.agents
    ]
    return SessionRequest(
        namespace=namespace,
        agents=agents,
        groups=[list(g) for g in graph.groups],
        create_namespace=create,
        delete_namespace_on_last_exit=delete_on_exit,
        custom_tools={name: _custom_tool(name, tool) for name, tool in graph.customTools.items()},
        ttl_ms=settings.ttl if settings else None,
        hold_after_exit_ms=persistence.hold_ms() if persistence else 0,
        minimum_time_ms=persistence.minimum_ms() if persistence else 0,
        end_webhook=_end_webhook(settings),
        annotations=dict(body.annotations),
        defer=body.execution is not None and body.execution.mode == "defer",
        settings_path=settings_path,
        persistence_path=f"{settings_path}.persistenceMode{_kept_by(persistence)}",
        end_webhook_path=f"{settings_path}.webhooks.sessionEnd.url",
    )


def _kept_by(persistence: PersistenceMode | None) -> str:
    """Which field of a persistence mode gave its time ("" when none did)."""
    if persistence is None or persistence.kind() == "none":
        return ""
    order = (
        ("duration", "holdTime")
        if persistence.kind() == "hold_after_exit"
        else ("time", "duration", "holdTime")
    )
    return next((f".{name}" for name in order if getattr(persistence, name) is not None), "")


def _end_webhook(settings: RuntimeSettings | None) -> EndWebhook | None:
    if settings is None or settings.webhooks is None or settings.webhooks.sessionEnd is None:
        return None
    return EndWebhook(url=settings.webhooks.sessionEnd.url, extended=settings.extendedEndReport)


def _custom_tool(name: str, tool: CustomTool) -> CustomToolSpec:
    description, input_schema, output_schema = tool.definition()
    return CustomToolSpec(
        name=name,
        url=tool.transport.url,
        signature_header=tool.transport.signatureHeader,
        description=description,
        input_schema=input_schema,
        output_schema=output_schema,
    )


def _registry_problems(sessions: Sessions, raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Best effort: registry and option checks of the agents that are well-formed on their own."""
    graph = raw.get("agentGraphRequest")
    agents = graph.get("agents") if isinstance(graph, dict) else None
    if not isinstance(agents, list):
        return []
    tools = graph.get("customTools") if isinstance(graph, dict) else None
    tool_names = list(tools) if isinstance(tools, dict) else []
    specs: list[AgentSpec] = []
    indices: list[int] = []
    for i, item in enumerate(agents):
        try:
            specs.append(AgentSpec.model_validate(item))
            indices.append(i)
        except ValidationError:
            continue
    partial = to_domain(
        CreateSessionRequest.model_construct(
            agentGraphRequest=AgentGraphRequest.model_construct(agents=specs, groups=[], customTools={}),
            annotations={},
        )
    )
    partial.custom_tools = {name: CustomToolSpec(name=name, url="") for name in tool_names}
    return [(p.path, p.message) for p in sessions.check_agents(partial, indices)]


def parse_session(sessions: Sessions, raw: Any, prefix: str = "session.") -> SessionRequest:
    """A session request body as the domain's request, registry checked; a 400 names every wrong
    field (under `prefix`, e.g. "session." for a job's session)."""
    if not isinstance(raw, dict):
        raise BadRequest(
            "a session request must be a JSON object", [(prefix or "(body)", "expected an object")]
        )
    try:
        body = CreateSessionRequest.model_validate(raw)
    except ValidationError as exc:
        problems = problems_of(exc) + _registry_problems(sessions, raw)
        raise BadRequest("invalid session request", [(prefix + f, m) for f, m in problems]) from None
    request = to_domain(body)
    if prefix:
        try:
            sessions.validate(request)
        except SessionRequestInvalid as exc:
            problems = [(prefix + p.path, p.message) for p in exc.problems]
            raise BadRequest("invalid session request", problems) from None
    return request


async def create_session(request: web.Request) -> web.Response:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise BadRequest("request body must be a JSON object", [("(body)", "expected an object")])
    sessions = request.app[SESSIONS]
    session = await sessions.create(parse_session(sessions, raw, prefix=""))
    return json_response(views.created(session))


async def list_all(request: web.Request) -> web.Response:
    namespaces = request.app[SESSIONS].namespaces.values()
    return json_response([views.namespace_sessions(ns) for ns in namespaces])


async def list_namespace(request: web.Request) -> web.Response:
    ns = request.app[SESSIONS].namespace(request.match_info["namespace"])
    return json_response([views.session_summary(s) for s in ns.sessions.values()])


def _session(request: web.Request) -> Session:
    return request.app[SESSIONS].get(request.match_info["namespace"], request.match_info["session"])


async def get_state(request: web.Request) -> web.Response:
    return json_response(await views.session_state_later(_session(request))())


async def get_extended(request: web.Request) -> web.Response:
    """The reference server's extended state: {base, agents, threads}."""
    now = request.app[SESSIONS].clock.now_ms()
    return json_response(reference.session_extended(_session(request), now))


async def execute_session(request: web.Request) -> web.Response:
    """Run a session created with `execution: {mode: "defer"}`; the body is its runtime settings."""
    settings = await read_model(request, RuntimeSettings, optional=True)
    persistence = settings.persistenceMode
    end_webhook = _end_webhook(settings)
    if end_webhook is not None:
        await request.app[SESSIONS].check_destinations(
            SessionRequest(
                namespace="", agents=[], end_webhook=end_webhook, end_webhook_path="webhooks.sessionEnd.url"
            )
        )
    await request.app[SESSIONS].execute(
        request.match_info["namespace"],
        request.match_info["session"],
        ExecutionSettings(
            ttl_ms=settings.ttl,
            hold_after_exit_ms=persistence.hold_ms() if persistence else 0,
            minimum_time_ms=persistence.minimum_ms() if persistence else 0,
            end_webhook=end_webhook,
        ),
    )
    return web.Response(status=200)


async def close_session(request: web.Request) -> web.Response:
    await _session(request).close("deleted")
    return web.Response(status=200)


async def agent_logs(request: web.Request) -> web.Response:
    agent = _session(request).agent(request.match_info["agent"])
    try:
        tail = int(request.query.get("tail", "1000"))
    except ValueError:
        raise BadRequest("tail must be an integer", [("tail", "expected an integer")]) from None
    if not 0 <= tail <= MAX_LOG_LINES:
        raise BadRequest(f"tail must be between 0 and {MAX_LOG_LINES}", [("tail", "out of range")])
    return json_response(views.agent_logs(agent, tail))


async def agent_connection(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    agent = _session(request).agent(request.match_info["agent"])
    if agent.runtime != "external":
        raise NotExternal(agent.name)
    return json_response(views.agent_connection(agent, sessions.connection_url(agent)))


def add_routes(app: web.Application) -> None:
    for prefix in ("/api/v1/session", "/api/v1/local/session"):
        app.router.add_post(prefix, create_session)
        app.router.add_get(prefix, list_all)
        app.router.add_get(prefix + "/{namespace}", list_namespace)
        app.router.add_get(prefix + "/{namespace}/{session}", get_state)
        app.router.add_post(prefix + "/{namespace}/{session}", execute_session)
        app.router.add_get(prefix + "/{namespace}/{session}/extended", get_extended)
        app.router.add_delete(prefix + "/{namespace}/{session}", close_session)
        app.router.add_get(prefix + "/{namespace}/{session}/agents/{agent}/logs", agent_logs)
        app.router.add_get(prefix + "/{namespace}/{session}/agents/{agent}/connection", agent_connection)
