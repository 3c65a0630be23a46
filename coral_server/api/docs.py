"""Serves the bundled API browser (`ui/docs/`) and the health check."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from coral_server.api.errors import json_response
from coral_server.api.keys import STORE_HEALTH, WEBHOOKS
from coral_server.api.openapi import openapi

UI_DIR = Path(__file__).resolve().parent.parent.parent / "ui"


async def docs_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(UI_DIR / "docs" / "index.html")


async def health(request: web.Request) -> web.Response:
    """`{"status": "ok"}`; `degraded` with the store's figures while it refuses writes (disk full...)
    or accepted webhooks wait in memory for it."""
    store = request.app.get(STORE_HEALTH)
    unstored = request.app[WEBHOOKS].unstored if WEBHOOKS in request.app else 0
    if store is None or (not store.failing and not unstored):
        return json_response({"status": "ok"})
    return json_response({"status": "degraded", "store": store.to_json(), "unstoredWebhooks": unstored})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/ui/docs", docs_page)
    app.router.add_get("/ui/docs/", docs_page)
    app.router.add_get("/health", health)
