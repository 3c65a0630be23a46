"""Black-box checks of `POST /api/v1/local/session` input validation: every bad request is a 400
naming each wrong field, good requests in either spelling are accepted, secrets never leak."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.conftest import Coral, agent_spec, session_body

CREATE = "/api/v1/local/session"
SECRET = "hunter2-TOPSECRET-4f9a"


def opts_agent(name: str = "o", runtime: str = "external", **extra: Any) -> dict[str, Any]:
    """The fixture `opts` agent; with runtime `external` nothing is launched. NAME is required."""
    extra.setdefault("options", {"NAME": {"type": "string", "value": "abc"}})
    return agent_spec(name, "opts", runtime, version="1.0.0", **extra)


def good_body(**settings: Any) -> dict[str, Any]:
    return session_body([opts_agent()], **settings)


def with_options(**options: Any) -> dict[str, Any]:
    """A body whose single `opts` agent gets NAME=abc plus `options`."""
    return session_body([opts_agent(options={"NAME": "abc", **options})])


def patched(path: list[str | int], value: Any, delete: bool = False) -> dict[str, Any]:
    """good_body() with the item at `path` replaced (or deleted)."""
    body = good_body()
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


def assert_400(status: int, out: Any, expected: list[tuple[str, str | None]]) -> None:
    """400, `{message, errors: [{field, message}]}`, exactly the expected fields (any order)."""
    assert status == 400, out
    assert isinstance(out, dict), out
    assert isinstance(out.get("message"), str) and out["message"], out
    errors = out.get("errors")
    assert isinstance(errors, list), out
    for err in errors:
        assert set(err) == {"field", "message"}, err
        assert isinstance(err["field"], str) and isinstance(err["message"], str) and err["message"], err
    assert sorted(e["field"] for e in errors) == sorted(f for f, _ in expected), errors
    for field, fragment in expected:
        if fragment is not None:
            messages = [e["message"] for e in errors if e["field"] == field]
            assert any(fragment in m for m in messages), (field, fragment, messages)


A0 = "agentGraphRequest.agents[0]"
RS = "execution.runtimeSettings"

# (request body, [(expected field, fragment of its message or None)])
BAD_REQUESTS: list[Any] = [
    pytest.param(
        {"namespaceProvider": {"type": "use_existing", "name": "x"}},
        [("agentGraphRequest", "required")],
        id="missing-agentGraphRequest",
    ),
    pytest.param(
        {"agentGraphRequest": {"agents": []}}, [("agentGraphRequest.agents", "at least 1")], id="empty-agents"
    ),
    pytest.param(
        {"agentGraphRequest": {"agents": {}}}, [("agentGraphRequest.agents", "list")], id="agents-not-a-list"
    ),
    pytest.param({"agentGraphRequest": {}}, [("agentGraphRequest.agents", "required")], id="agents-missing"),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "id"], None, delete=True),
        [(f"{A0}.id", "required")],
        id="agent-without-id",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "name"], None, delete=True),
        [(f"{A0}.name", "required")],
        id="agent-without-name",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "provider"], None, delete=True),
        [(f"{A0}.provider", "required")],
        id="agent-without-provider",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "provider", "runtime"], "wasm"),
        [(f"{A0}.provider.runtime", None)],
        id="provider-runtime-unknown",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "provider", "runtime"], None, delete=True),
        [(f"{A0}.provider.runtime", "required")],
        id="provider-runtime-missing",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "provider", "runtime"], "docker"),
        [(f"{A0}.provider.runtime", "docker")],
        id="provider-runtime-docker-not-in-manifest",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "provider", "type"], "remote"),
        [(f"{A0}.provider.type", None)],
        id="provider-type-unknown",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "id", "source"], "marketplace"),
        [(f"{A0}.id", "marketplace")],
        id="id-source-marketplace",
    ),
    pytest.param(
        patched(
            ["agentGraphRequest", "agents", 0, "id"],
            {"name": "opts", "version": "1.0.0", "registrySourceId": {"type": "marketplace"}},
        ),
        [(f"{A0}.id", "marketplace")],
        id="id-registrySourceId-marketplace",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "id", "name"], "no-such-agent"),
        [(f"{A0}.id", "no-such-agent")],
        id="unknown-registry-agent",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "id", "version"], "9.9.9"),
        [(f"{A0}.id", "9.9.9")],
        id="unknown-version",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "id"], {"name": "", "version": "", "source": "local"}),
        [(f"{A0}.id.name", None), (f"{A0}.id.version", None)],
        id="id-empty-name-and-version",
    ),
    pytest.param(
        session_body([opts_agent("a"), opts_agent("a")], groups=[["a"]]),
        [("agentGraphRequest.agents[1].name", "duplicate")],
        id="duplicate-agent-names",
    ),
    pytest.param(
        session_body([opts_agent("a")], groups=[["a", "zz"]]),
        [("agentGraphRequest.groups[0][1]", "zz")],
        id="group-names-unknown-agent",
    ),
    pytest.param(
        session_body([opts_agent("a")], groups=[["a"], ["a", 7]]),
        [("agentGraphRequest.groups[1][1]", None)],
        id="group-member-not-a-string",
    ),
    pytest.param(
        patched(["agentGraphRequest", "groups"], "a"),
        [("agentGraphRequest.groups", None)],
        id="groups-not-a-list",
    ),
    pytest.param(
        session_body([opts_agent(customToolAccess=["submit"])]),
        [(f"{A0}.customToolAccess[0]", "submit")],
        id="customToolAccess-undefined-tool",
    ),
    pytest.param(
        session_body([opts_agent(plugins=[{"type": "close_session_tool"}, {"type": "teleport"}])]),
        [(f"{A0}.plugins[1].type", "teleport")],
        id="unknown-plugin",
    ),
    pytest.param(
        session_body([opts_agent("-leading-dash")]), [(f"{A0}.name", "pattern")], id="agent-name-leading-dash"
    ),
    pytest.param(session_body([opts_agent("has space")]), [(f"{A0}.name", "pattern")], id="agent-name-space"),
    pytest.param(session_body([opts_agent("")]), [(f"{A0}.name", None)], id="agent-name-empty"),
    pytest.param(session_body([opts_agent("a" * 129)]), [(f"{A0}.name", None)], id="agent-name-too-long"),
    pytest.param(session_body([opts_agent("../etc")]), [(f"{A0}.name", None)], id="agent-name-path"),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "name"], 123),
        [(f"{A0}.name", "string")],
        id="agent-name-not-a-string",
    ),
    pytest.param(
        patched(["agentGraphRequest", "agents", 0, "description"], "x" * 5000),
        [(f"{A0}.description", None)],
        id="description-too-long",
    ),
    pytest.param(
        patched(["namespaceProvider"], {"type": "weird"}),
        [("namespaceProvider.type", None)],
        id="namespaceProvider-unknown-type",
    ),
    pytest.param(
        patched(["namespaceProvider"], {"type": "create_if_not_exists"}),
        [("namespaceProvider", "namespaceRequest")],
        id="create_if_not_exists-without-namespaceRequest",
    ),
    pytest.param(
        patched(["namespaceProvider"], {"type": "use_existing"}),
        [("namespaceProvider", "name")],
        id="use_existing-without-name",
    ),
    pytest.param(
        patched(["namespaceProvider", "namespaceRequest", "name"], "bad name"),
        [("namespaceProvider.namespaceRequest.name", None)],
        id="namespace-name-pattern",
    ),
    pytest.param(good_body(ttl=0), [(f"{RS}.ttl", None)], id="ttl-zero"),
    pytest.param(good_body(ttl=-5), [(f"{RS}.ttl", None)], id="ttl-negative"),
    pytest.param(good_body(ttl="soon"), [(f"{RS}.ttl", None)], id="ttl-string"),
    pytest.param(good_body(ttl=1.5), [(f"{RS}.ttl", None)], id="ttl-fractional"),
    pytest.param(
        {**good_body(), "sessionRuntimeSettings": {"ttl": 0}},
        [("sessionRuntimeSettings.ttl", None)],
        id="sessionRuntimeSettings-ttl-zero",
    ),
    pytest.param(
        good_body(persistenceMode={"duration": 1000}),
        [(f"{RS}.persistenceMode", "mode")],
        id="persistenceMode-without-mode-or-type",
    ),
    pytest.param(
        good_body(persistenceMode={"mode": "forever"}),
        [(f"{RS}.persistenceMode.mode", None)],
        id="persistenceMode-unknown-mode",
    ),
    pytest.param(
        good_body(persistenceMode={"type": "Forever"}),
        [(f"{RS}.persistenceMode.type", None)],
        id="persistenceMode-unknown-type",
    ),
    pytest.param(
        good_body(persistenceMode={"mode": "hold_after_exit", "duration": -1}),
        [(f"{RS}.persistenceMode.duration", None)],
        id="persistenceMode-negative-duration",
    ),
    pytest.param(
        good_body(webhooks={"sessionEnd": {"url": "not-a-url"}}),
        [(f"{RS}.webhooks.sessionEnd.url", None)],
        id="webhook-url",
    ),
    pytest.param(patched(["execution", "mode"], "deferred"), [("execution.mode", None)], id="execution-mode"),
    pytest.param(
        patched(
            ["agentGraphRequest", "customTools"], {"t": {"transport": {"type": "http", "url": "ftp://x"}}}
        ),
        [("agentGraphRequest.customTools.t.transport.url", None)],
        id="customTool-url",
    ),
    pytest.param(
        patched(
            ["agentGraphRequest", "customTools"], {"t": {"transport": {"type": "grpc", "url": "http://x"}}}
        ),
        [("agentGraphRequest.customTools.t.transport.type", None)],
        id="customTool-transport-type",
    ),
    pytest.param(
        {**good_body(), "annotations": {"k": 1}}, [("annotations.k", None)], id="annotation-not-a-string"
    ),
    # options, checked against the `opts` manifest
    pytest.param(
        with_options(NOPE={"type": "string", "value": "x"}),
        [(f"{A0}.options.NOPE", "unknown option")],
        id="option-unknown",
    ),
    pytest.param(
        with_options(COUNT={"type": "i32", "value": "five"}),
        [(f"{A0}.options.COUNT.value", "integer")],
        id="option-wrong-value-type",
    ),
    pytest.param(
        with_options(COUNT={"type": "string", "value": 5}),
        [(f"{A0}.options.COUNT.type", "i32")],
        id="option-wrong-declared-type",
    ),
    pytest.param(
        with_options(COUNT={"type": "i32", "value": 1000}),
        [(f"{A0}.options.COUNT.value", "1000")],
        id="option-above-max",
    ),
    pytest.param(
        with_options(COUNT={"type": "i32", "value": 0}),
        [(f"{A0}.options.COUNT.value", "minimum")],
        id="option-below-min",
    ),
    pytest.param(
        with_options(COUNT={"type": "i32", "value": 2**40}),
        [(f"{A0}.options.COUNT.value", "out of range")],
        id="option-i32-overflow",
    ),
    pytest.param(
        with_options(COUNT={"type": "i32", "value": 5.5}),
        [(f"{A0}.options.COUNT.value", None)],
        id="option-int-given-float",
    ),
    pytest.param(
        with_options(SMALL={"type": "u8", "value": 256}),
        [(f"{A0}.options.SMALL.value", "u8")],
        id="option-u8-out-of-range",
    ),
    pytest.param(
        with_options(SMALL={"type": "u8", "value": -1}),
        [(f"{A0}.options.SMALL.value", "u8")],
        id="option-u8-negative",
    ),
    pytest.param(
        with_options(RATIO={"type": "f64", "value": "0.5"}),
        [(f"{A0}.options.RATIO.value", "number")],
        id="option-f64-given-string",
    ),
    pytest.param(
        with_options(FLAG={"type": "bool", "value": "yes"}),
        [(f"{A0}.options.FLAG.value", "boolean")],
        id="option-bool-given-string",
    ),
    pytest.param(
        session_body([opts_agent(options={"NAME": {"type": "string", "value": "ABC"}})]),
        [(f"{A0}.options.NAME.value", "pattern")],
        id="option-regex-mismatch",
    ),
    pytest.param(
        session_body([opts_agent(options={"NAME": "a"})]),
        [(f"{A0}.options.NAME.value", "at least 2")],
        id="option-too-short",
    ),
    pytest.param(
        session_body([opts_agent(options={"NAME": "abcdefghijk"})]),
        [(f"{A0}.options.NAME.value", "at most 10")],
        id="option-too-long",
    ),
    pytest.param(
        session_body([opts_agent(options={})]),
        [(f"{A0}.options.NAME.value", "required")],
        id="option-required-missing",
    ),
    pytest.param(
        session_body([opts_agent(options={"NAME": {"type": "string", "value": None}})]),
        [(f"{A0}.options.NAME.value", "required")],
        id="option-required-null",
    ),
    pytest.param(
        with_options(MODE="medium"), [(f"{A0}.options.MODE.value", "allowed")], id="option-not-a-variant"
    ),
    pytest.param(
        with_options(DATA={"type": "blob", "value": "!!not base64!!"}),
        [(f"{A0}.options.DATA.value", "base64")],
        id="option-bad-blob",
    ),
    pytest.param(
        with_options(DATA={"type": "blob", "value": 12}),
        [(f"{A0}.options.DATA.value", "base64")],
        id="option-blob-not-a-string",
    ),
    pytest.param(
        with_options(TAGS={"type": "list[string]", "value": ["a", 2, "c"]}),
        [(f"{A0}.options.TAGS.value[1]", "string")],
        id="option-list-wrong-item",
    ),
    pytest.param(
        with_options(TAGS={"type": "list[string]", "value": "a,b"}),
        [(f"{A0}.options.TAGS.value", "array")],
        id="option-list-not-an-array",
    ),
    pytest.param(
        session_body([opts_agent(options=["NAME"])]), [(f"{A0}.options", None)], id="options-not-an-object"
    ),
    # An environment variable cannot hold a NUL: the agent could never start.
    pytest.param(with_options(TOKEN="a\0b"), [(f"{A0}.options.TOKEN.value", "NUL")], id="option-nul"),
    pytest.param(
        with_options(TAGS={"type": "list[string]", "value": ["ok", "a\0"]}),
        [(f"{A0}.options.TAGS.value[1]", "NUL")],
        id="option-list-item-nul",
    ),
    pytest.param(
        session_body([opts_agent(systemPrompt="be\0brief")]), [(f"{A0}.systemPrompt", "NUL")], id="prompt-nul"
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_REQUESTS)
async def test_bad_request_is_400_naming_each_field(
    coral: Coral, body: dict[str, Any], expected: list[tuple[str, str | None]]
) -> None:
    status, out = await coral.request("POST", CREATE, body)
    assert_400(status, out, expected)
    # nothing was created
    status, listing = await coral.request("GET", "/api/v1/session")
    assert (status, listing) == (200, [])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[1, 2]", id="list"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b'"text"', id="string"),
        pytest.param(
            b"not json",
            id="not-json",
        ),
        pytest.param(
            b"",
            id="empty",
        ),
        pytest.param(
            b'{"agentGraphRequest": ',
            id="truncated-json",
        ),
    ],
)
async def test_body_that_is_not_a_json_object(coral: Coral, raw: bytes) -> None:
    status, out = await coral.request("POST", CREATE, data=raw, headers={"Content-Type": "application/json"})
    assert_400(status, out, [("(body)", None)])


@pytest.mark.parametrize("raw", [b"not json", b"", b'{"agentGraphRequest": '])
async def test_body_not_json_is_400_json_message(coral: Coral, raw: bytes) -> None:
    status, out = await coral.request("POST", CREATE, data=raw, headers={"Content-Type": "application/json"})
    assert status == 400
    assert isinstance(out, dict) and isinstance(out["message"], str)
    assert "JSON" in out["message"]


async def test_several_registry_problems_are_all_listed(coral: Coral) -> None:
    body = session_body(
        [
            opts_agent("a", options={"COUNT": 1000}),
            opts_agent("a", plugins=[{"type": "teleport"}]),
            opts_agent("b", customToolAccess=["nope"]),
            {**opts_agent("c"), "id": {"name": "ghost", "version": "1.0.0", "source": "local"}},
        ],
        groups=[["a", "q"], ["b", "c", "r"]],
    )
    status, out = await coral.request("POST", CREATE, body)
    assert_400(
        status,
        out,
        [
            ("agentGraphRequest.agents[0].options.NAME.value", "required"),
            ("agentGraphRequest.agents[0].options.COUNT.value", "maximum"),
            ("agentGraphRequest.agents[1].name", "duplicate"),
            ("agentGraphRequest.agents[1].plugins[0].type", "teleport"),
            ("agentGraphRequest.agents[2].customToolAccess[0]", "nope"),
            ("agentGraphRequest.agents[3].id", "ghost"),
            ("agentGraphRequest.groups[0][1]", "q"),
            ("agentGraphRequest.groups[1][2]", "r"),
        ],
    )


async def test_several_shape_problems_are_all_listed(coral: Coral) -> None:
    body = session_body(
        [opts_agent("bad name", provider={"type": "local", "runtime": "wasm"})],
        ttl=0,
    )
    body["namespaceProvider"]["namespaceRequest"]["name"] = "bad ns"
    body["agentGraphRequest"]["agents"].append({"name": "x"})
    status, out = await coral.request("POST", CREATE, body)
    assert_400(
        status,
        out,
        [
            ("agentGraphRequest.agents[0].name", None),
            ("agentGraphRequest.agents[0].provider.runtime", None),
            ("agentGraphRequest.agents[1].id", "required"),
            ("agentGraphRequest.agents[1].provider", "required"),
            ("namespaceProvider.namespaceRequest.name", None),
            ("execution.runtimeSettings.ttl", None),
        ],
    )


async def test_shape_and_registry_problems_are_listed_together(coral: Coral) -> None:
    body = session_body([opts_agent(options={"NAME": "abc", "COUNT": 1000})], ttl=0)
    status, out = await coral.request("POST", CREATE, body)
    assert_400(
        status,
        out,
        [
            ("execution.runtimeSettings.ttl", None),
            ("agentGraphRequest.agents[0].options.COUNT.value", "maximum"),
        ],
    )


@pytest.mark.parametrize(
    "ttl",
    [
        pytest.param("600000", id="numeric-string"),
        pytest.param(True, id="boolean"),
    ],
)
async def test_ttl_of_wrong_json_type_is_rejected(coral: Coral, ttl: Any) -> None:
    status, out = await coral.request("POST", CREATE, good_body(ttl=ttl))
    assert_400(status, out, [(f"{RS}.ttl", None)])


# -- accepted requests -------------------------------------------------------------------------


async def create_ok(coral: Coral, body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    status, out = await coral.request("POST", CREATE, body)
    assert status == 200, out
    assert set(out) == {"namespace", "sessionId"}
    state = await coral.state(out["namespace"], out["sessionId"])
    return out["namespace"], out["sessionId"], state


async def delete(coral: Coral, ns: str, sid: str) -> None:
    status, _ = await coral.request("DELETE", f"{CREATE}/{ns}/{sid}")
    assert status == 200


async def test_minimal_good_request(coral: Coral) -> None:
    ns, sid, state = await create_ok(coral, good_body())
    assert ns == "test"
    assert state["id"] == sid and state["namespace"] == "test" and state["closing"] is False
    [agent] = state["agents"]
    assert agent["name"] == "o"
    assert agent["registryAgentIdentifier"] == {"name": "opts", "version": "1.0.0", "source": "local"}
    assert agent["runtime"] == "external"
    await delete(coral, ns, sid)


async def test_unknown_fields_are_ignored(coral: Coral) -> None:
    body = good_body(ttl=60_000, futureSetting={"x": 1})
    body["zzzTopLevel"] = [1, 2, 3]
    body["agentGraphRequest"]["somethingNew"] = True
    agent = body["agentGraphRequest"]["agents"][0]
    agent["color"] = "blue"
    agent["id"]["channel"] = "beta"
    agent["provider"]["region"] = "eu"
    agent["options"]["NAME"]["unit"] = "none"
    body["namespaceProvider"]["namespaceRequest"]["labels"] = {"a": "b"}
    body["namespaceProvider"]["extra"] = 1
    body["execution"]["priority"] = "high"
    ns, sid, state = await create_ok(coral, body)
    assert [a["name"] for a in state["agents"]] == ["o"]
    await delete(coral, ns, sid)


@pytest.mark.parametrize(
    "identifier",
    [
        pytest.param({"name": "opts", "version": "1.0.0", "source": "local"}, id="source"),
        pytest.param(
            {"name": "opts", "version": "1.0.0", "registrySourceId": {"type": "local"}}, id="registrySourceId"
        ),
        pytest.param({"name": "opts", "version": "1.0.0"}, id="no-source-means-local"),
        pytest.param({"name": "opts", "version": "latest", "source": "local"}, id="latest"),
    ],
)
async def test_both_registry_id_spellings_accepted(coral: Coral, identifier: dict[str, Any]) -> None:
    body = good_body()
    body["agentGraphRequest"]["agents"][0]["id"] = identifier
    ns, sid, state = await create_ok(coral, body)
    assert state["agents"][0]["registryAgentIdentifier"] == {
        "name": "opts",
        "version": "1.0.0",
        "source": "local",
    }
    await delete(coral, ns, sid)


@pytest.mark.parametrize(
    "settings_key", ["execution.runtimeSettings", "sessionRuntimeSettings"], ids=["execution", "top-level"]
)
@pytest.mark.parametrize(
    "mode",
    [
        pytest.param({"mode": "hold_after_exit", "duration": 1000}, id="mode-duration"),
        pytest.param({"type": "HoldAfterExit", "holdTime": 1000}, id="type-holdTime"),
        pytest.param({"mode": "none"}, id="mode-none"),
        pytest.param({"type": "None"}, id="type-None"),
    ],
)
async def test_both_persistence_mode_spellings_accepted(
    coral: Coral, mode: dict[str, Any], settings_key: str
) -> None:
    body = good_body()
    settings = {"ttl": 60_000, "persistenceMode": mode}
    if settings_key == "sessionRuntimeSettings":
        body["sessionRuntimeSettings"] = settings
    else:
        body["execution"]["runtimeSettings"] = settings
    ns, sid, _ = await create_ok(coral, body)
    await delete(coral, ns, sid)


async def test_custom_tool_access_to_a_defined_tool_and_known_plugin(coral: Coral) -> None:
    body = session_body([opts_agent(customToolAccess=["submit"], plugins=[{"type": "close_session_tool"}])])
    body["agentGraphRequest"]["customTools"] = {
        "submit": {
            "transport": {"type": "http", "url": "http://127.0.0.1:9/hook"},
            "schema": {"name": "submit", "description": "d", "inputSchema": {"type": "object"}},
        }
    }
    ns, sid, _ = await create_ok(coral, body)
    await delete(coral, ns, sid)


async def test_option_values_of_every_type_accepted(coral: Coral) -> None:
    options = {
        "NAME": {"type": "string", "value": "abc"},
        "COUNT": {"type": "i32", "value": 100},
        "SMALL": {"type": "u8", "value": 255},
        "RATIO": {"type": "f64", "value": 2},
        "FLAG": {"type": "bool", "value": True},
        "TAGS": {"type": "list[string]", "value": ["x", "y"]},
        "DATA": {"type": "blob", "value": "aGVsbG8="},
        "TOKEN": {"type": "secret", "value": SECRET},
        "MODE": "slow",
    }
    ns, sid, _ = await create_ok(coral, session_body([opts_agent(options=options)]))
    await delete(coral, ns, sid)


# -- secrets ----------------------------------------------------------------------------------


def _token(value: Any, type_: str = "secret") -> dict[str, Any]:
    return {"type": type_, "value": value}


@pytest.mark.parametrize(
    ("options", "extra_settings"),
    [
        pytest.param({"NAME": "ABC", "TOKEN": _token(SECRET)}, {}, id="other-option-bad"),
        pytest.param({"NAME": "abc", "TOKEN": _token(SECRET), "COUNT": 0}, {}, id="range-error"),
        pytest.param({"NAME": "abc", "TOKEN": _token(SECRET, "i32")}, {}, id="secret-declared-wrong-type"),
        pytest.param({"NAME": "abc", "TOKEN": _token([SECRET])}, {}, id="secret-in-a-list"),
        pytest.param({"NAME": "abc", "TOKEN": _token({"k": SECRET})}, {}, id="secret-in-an-object"),
        pytest.param({"TOKEN": SECRET}, {}, id="required-missing"),
        pytest.param({"NAME": "abc", "TOKEN": _token(SECRET)}, {"ttl": 0}, id="shape-error"),
    ],
)
async def test_secret_never_in_error_body(
    coral: Coral, options: dict[str, Any], extra_settings: dict[str, Any]
) -> None:
    body = session_body([opts_agent(options=copy.deepcopy(options))], **extra_settings)
    async with coral.http.post(coral.base_url + CREATE, json=body, headers=coral.headers) as resp:
        text = await resp.text()
        assert resp.status == 400, text
    assert SECRET not in text
    assert "hunter2" not in text
    assert "errors" in json.loads(text)


async def test_secret_never_in_session_state(coral: Coral) -> None:
    body = session_body(
        [
            opts_agent("o", options={"NAME": "abc", "TOKEN": {"type": "secret", "value": SECRET}}),
            opts_agent("p", options={"NAME": "abc", "TOKEN": SECRET}),
        ]
    )
    ns, sid, _ = await create_ok(coral, body)
    for path in (
        f"{CREATE}/{ns}/{sid}",
        f"/api/v1/session/{ns}/{sid}",
        f"{CREATE}/{ns}",
        "/api/v1/session",
        f"{CREATE}/{ns}/{sid}/agents/o/connection",
        f"{CREATE}/{ns}/{sid}/agents/o/logs",
    ):
        async with coral.http.get(coral.base_url + path, headers=coral.headers) as resp:
            text = await resp.text()
            assert resp.status == 200, (path, text)
        assert SECRET not in text, path
    await delete(coral, ns, sid)
