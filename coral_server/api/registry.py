"""HTTP routes of the agent registry."""

from __future__ import annotations

from aiohttp import web

from coral_server.api import views
from coral_server.api.errors import json_response
from coral_server.api.keys import REGISTRY
from coral_server.registry import AgentNotInRegistry


async def listing(request: web.Request) -> web.Response:
    return json_response(views.registry_sources(request.app[REGISTRY]))


async def detail(request: web.Request) -> web.Response:
    name, version = request.match_info["name"], request.match_info["version"]
    if request.match_info["source"] != "local":
        raise AgentNotInRegistry(name, version)
    return json_response(views.registry_agent_detail(request.app[REGISTRY].get(name, version)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/registry", listing)
    app.router.add_get("/api/v1/registry/{source}/{name}/{version}", detail)
