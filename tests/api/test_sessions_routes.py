"""Session, namespace, registry and docs routes over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Coral, agent_spec, session_body

PREFIXES = ["/api/v1/session", "/api/v1/local/session"]


def ext(name: str = "o") -> dict[str, Any]:
    return agent_spec(name, "opts", "external", version="1.0.0", options={"NAME": "abc"})


def body(
    ns: str = "test", delete_on_exit: bool = True, agents: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    out = session_body(agents or [ext()], namespace=ns)
    out["namespaceProvider"]["namespaceRequest"]["deleteOnLastSessionExit"] = delete_on_exit
    return out


async def create(coral: Coral, prefix: str, request: dict[str, Any]) -> tuple[str, str]:
    status, out = await coral.request("POST", prefix, request)
    assert status == 200, out
    assert set(out) == {"namespace", "sessionId"}
    assert isinstance(out["sessionId"], str) and out["sessionId"]
    return out["namespace"], out["sessionId"]


def assert_error(status: int, out: Any, expected_status: int) -> None:
    assert status == expected_status, out
    assert isinstance(out, dict) and isinstance(out["message"], str) and out["message"], out


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_session_lifecycle(coral: Coral, prefix: str) -> None:
    ns, sid = await create(coral, prefix, body("life"))
    assert ns == "life"

    status, listing = await coral.request("GET", prefix)
    assert (status, listing) == (
        200,
        [{"namespace": "life", "sessions": [{"sessionId": sid, "closing": False}]}],
    )

    status, in_ns = await coral.request("GET", f"{prefix}/life")
    assert (status, in_ns) == (200, [{"sessionId": sid, "closing": False}])

    status, state = await coral.request("GET", f"{prefix}/life/{sid}")
    assert status == 200
    assert state["id"] == sid and state["namespace"] == "life" and state["closing"] is False
    assert isinstance(state["timestamp"], int) and state["timestamp"] > 0
    assert state["threads"] == []
    [agent] = state["agents"]
    assert agent["name"] == "o"
    assert agent["registryAgentIdentifier"] == {"name": "opts", "version": "1.0.0", "source": "local"}
    assert agent["isConnected"] is False and agent["isWaiting"] is False
    assert agent["links"] == [] and agent["runtime"] == "external"
    assert agent["status"] in ("pending", "running")

    status, _ = await coral.request("DELETE", f"{prefix}/life/{sid}")
    assert status == 200
    status, out = await coral.request("DELETE", f"{prefix}/life/{sid}")
    assert_error(status, out, 404)
    status, out = await coral.request("GET", f"{prefix}/life/{sid}")
    assert_error(status, out, 404)
    status, listing = await coral.request("GET", prefix)
    assert (status, listing) == (200, [])


async def test_both_prefixes_see_the_same_sessions(coral: Coral) -> None:
    ns1, sid1 = await create(coral, "/api/v1/session", body("shared"))
    ns2, sid2 = await create(coral, "/api/v1/local/session", body("shared"))
    assert ns1 == ns2 == "shared" and sid1 != sid2
    for prefix in PREFIXES:
        status, in_ns = await coral.request("GET", f"{prefix}/shared")
        assert status == 200
        assert sorted(s["sessionId"] for s in in_ns) == sorted([sid1, sid2])
        for sid in (sid1, sid2):
            status, state = await coral.request("GET", f"{prefix}/shared/{sid}")
            assert status == 200 and state["id"] == sid
    status, _ = await coral.request("DELETE", f"/api/v1/local/session/shared/{sid1}")
    assert status == 200
    status, _ = await coral.request("GET", f"/api/v1/session/shared/{sid1}")
    assert status == 404


async def test_list_all_groups_by_namespace(coral: Coral) -> None:
    _, a = await create(coral, PREFIXES[0], body("alpha"))
    _, b = await create(coral, PREFIXES[0], body("beta"))
    _, c = await create(coral, PREFIXES[0], body("beta"))
    status, listing = await coral.request("GET", "/api/v1/session")
    assert status == 200
    by_ns = {entry["namespace"]: entry["sessions"] for entry in listing}
    assert set(by_ns) == {"alpha", "beta"}
    assert by_ns["alpha"] == [{"sessionId": a, "closing": False}]
    assert sorted(s["sessionId"] for s in by_ns["beta"]) == sorted([b, c])
    assert all(s["closing"] is False for s in by_ns["beta"])


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_unknown_namespace_session_and_agent_are_404(coral: Coral, prefix: str) -> None:
    ns, sid = await create(coral, prefix, body("known"))
    for method, path in [
        ("GET", f"{prefix}/nowhere"),
        ("GET", f"{prefix}/nowhere/{sid}"),
        ("DELETE", f"{prefix}/nowhere/{sid}"),
        ("GET", f"{prefix}/known/00000000-0000-0000-0000-000000000000"),
        ("DELETE", f"{prefix}/known/00000000-0000-0000-0000-000000000000"),
        ("GET", f"{prefix}/known/{sid}/agents/ghost/logs"),
        ("GET", f"{prefix}/known/{sid}/agents/ghost/connection"),
        ("GET", f"{prefix}/known/missing/agents/o/logs"),
        ("GET", f"{prefix}/known/missing/agents/o/connection"),
    ]:
        status, out = await coral.request(method, path)
        assert_error(status, out, 404)
    # the real session was not touched
    status, state = await coral.request("GET", f"{prefix}/{ns}/{sid}")
    assert status == 200 and state["closing"] is False


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_connection_of_external_agent(coral: Coral, prefix: str) -> None:
    ns, sid = await create(coral, prefix, body("conn"))
    status, out = await coral.request("GET", f"{prefix}/{ns}/{sid}/agents/o/connection")
    assert status == 200, out
    assert out["agent"] == "o"
    assert out["connectionUrl"].startswith(coral.base_url + "/mcp/v1/")
    assert out["connectionUrl"].endswith("/mcp")
    assert out["sseUrl"] == out["connectionUrl"][: -len("mcp")] + "sse/"


async def test_connection_of_launched_agent_is_409(coral: Coral) -> None:
    ns, sid = await create(coral, PREFIXES[1], body("launch", agents=[agent_spec("e"), ext("o")]))
    status, out = await coral.request("GET", f"/api/v1/local/session/{ns}/{sid}/agents/e/connection")
    assert_error(status, out, 409)
    assert "'e'" in out["message"]
    status, _ = await coral.request("DELETE", f"/api/v1/local/session/{ns}/{sid}")
    assert status == 200


@pytest.mark.parametrize(
    ("tail", "status"),
    [("0", 200), ("10000", 200), ("-1", 400), ("10001", 400), ("abc", 400), ("1.5", 400)],
)
async def test_logs_tail_parameter(coral: Coral, tail: str, status: int) -> None:
    ns, sid = await create(coral, PREFIXES[0], body("logs"))
    got, out = await coral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/o/logs?tail={tail}")
    assert got == status, out
    if status == 200:
        assert out == {"agent": "o", "dropped": 0, "lines": []}
    else:
        assert out["errors"][0]["field"] == "tail"


async def test_namespace_deleted_after_last_session_when_asked(coral: Coral) -> None:
    _, s1 = await create(coral, PREFIXES[0], body("temp", delete_on_exit=True))
    _, s2 = await create(coral, PREFIXES[0], body("temp", delete_on_exit=True))
    assert (await coral.request("DELETE", f"/api/v1/session/temp/{s1}"))[0] == 200
    status, in_ns = await coral.request("GET", "/api/v1/session/temp")
    assert (status, in_ns) == (200, [{"sessionId": s2, "closing": False}])
    assert (await coral.request("DELETE", f"/api/v1/session/temp/{s2}"))[0] == 200
    status, out = await coral.request("GET", "/api/v1/session/temp")
    assert_error(status, out, 404)
    status, listing = await coral.request("GET", "/api/v1/session")
    assert (status, listing) == (200, [])


async def test_namespace_kept_after_last_session_when_asked(coral: Coral) -> None:
    _, s1 = await create(coral, PREFIXES[0], body("keep", delete_on_exit=False))
    assert (await coral.request("DELETE", f"/api/v1/session/keep/{s1}"))[0] == 200
    status, in_ns = await coral.request("GET", "/api/v1/session/keep")
    assert (status, in_ns) == (200, [])
    status, listing = await coral.request("GET", "/api/v1/session")
    assert (status, listing) == (200, [{"namespace": "keep", "sessions": []}])
    # and it can be used again with use_existing
    request = body()
    request["namespaceProvider"] = {"type": "use_existing", "name": "keep"}
    ns, s2 = await create(coral, PREFIXES[1], request)
    assert ns == "keep"
    status, in_ns = await coral.request("GET", "/api/v1/session/keep")
    assert (status, in_ns) == (200, [{"sessionId": s2, "closing": False}])


async def test_use_existing_namespace(coral: Coral) -> None:
    _, s1 = await create(coral, PREFIXES[0], body("exists"))
    request = body()
    request["namespaceProvider"] = {"type": "use_existing", "name": "exists"}
    ns, s2 = await create(coral, PREFIXES[0], request)
    assert ns == "exists"
    status, in_ns = await coral.request("GET", "/api/v1/session/exists")
    assert status == 200 and sorted(s["sessionId"] for s in in_ns) == sorted([s1, s2])


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_use_existing_of_missing_namespace_is_404(coral: Coral, prefix: str) -> None:
    request = body()
    request["namespaceProvider"] = {"type": "use_existing", "name": "absent"}
    status, out = await coral.request("POST", prefix, request)
    assert_error(status, out, 404)
    assert "absent" in out["message"]
    status, listing = await coral.request("GET", "/api/v1/session")
    assert (status, listing) == (200, [])


async def test_no_namespace_provider_uses_default(coral: Coral) -> None:
    request = body()
    del request["namespaceProvider"]
    ns, sid = await create(coral, PREFIXES[1], request)
    assert ns == "default"
    status, state = await coral.request("GET", f"/api/v1/session/default/{sid}")
    assert status == 200 and state["namespace"] == "default"


async def test_groups_become_links(coral: Coral) -> None:
    request = session_body([ext("a"), ext("b"), ext("c")], groups=[["a", "b"], ["b", "c"]], namespace="g")
    ns, sid = await create(coral, PREFIXES[1], request)
    state = await coral.state(ns, sid)
    links = {a["name"]: a["links"] for a in state["agents"]}
    assert links == {"a": ["b"], "b": ["a", "c"], "c": ["b"]}


# -- registry ---------------------------------------------------------------------------------


async def test_registry_listing(coral: Coral) -> None:
    status, out = await coral.request("GET", "/api/v1/registry")
    assert status == 200
    assert isinstance(out, list) and len(out) == 1
    [source] = out
    assert set(source) == {"identifier", "timestamp", "agents"}
    assert source["identifier"] == {"type": "local"}
    assert isinstance(source["timestamp"], int) and source["timestamp"] > 0
    assert source["agents"] == [
        {"name": "broken-path", "versions": ["0.1.0"]},
        {"name": "docker-badcmd", "versions": ["0.1.0"]},
        {"name": "docker-missing", "versions": ["0.1.0"]},
        {"name": "docker-probe", "versions": ["0.1.0"]},
        {"name": "echo", "versions": ["0.1.0"]},
        {"name": "legacy-devmode", "versions": ["0.0.1"]},
        {"name": "legacy-v1", "versions": ["0.1.0"]},
        {"name": "legacy-v1-http", "versions": ["0.1.0"]},
        {"name": "legacy-v1-sse-url", "versions": ["0.1.0"]},
        {"name": "llm", "versions": ["0.1.0"]},
        {"name": "opts", "versions": ["1.0.0"]},
        {"name": "sleeper", "versions": ["0.1.0"]},
    ]


async def test_registry_detail_of_echo(coral: Coral) -> None:
    status, out = await coral.request("GET", "/api/v1/registry/local/echo/0.1.0")
    assert status == 200
    assert set(out) == {"registryAgent", "restrictions"}
    assert out["restrictions"] == [{"type": "local"}]
    agent = out["registryAgent"]
    assert agent["info"]["identifier"] == {
        "name": "echo",
        "version": "0.1.0",
        "registrySourceId": {"type": "local"},
    }
    assert isinstance(agent["info"]["description"], str) and agent["info"]["description"]
    assert agent["runtimes"]["executable"]["transport"] == "streamable_http"
    assert set(agent["options"]) == {"PREFIX", "MAX_REPLIES"}
    assert agent["options"]["PREFIX"]["type"] == "string"
    assert agent["options"]["PREFIX"]["default"] == "echo: "
    assert agent["options"]["PREFIX"]["required"] is False
    assert agent["options"]["MAX_REPLIES"]["type"] == "i32"
    assert agent["options"]["MAX_REPLIES"]["validation"] == {"min": 0}


async def test_registry_detail_of_opts_marks_secret_and_rules(coral: Coral) -> None:
    status, out = await coral.request("GET", "/api/v1/registry/local/opts/1.0.0")
    assert status == 200
    options = out["registryAgent"]["options"]
    assert list(options) == [
        "NAME", "COUNT", "SMALL", "RATIO", "FLAG", "TAGS", "DATA", "TOKEN", "MODE", "CONFIG_FILE"
    ]  # fmt: skip
    assert options["NAME"]["required"] is True
    assert options["NAME"]["validation"] == {"min_length": 2, "max_length": 10, "regex": "[a-z]+"}
    assert options["COUNT"]["validation"] == {"min": 1, "max": 100}
    assert options["TOKEN"]["secret"] is True
    assert "default" not in options["TOKEN"]
    assert options["TAGS"]["type"] == "list[string]"
    assert options["CONFIG_FILE"]["transport"] == "fs"


async def test_registry_detail_latest(coral: Coral) -> None:
    status, out = await coral.request("GET", "/api/v1/registry/local/opts/latest")
    assert status == 200
    assert out["registryAgent"]["info"]["identifier"]["version"] == "1.0.0"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/registry/local/nope/0.1.0",
        "/api/v1/registry/local/echo/9.9.9",
        "/api/v1/registry/marketplace/echo/0.1.0",
        "/api/v1/registry/linked/echo/0.1.0",
    ],
)
async def test_registry_detail_unknown_is_404(coral: Coral, path: str) -> None:
    status, out = await coral.request("GET", path)
    assert_error(status, out, 404)


# -- docs -------------------------------------------------------------------------------------


async def test_openapi_lists_every_route(coral: Coral) -> None:
    status, doc = await coral.request("GET", "/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for prefix in PREFIXES:
        sid = prefix + "/{namespace}/{sessionId}"
        assert set(paths[prefix]) == {"post", "get"}
        assert set(paths[prefix + "/{namespace}"]) == {"get"}
        assert set(paths[sid]) == {"get", "post", "delete"}
        assert set(paths[sid + "/extended"]) == {"get"}
        assert set(paths[sid + "/agents/{agent}/logs"]) == {"get"}
        assert set(paths[sid + "/agents/{agent}/connection"]) == {"get"}
    assert set(paths["/api/v1/registry"]) == {"get"}
    namespaces = "/api/v1/local/namespace"
    assert set(paths[namespaces]) == {"get", "post"}
    assert set(paths[namespaces + "/extended"]) == {"get"}
    assert set(paths[namespaces + "/{namespace}"]) == {"get", "delete"}
    assert set(paths[namespaces + "/{namespace}/extended"]) == {"get"}
    assert set(paths["/api/v1/registry/{source}/{name}/{version}"]) == {"get"}
    post = paths["/api/v1/local/session"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateSessionRequest"
    }
    assert "CreateSessionRequest" in doc["components"]["schemas"]
    assert "SessionState" in doc["components"]["schemas"]


async def test_openapi_primary_create_route_is_not_called_alias(coral: Coral) -> None:
    _, doc = await coral.request("GET", "/api/v1/openapi.json")
    assert doc["paths"]["/api/v1/local/session"]["post"]["summary"] == "Create a session"


@pytest.mark.parametrize("path", ["/ui/docs", "/ui/docs/"])
async def test_docs_page_is_html(coral: Coral, path: str) -> None:
    async with coral.http.get(coral.base_url + path) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        text = await resp.text()
    assert "<html" in text.lower()
    assert "openapi.json" in text


async def test_health(coral: Coral) -> None:
    assert await coral.request("GET", "/health") == (200, {"status": "ok"})
