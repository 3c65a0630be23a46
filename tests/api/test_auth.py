"""Bearer-key authentication: every /api route needs a configured key; docs and health stay public."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from tests.conftest import Coral, agent_spec, session_body, start_coral

KEYS = ("k1", "second-key")


def body(ns: str = "auth") -> dict[str, Any]:
    return session_body(
        [agent_spec("o", "opts", "external", version="1.0.0", options={"NAME": "abc"})], namespace=ns
    )


@pytest.fixture
async def locked(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, auth_keys=KEYS):
        yield server


async def make_session(coral: Coral, headers: dict[str, str]) -> tuple[str, str]:
    status, out = await coral.request("POST", "/api/v1/local/session", body(), headers=headers)
    assert status == 200, out
    return out["namespace"], out["sessionId"]


# (method, path template, expected status with a valid key); {ns}/{sid} filled from a live session.
ROUTES: list[tuple[str, str, int]] = [
    ("POST", "/api/v1/local/session", 200),
    ("POST", "/api/v1/session", 200),
    ("GET", "/api/v1/session", 200),
    ("GET", "/api/v1/local/session", 200),
    ("GET", "/api/v1/session/{ns}", 200),
    ("GET", "/api/v1/local/session/{ns}", 200),
    ("GET", "/api/v1/session/{ns}/{sid}", 200),
    ("GET", "/api/v1/local/session/{ns}/{sid}", 200),
    ("GET", "/api/v1/session/{ns}/{sid}/agents/o/logs?tail=5", 200),
    ("GET", "/api/v1/local/session/{ns}/{sid}/agents/o/logs", 200),
    ("GET", "/api/v1/session/{ns}/{sid}/agents/o/connection", 200),
    ("GET", "/api/v1/local/session/{ns}/{sid}/agents/o/connection", 200),
    ("GET", "/api/v1/registry", 200),
    ("GET", "/api/v1/registry/local/echo/0.1.0", 200),
    ("DELETE", "/api/v1/session/{ns}/{sid}", 200),
    ("DELETE", "/api/v1/local/session/{ns}/{sid}", 200),
    # not routes, but under /api: the key is checked before the 404
    ("GET", "/api/v1/no-such-route", 404),
    ("GET", "/api/v1/session/{ns}/missing-session", 404),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ROUTES]

BAD_HEADERS = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": ""}, id="empty-header"),
    pytest.param({"Authorization": "Bearer wrong"}, id="wrong-key"),
    pytest.param({"Authorization": "Bearer k1x"}, id="key-prefix-match"),
    pytest.param({"Authorization": "Bearer k"}, id="key-truncated"),
    pytest.param({"Authorization": "Bearer K1"}, id="key-wrong-case"),
    pytest.param({"Authorization": "Bearer"}, id="scheme-only"),
    pytest.param({"Authorization": "Bearer "}, id="scheme-and-space"),
    pytest.param({"Authorization": "Basic k1"}, id="basic-scheme"),
    pytest.param({"Authorization": "Token k1"}, id="token-scheme"),
    pytest.param({"Authorization": "k1"}, id="key-without-scheme"),
    pytest.param({"Authorization": "Bearerk1"}, id="no-space"),
    pytest.param({"X-Api-Key": "k1"}, id="other-header"),
]


def fill(path: str, ns: str, sid: str) -> str:
    return path.format(ns=ns, sid=sid)


@pytest.mark.parametrize(("method", "path", "ok_status"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("headers", BAD_HEADERS)
async def test_route_rejects_missing_or_wrong_key(
    locked: Coral, method: str, path: str, ok_status: int, headers: dict[str, str]
) -> None:
    ns, sid = await make_session(locked, {"Authorization": "Bearer k1"})
    async with locked.http.request(
        method,
        locked.base_url + fill(path, ns, sid),
        json=body() if method == "POST" else None,
        headers=headers,
    ) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        out = await resp.json()
        assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert isinstance(out["message"], str) and out["message"]
    assert "k1" not in str(out) and "second-key" not in str(out)
    # nothing happened: the session is still there and no other session was created
    status, listing = await locked.request("GET", "/api/v1/session", headers={"Authorization": "Bearer k1"})
    assert status == 200
    assert listing == [{"namespace": "auth", "sessions": [{"sessionId": sid, "closing": False}]}]


@pytest.mark.parametrize(("method", "path", "ok_status"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "header",
    ["Bearer k1", "Bearer second-key", "bearer k1", "BEARER second-key", "Bearer  k1 "],
    ids=["first-key", "second-key", "lowercase-scheme", "uppercase-scheme", "extra-spaces"],
)
async def test_route_accepts_right_key(
    locked: Coral, method: str, path: str, ok_status: int, header: str
) -> None:
    ns, sid = await make_session(locked, {"Authorization": "Bearer k1"})
    status, out = await locked.request(
        method,
        fill(path, ns, sid),
        json=body() if method == "POST" else None,
        headers={"Authorization": header},
    )
    assert status == ok_status, out


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/openapi.json", "application/json"),
        ("/health", "application/json"),
        ("/ui/docs", "text/html"),
        ("/ui/docs/", "text/html"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
async def test_public_paths_need_no_key(
    locked: Coral, path: str, content_type: str, headers: dict[str, str]
) -> None:
    async with locked.http.get(locked.base_url + path, headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == content_type
        if path == "/health":
            assert await resp.json() == {"status": "ok"}
        if path == "/api/v1/openapi.json":
            assert (await resp.json())["openapi"].startswith("3.")


async def status_without_key(coral: Coral, path: str) -> int:
    # not Coral.request: an empty headers dict there means "the default key"
    async with coral.http.get(coral.base_url + path) as resp:
        return resp.status


async def test_openapi_neighbours_are_not_public(locked: Coral) -> None:
    for path in ("/api/v1/openapi.json/", "/api/v1/openapi.jsonx", "/api/v1/openapi"):
        assert await status_without_key(locked, path) == 401, path


async def test_percent_encoded_api_path_still_needs_a_key(locked: Coral) -> None:
    assert await status_without_key(locked, "/%61pi/v1/session") == 401


@pytest.mark.parametrize(("method", "path", "ok_status"), ROUTES, ids=ROUTE_IDS)
async def test_without_keys_everything_is_open(coral: Coral, method: str, path: str, ok_status: int) -> None:
    ns, sid = await make_session(coral, {})
    for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "Basic x"}):
        status, out = await coral.request(
            method, fill(path, ns, sid), json=body() if method == "POST" else None, headers=headers
        )
        if method == "DELETE" and headers:
            assert status == 404, out  # already deleted by the first iteration
        else:
            assert status == ok_status, (headers, out)


async def test_empty_bearer_token_never_authenticates(tmp_path: Path) -> None:
    """An empty configured key must either be refused as configuration or never match."""
    try:
        servers = start_coral(tmp_path, auth_keys=("k1", ""))
        server = await servers.__anext__()
    except pydantic.ValidationError:
        return
    try:
        for header in ("Bearer", "Bearer ", "bearer  "):
            status, _ = await server.request("GET", "/api/v1/session", headers={"Authorization": header})
            assert status == 401, header
    finally:
        await servers.aclose()
