"""HTTP routes of namespaces, in the reference server's shapes: list, create, read, delete."""

from __future__ import annotations

from aiohttp import web

from coral_server.api import reference
from coral_server.api.body import read_model
from coral_server.api.errors import json_response
from coral_server.api.keys import SESSIONS
from coral_server.api.models import NamespaceRequest


async def list_namespaces(request: web.Request) -> web.Response:
    namespaces = request.app[SESSIONS].namespaces.values()
    return json_response([reference.namespace_base(ns) for ns in namespaces])


async def list_namespaces_extended(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    now = sessions.clock.now_ms()
    return json_response([reference.namespace_extended(ns, now) for ns in sessions.namespaces.values()])


async def create_namespace(request: web.Request) -> web.Response:
    body = await read_model(request, NamespaceRequest)
    request.app[SESSIONS].create_namespace(body.name, body.deleteOnLastSessionExit, body.annotations)
    return web.Response(status=200)


async def namespace_sessions(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    ns = sessions.namespace(request.match_info["namespace"])
    now = sessions.clock.now_ms()
    return json_response([reference.session_base(s, now) for s in ns.sessions.values()])


async def namespace_sessions_extended(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    ns = sessions.namespace(request.match_info["namespace"])
    now = sessions.clock.now_ms()
    return json_response([reference.session_extended(s, now) for s in ns.sessions.values()])


async def delete_namespace(request: web.Request) -> web.Response:
    await request.app[SESSIONS].delete_namespace(request.match_info["namespace"])
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    prefix = "/api/v1/local/namespace"
    # `/extended` first: it is not a namespace called "extended" (as in the reference).
    app.router.add_get(prefix + "/extended", list_namespaces_extended)
    app.router.add_get(prefix, list_namespaces)
    app.router.add_post(prefix, create_namespace)
    app.router.add_get(prefix + "/{namespace}", namespace_sessions)
    app.router.add_get(prefix + "/{namespace}/extended", namespace_sessions_extended)
    app.router.add_delete(prefix + "/{namespace}", delete_namespace)
