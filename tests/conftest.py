"""Shared fixtures: a real coral_server running in-process on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from coral_server.app import ZYGOTE, build_app, serve
from coral_server.config import BUNDLED_REGISTRY, Settings

FIXTURE_REGISTRY = Path(__file__).parent / "fixtures" / "registry"
AGENT_IMAGE = "coral-agents:0.1.0"
# How long a test waits for a condition by default: generous, since a wait that succeeds returns at
# once, and a busy 2-core machine (a cold zygote importing the MCP SDK, other suites) is slow.
WAIT_S = 30.0

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = WAIT_S,
    *,
    interval: float = 0.02,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """Poll `condition` (sync or async) until it returns something truthy, and return that.

    How tests wait: on the condition, with a timeout, never a fixed sleep. `what` (or what it
    returns when called) names the condition in the failure.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(f"{what() if callable(what) else what}: not met within {timeout} s")
        await asyncio.sleep(interval)


async def loop_steps(count: int = 10) -> None:
    """Run the event loop `count` iterations: a wake-up already in flight has landed by then.

    For checks that something did NOT happen in pure-asyncio tests; counts steps, not time.
    """
    for _ in range(count):
        await asyncio.sleep(0)


def docker_engine() -> Any:
    """A docker SDK client of an engine that has the agents' image; else skip (fail if required).

    The caller closes it. The engine's socket is probed first, as the server does: the SDK leaves the
    socket of a failed connect open, a ResourceWarning in whichever test the collector runs in."""
    client = None
    try:
        import docker

        from coral_server.runtimes.docker import DEFAULT_SOCKET, _probe

        _probe(os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET)
        client = docker.from_env()
        client.ping()
        client.images.get(AGENT_IMAGE)
        return client
    except Exception as exc:
        if client is not None:
            client.close()
        if os.environ.get("CORAL_TEST_DOCKER") == "1":
            raise AssertionError(
                f"CORAL_TEST_DOCKER=1 but the engine or {AGENT_IMAGE} is unusable: {exc}"
            ) from exc
        pytest.skip(f"no Docker engine with {AGENT_IMAGE}: {exc}")


class _Records(logging.Handler):
    """Collects what asyncio logs as errors (it reports instead of warning)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> str:
        """What was reported since the last take, formatted ('' if nothing)."""
        text = "\n".join(self.format(r) for r in self.records)
        self.records.clear()
        return text


ASYNCIO_REPORTS = _Records()
logging.getLogger("asyncio").addHandler(ASYNCIO_REPORTS)


@pytest.fixture(autouse=True)
def asyncio_reports_fail() -> Iterator[None]:
    """What the event loop reports (a task exception nobody retrieved, a callback that raised)
    fails the test, as warnings do (those are errors too, see pyproject.toml)."""
    yield
    reported = ASYNCIO_REPORTS.take()
    assert not reported, f"asyncio reported:\n{reported}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Reports that came after the last test's teardown (e.g. when a task was collected) fail the run."""
    gc.collect()  # a task in a reference cycle reports only once collected
    reported = ASYNCIO_REPORTS.take()
    if reported:
        print(f"\nasyncio reported after the last test:\n{reported}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
        self, ns: str, sid: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
    ) -> dict[str, Any]:
        """The session's state, once `predicate` holds for it."""
        last: dict[str, Any] = {}

        async def holds() -> dict[str, Any] | None:
            nonlocal last
            last = await self.state(ns, sid)
            return last if predicate(last) else None

        return await wait_until(holds, timeout, interval=0.05, what=lambda: f"last state {last}")

    async def wait_gone(self, ns: str, sid: str, timeout: float = WAIT_S) -> None:
        """Until the session's state answers 404 (it was forgotten)."""

        async def gone() -> bool:
            status, _ = await self.request("GET", f"/api/v1/local/session/{ns}/{sid}")
            return status == 404

        await wait_until(gone, timeout, interval=0.05, what=f"session {sid} gone")

    async def warm_python_agents(self) -> None:
        """Start the server's zygote now (it starts on the first Python launch otherwise).

        Its MCP SDK import takes seconds on a busy machine; a test whose time budget (a TTL, a
        persistence window) starts when the session is created must not spend it there.
        """
        await self.app[ZYGOTE].start()

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
