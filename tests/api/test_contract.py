"""The served OpenAPI document and the server agree where a schema-driven fuzzer found they did not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Coral, agent_spec, session_body, start_coral

RETRY = "/api/v1/webhooks/deliveries/nope/retry"


async def raw(coral: Coral, method: str, path: str, data: bytes, content_type: str | None) -> tuple[int, Any]:
    headers = dict(coral.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    skip = () if content_type is not None else ("Content-Type",)  # else aiohttp says octet-stream
    url = coral.base_url + path
    async with coral.http.request(method, url, data=data, headers=headers, skip_auto_headers=skip) as resp:
        if content_type is None:
            assert "Content-Type" not in resp.request_info.headers
        return resp.status, await resp.json(content_type=None)


async def test_405_says_which_methods_are_allowed(coral: Coral) -> None:
    async with coral.http.put(coral.base_url + "/api/v1/session") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
        assert resp.content_type == "application/json"
        assert (await resp.json())["message"] == "Method Not Allowed"


@pytest.mark.parametrize("attempts", [86, 86.0, 1.0])
async def test_retry_takes_any_json_integer(coral: Coral, attempts: float) -> None:
    # The body is valid, so the answer is about the delivery: there is none.
    status, out = await coral.request("POST", RETRY, {"attempts": attempts})
    assert status == 404 and "nope" in out["message"]


@pytest.mark.parametrize("attempts", [86.5, "86", True, 0.0, 101.0])
async def test_retry_rejects_what_is_not_an_integer_in_range(coral: Coral, attempts: Any) -> None:
    status, out = await coral.request("POST", RETRY, {"attempts": attempts})
    assert status == 400 and [e["field"] for e in out["errors"]] == ["attempts"]


async def test_ttl_takes_an_integral_float(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("a", runtime="external")], ttl=60_000.0))
    assert (await coral.state(ns, sid))["closing"] is False


async def test_session_filter_documents_that_it_needs_the_namespace(coral: Coral) -> None:
    _, doc = await coral.request("GET", "/api/v1/openapi.json")
    listing = doc["paths"]["/api/v1/webhooks/deliveries"]["get"]
    [param] = [p for p in listing["parameters"] if p["name"] == "sessionId"]
    assert "namespace" in param["description"] and "400" in param["description"]
    assert "sessionId without namespace" in listing["responses"]["400"]["description"]
    status, out = await coral.request("GET", "/api/v1/webhooks/deliveries?sessionId=abc")
    assert status == 400 and [e["field"] for e in out["errors"]] == ["namespace"]


def _declares_bearer(doc: dict[str, Any]) -> bool:
    operations = [op for item in doc["paths"].values() for op in item.values()]
    return (
        "security" in doc
        or "securitySchemes" in doc["components"]
        or any("401" in op["responses"] or "security" in op for op in operations)
    )


async def test_a_server_without_keys_declares_no_security(coral: Coral) -> None:
    _, doc = await coral.request("GET", "/api/v1/openapi.json")
    assert not _declares_bearer(doc)
    status, _ = await coral.request("GET", "/api/v1/session", headers={})
    assert status == 200


async def test_a_server_with_keys_declares_bearer_security(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=("k",)):
        status, doc = await coral.request("GET", "/api/v1/openapi.json", headers={})
        assert status == 200 and _declares_bearer(doc)
        assert doc["security"] == [{"bearer": []}]
        assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert "401" in doc["paths"]["/api/v1/session"]["get"]["responses"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json", "application/xml"]
)
async def test_a_body_that_says_it_is_not_json_gets_415(coral: Coral, content_type: str) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("h", runtime="external")]))
    for path, body in [
        ("/api/v1/local/session", b'{"agentGraphRequest": {"agents": []}}'),
        (f"/api/v1/puppet/{ns}/{sid}/h/thread", b'{"threadName": "t"}'),
        (RETRY, b'{"attempts": 2}'),
    ]:
        status, out = await raw(coral, "POST", path, body, content_type)
        assert status == 415, (path, out)
        assert content_type in out["message"] and "application/json" in out["message"]
        assert out["errors"] == [{"field": "(body)", "message": f"Content-Type {content_type} is not JSON"}]
    assert (await coral.state(ns, sid))["threads"] == []  # nothing was acted on


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.x+json",
        "application/octet-stream",
    ],
)
async def test_a_json_body_or_one_of_no_stated_kind_is_read(coral: Coral, content_type: str | None) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("h", runtime="external")]))
    status, out = await raw(
        coral, "POST", f"/api/v1/puppet/{ns}/{sid}/h/thread", b'{"threadName": "t"}', content_type
    )
    assert status == 200 and out["thread"]["name"] == "t"


async def test_an_empty_optional_body_needs_no_content_type(coral: Coral) -> None:
    status, out = await raw(coral, "POST", RETRY, b"", "text/plain")
    assert status == 404 and "nope" in out["message"]
