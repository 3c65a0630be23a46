"""Shared fixtures: a real coral_server running in-process on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coral_server.app import build_app, serve
from coral_server.config import BUNDLED_REGISTRY, Settings

FIXTURE_REGISTRY = Path(__file__).parent / "fixtures" / "registry"
AGENT_IMAGE = "coral-agents:0.1.0"


def docker_engine() -> Any:
    """A docker SDK client of an engine that has the agents' image; else skip (fail if required)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(AGENT_IMAGE)
        return client
    except Exception as exc:
        if os.environ.get("CORAL_TEST_DOCKER") == "1":
            raise AssertionError(
                f"CORAL_TEST_DOCKER=1 but the engine or {AGENT_IMAGE} is unusable: {exc}"
            ) from exc
        pytest.skip(f"no Docker engine with {AGENT_IMAGE}: {exc}")


class Coral:
    """A running server plus a small HTTP client for it."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession, app: Any, key: str | None) -> None:
        self.base_url = base_url
        self.http = http
        self.app = app
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base_url + path, json=json, data=data, headers=headers or self.headers
        ) as resp:
            text = await resp.text()
            body = None
            if text and resp.content_type == "application/json":
                body = await resp.json()
            return resp.status, body

    async def create_session(self, body: dict[str, Any]) -> tuple[str, str]:
        status, out = await self.request("POST", "/api/v1/local/session", body)
        assert status == 200, out
        return out["namespace"], out["sessionId"]

    async def state(self, ns: str, sid: str) -> dict[str, Any]:
        status, out = await self.request("GET", f"/api/v1/local/session/{ns}/{sid}")
        assert status == 200, out
        return out  # type: ignore[no-any-return]

    async def wait_for(
        self, ns: str, sid: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state: dict[str, Any] = {}
        while loop.time() < deadline:
            state = await self.state(ns, sid)
            if predicate(state):
                return state
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout}s; last state: {state}")

    async def wait_gone(self, ns: str, sid: str, timeout: float = 15) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            status, _ = await self.request("GET", f"/api/v1/local/session/{ns}/{sid}")
            if status == 404:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"session {sid} still present after {timeout}s")

    async def connection_url(self, ns: str, sid: str, agent: str) -> str:
        status, out = await self.request("GET", f"/api/v1/local/session/{ns}/{sid}/agents/{agent}/connection")
        assert status == 200, out
        return out["connectionUrl"]  # type: ignore[no-any-return]


async def start_coral(tmp_path: Path, **overrides: Any) -> AsyncIterator[Coral]:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "registry": (BUNDLED_REGISTRY, FIXTURE_REGISTRY),
        "data_dir": tmp_path / "data",
        "stop_grace_s": 2.0,
    }
    values.update(overrides)
    settings = Settings(**values)
    app = build_app(settings)
    runner, port = await serve(app, "127.0.0.1", 0)
    key = settings.auth_keys[0] if settings.auth_keys else None
    try:
        async with aiohttp.ClientSession() as http:
            yield Coral(f"http://127.0.0.1:{port}", http, app, key)
    finally:
        await runner.cleanup()


@pytest.fixture
async def coral(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path):
        yield server


def agent_spec(
    name: str, registry_name: str = "echo", runtime: str = "executable", **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": {"name": registry_name, "version": extra.pop("version", "0.1.0"), "source": "local"},
        "name": name,
        "provider": {"type": "local", "runtime": runtime},
    }
    spec.update(extra)
    return spec


def session_body(
    agents: list[dict[str, Any]],
    groups: list[list[str]] | None = None,
    namespace: str = "test",
    **settings: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agentGraphRequest": {
            "agents": agents,
            "groups": groups if groups is not None else [[a["name"] for a in agents]],
        },
        "namespaceProvider": {
            "type": "create_if_not_exists",
            "namespaceRequest": {"name": namespace, "deleteOnLastSessionExit": True},
        },
        "execution": {"mode": "immediate"},
    }
    if settings:
        body["execution"]["runtimeSettings"] = settings
    return body
