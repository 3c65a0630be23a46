"""What a running server sends validates against `schemas/` and the OpenAPI document it serves.

One scenario drives every documented route of a real server (sessions, registry, puppet, webhook
deliveries, live events over SSE and WebSocket, one-time job runs) through states that exercise
every optional field, and checks each body twice: against the committed `schemas/<Shape>.json` and
against the response schema the served document declares for that path, method and status. Schemas
forbid undocumented fields, so a field sent but not documented fails here. The last check is that
every documented operation was seen answering its success status.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from coral_server.api.models import RESPONSE_MODELS, RUN_EVENTS
from coral_server.api.schemas import SCHEMA_DIR
from tests.conftest import WAIT_S, Coral, agent_spec, session_body, start_coral, wait_until
from tests.jobs.conftest import init_git_repo

Body = Any
HOLD = {"mode": "hold_after_exit", "duration": 60_000}  # closed sessions stay readable


class Wire:
    """A client that checks every JSON body it receives and records which operations answered."""

    def __init__(self, coral: Coral, doc: dict[str, Any]) -> None:
        self.coral = coral
        self.doc = doc
        self.seen: set[tuple[str, str, str]] = set()
        self.shapes: set[str] = set()  # every shape seen on the wire
        paths: list[str] = list(doc["paths"])
        self._routes = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in paths]

    def template(self, path: str) -> str:
        bare = path.split("?")[0]
        if bare in self.doc["paths"]:  # `/namespace/extended` is not the namespace "extended"
            return bare
        found = [template for pattern, template in self._routes if pattern.match(bare)]
        assert len(found) == 1, f"{path} matches {found} in the OpenAPI document"
        return found[0]

    def check(self, method: str, path: str, status: int, body: Body, shape: str, many: bool = False) -> None:
        """`body` is a `shape` (or a list of them) by schemas/ and by the document's response schema."""
        file_schema = json.loads((SCHEMA_DIR / f"{shape}.json").read_bytes())
        for item in body if many else [body]:
            _validate(file_schema, item, f"schemas/{shape}.json: {method} {path}")
        template = self.template(path)
        operation = self.doc["paths"][template][method.lower()]
        assert str(status) in operation["responses"], f"{method} {template} answered undocumented {status}"
        declared = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        ref = declared["items"] if many else declared
        assert ref == {"$ref": f"#/components/schemas/{shape}"}, (template, declared)
        _validate({**declared, "components": self.doc["components"]}, body, f"openapi: {method} {template}")
        self.seen.add((method.lower(), template, str(status)))
        self.shapes.add(shape)

    async def call(
        self,
        method: str,
        path: str,
        shape: str | None,
        *,
        json: Any = None,
        status: int = 200,
        many: bool = False,
    ) -> Body:
        got, body = await self.coral.request(method, path, json)
        assert got == status, (method, path, body)
        if shape is None:  # a route documented without a body (DELETE of a session)
            assert body is None
            self.seen.add((method.lower(), self.template(path), str(status)))
        else:
            self.check(method, path, status, body, shape, many)
        return body


def _validate(schema: dict[str, Any], instance: Any, where: str) -> None:
    errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=str)
    assert not errors, f"{where}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


class FailingReceiver:
    """A session-end webhook endpoint on 127.0.0.1 that answers 503, so deliveries fail and can be retried."""

    def __init__(self) -> None:
        self.url = ""
        self.hits = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=503, text="busy")

    async def __aenter__(self) -> FailingReceiver:
        app = web.Application()
        app.router.add_post("/end", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/end"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# What Claude Code prints headless (-p --output-format json) at the end of a run.
CLAUDE_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "done",
    "num_turns": 1,
    "session_id": "s",
    "total_cost_usd": 0.0,
    "usage": {},
}
# A permission prompt as Claude Code draws it (see coral_server/jobs/prompts.py).
PERMISSION_PROMPT = [
    "\u2500" * 60,
    " Bash command",
    "",
    "   echo hi > hi.txt",
    "   Write a greeting",
    "",
    " Do you want to proceed?",
    " \u276f 1. Yes",
    "   2. No",
    "",
    " Esc to cancel \u00b7 Tab to amend",
]
# A stand-in for Claude Code at the process boundary: headless it prints its result; on a terminal it
# asks permission, takes one key (as the real CLI does: a digit, no Enter), acts on a yes and exits.
FAKE_CLAUDE = f"""#!/usr/bin/env bash
if [ "$1" = -p ]; then echo {shlex.quote(json.dumps(CLAUDE_RESULT, separators=(",", ":")))}; exit 0; fi
printf '%s\\n' {" ".join(shlex.quote(row) for row in PERMISSION_PROMPT)}
read -rsn1 key
if [ "$key" = 1 ]; then echo hi > hi.txt; fi
"""
# Two runs wait for input at once, so a third meets the cap.
MAX_JOBS = 2


def fake_claude(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "claude"
    script.write_text(FAKE_CLAUDE)
    script.chmod(0o755)
    return script


@pytest.fixture
async def wcoral(tmp_path: Path) -> AsyncIterator[Coral]:
    (tmp_path / "jobs").mkdir()
    settings = {
        "webhook_max_attempts": 1,
        "webhook_retry_max_s": 0.2,
        "webhook_secrets": ("wire",),
        "claude_bin": str(fake_claude(tmp_path / "bin")),
        "job_roots": (tmp_path / "jobs",),
        "max_concurrent_jobs": MAX_JOBS,
    }
    async for server in start_coral(tmp_path, **settings):
        yield server


async def served_doc(coral: Coral) -> dict[str, Any]:
    status, doc = await coral.request("GET", "/api/v1/openapi.json")
    assert status == 200
    return doc  # type: ignore[no-any-return]


async def poll(coral: Coral, path: str, done: Any, timeout: float = WAIT_S) -> Body:
    """GET `path` until it answers 200 with a body `done` accepts; that body."""

    async def answered() -> Body | None:
        status, body = await coral.request("GET", path)
        return body if status == 200 and done(body) else None

    return await wait_until(answered, timeout, interval=0.05, what=f"GET {path}")


async def sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[Body]:
    """The events of an SSE stream, each `data:` field parsed."""
    assert response.content_type == "text/event-stream"
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


async def test_every_route_sends_what_its_schema_documents(wcoral: Coral, tmp_path: Path) -> None:
    coral = wcoral
    wire = Wire(coral, await served_doc(coral))
    async with FailingReceiver() as receiver:
        await drive_every_route(wire, coral, receiver, tmp_path)
    await drive_reference_routes(wire)
    await drive_reference_streams(wire, tmp_path)
    await drive_runs(wire, coral, tmp_path)
    await drive_tasks(wire, coral)
    documented = {
        (method, path, next(s for s in op["responses"] if s.startswith(("2", "1"))))
        for path, item in wire.doc["paths"].items()
        for method, op in item.items()
    }
    assert documented - wire.seen == set(), "documented operations never exercised"
    assert wire.shapes == set(RESPONSE_MODELS), "documented response shapes never sent"


async def drive_every_route(wire: Wire, coral: Coral, receiver: FailingReceiver, tmp_path: Path) -> None:
    # -- registry: every agent the server knows, by name and version
    sources = await wire.call("GET", "/api/v1/registry", "RegistrySource", many=True)
    for agent in sources[0]["agents"]:
        for version in agent["versions"]:
            await wire.call("GET", f"/api/v1/registry/local/{agent['name']}/{version}", "RegistryAgentDetail")
    detail = await wire.call("GET", "/api/v1/registry/local/opts/latest", "RegistryAgentDetail")
    options = detail["registryAgent"]["options"]
    assert options["CONFIG_FILE"]["transport"] == "fs" and options["MODE"]["validation"]

    # -- a session with every kind of agent state: puppeted, exited with a code, failed to launch
    exiter = {"PID_FILE": {"type": "string", "value": str(tmp_path / "x.pid")}, "EXIT_AFTER_S": 0.05}
    agents = [
        agent_spec("human", runtime="external", annotations={"role": "reviewer"}),
        agent_spec("peer", runtime="external"),
        agent_spec("exiter", "sleeper", options=exiter),
        agent_spec("broken", "broken-path"),
    ]
    body = session_body(
        agents,
        groups=[["human", "peer", "exiter", "broken"]],
        namespace="wire",
        webhooks={"sessionEnd": {"url": receiver.url}},
        persistenceMode=HOLD,
    )
    body["annotations"] = {"tenant": "acme"}
    created = await wire.call("POST", "/api/v1/local/session", "CreateSessionResponse", json=body)
    ns, sid = created["namespace"], created["sessionId"]
    other = session_body([agent_spec("solo", runtime="external")], namespace="wire")
    alias = await wire.call("POST", "/api/v1/session", "CreateSessionResponse", json=other)

    # -- live events: the snapshot first, then what the puppet routes change
    ws_url = coral.base_url.replace("http://", "ws://") + f"/ws/v1/events/{ns}/{sid}"
    async with coral.http.ws_connect(ws_url, headers=coral.headers) as ws:
        check_event(wire, json.loads((await ws.receive(timeout=10)).data), "SessionSnapshot")
    wire.seen.add(("get", "/ws/v1/events/{namespace}/{sessionId}", "101"))  # connected: it switched
    sse_path = f"/api/v1/events/{ns}/{sid}"
    async with coral.http.get(coral.base_url + sse_path, headers=coral.headers) as sse:
        events = sse_data(sse)
        async with asyncio.timeout(15):
            check_event(wire, await anext(events), "SessionSnapshot")
        wire.seen.add(("get", wire.template(sse_path), str(sse.status)))
        await drive_puppet(wire, f"/api/v1/puppet/{ns}/{sid}/human")
        by_type: dict[str, Body] = {}
        async with asyncio.timeout(15):
            while "thread_closed" not in by_type:
                event = await anext(events)
                by_type.setdefault(event["type"], event)
    check_event(wire, by_type["thread_created"]["thread"], "ThreadState")
    check_event(wire, by_type["thread_message_sent"]["message"], "MessageState")

    # -- state, logs and connection, through both prefixes, once the launched agents have ended
    for prefix in ("/api/v1/session", "/api/v1/local/session"):
        await wire.call("GET", prefix, "NamespaceSessions", many=True)
        await wire.call("GET", f"{prefix}/{ns}", "SessionSummary", many=True)
        state = await poll(
            coral,
            f"{prefix}/{ns}/{sid}",
            lambda s: {a["status"] for a in s["agents"][2:]} == {"exited", "failed"},
        )
        await wire.call("GET", f"{prefix}/{ns}/{sid}", "SessionState")
        await wire.call("GET", f"{prefix}/{ns}/{sid}/agents/exiter/logs?tail=5", "AgentLogs")
        await wire.call("GET", f"{prefix}/{ns}/{sid}/agents/human/connection", "AgentConnection")
    by_name = {a["name"]: a for a in state["agents"]}
    assert by_name["exiter"]["exitCode"] == 7 and by_name["exiter"]["lastLogLines"]
    assert by_name["broken"]["status"] == "failed" and by_name["broken"]["error"]
    assert by_name["human"]["annotations"] == {"role": "reviewer"} and state["annotations"] == {
        "tenant": "acme"
    }

    # -- stop an agent as its puppet, then close the session: its final state is still readable
    stopped = await wire.call("DELETE", f"/api/v1/puppet/{ns}/{sid}/peer", "PuppetAgentAnswer")
    check_event(wire, stopped["agent"], "AgentState")  # the state inside, on its own schema too
    await wire.call("DELETE", f"/api/v1/local/session/{ns}/{alias['sessionId']}", None)
    await wire.call("DELETE", f"/api/v1/session/{ns}/{sid}", None)
    final = await poll(coral, f"/api/v1/session/{ns}/{sid}", lambda s: "closedAt" in s)
    wire.check("GET", f"/api/v1/session/{ns}/{sid}", 200, final, "SessionState")
    assert final["closeReason"] in ("deleted", "all_agents_exited") and final["closing"] is True
    ttl_ns, ttl_sid = await coral.create_session(
        session_body(
            [agent_spec("solo", runtime="external")], namespace="wire-ttl", ttl=200, persistenceMode=HOLD
        )
    )
    ended = await poll(coral, f"/api/v1/session/{ttl_ns}/{ttl_sid}", lambda s: "closedAt" in s)
    wire.check("GET", f"/api/v1/session/{ttl_ns}/{ttl_sid}", 200, ended, "SessionState")
    assert ended["closeReason"] == "ttl" and ended["closeDetail"]

    # -- the session-end report's delivery: listed, detailed, failed (503), retried
    failed = await poll(coral, "/api/v1/webhooks/deliveries?status=failed", lambda d: len(d) == 1)
    for query in (
        "",
        "?status=failed",
        f"?namespace={ns}",
        f"?namespace={ns}&sessionId={sid}",
        "?kind=session_end",
    ):
        await wire.call("GET", "/api/v1/webhooks/deliveries" + query, "DeliveryOut", many=True)
    detail = await wire.call("GET", f"/api/v1/webhooks/deliveries/{failed[0]['id']}", "DeliveryDetail")
    assert detail["attemptLog"][0]["status"] == 503 and detail["payload"]["type"] == "session_end"
    retried = await wire.call(
        "POST", f"/api/v1/webhooks/deliveries/{failed[0]['id']}/retry", "DeliveryOut", json={}, status=202
    )
    assert retried["status"] == "pending" and retried["nextAttemptAt"] is not None

    # -- error bodies are documented ErrorBody answers too
    await wire.call("GET", "/api/v1/session/wire/nope", "ErrorBody", status=404)
    await wire.call("GET", "/api/v1/webhooks/deliveries?limit=0", "ErrorBody", status=400)
    await wire.call("POST", "/api/v1/local/session", "ErrorBody", json={"agentGraphRequest": {}}, status=400)
    await wire.call("GET", f"/api/v1/session/{ns}/{sid}/agents/exiter/connection", "ErrorBody", status=409)


async def drive_reference_routes(wire: Wire) -> None:
    """The reference server's shapes: namespaces, base and extended states, deferred execution."""
    ns = "wire-ref"
    await wire.call("POST", "/api/v1/local/namespace", None, json={"name": ns, "annotations": {"a": "b"}})
    await wire.call("POST", "/api/v1/local/namespace", "ErrorBody", json={"name": ns}, status=409)
    body = session_body([agent_spec("human", runtime="external")], namespace=ns)
    body["execution"] = {"mode": "defer"}
    sid = (await wire.call("POST", "/api/v1/local/session", "CreateSessionResponse", json=body))["sessionId"]
    pending = await wire.call("GET", f"/api/v1/local/session/{ns}/{sid}/extended", "SessionStateExtended")
    assert pending["base"]["status"] == {"type": "pending_execution"}
    await wire.call("POST", f"/api/v1/local/session/{ns}/{sid}", None, json={"ttl": 600_000})
    await wire.call("POST", f"/api/v1/local/session/{ns}/{sid}", "ErrorBody", json={}, status=400)
    await wire.call("GET", f"/api/v1/session/{ns}/{sid}/extended", "SessionStateExtended")
    later = (await wire.call("POST", "/api/v1/session", "CreateSessionResponse", json=body))["sessionId"]
    await wire.call("POST", f"/api/v1/session/{ns}/{later}", None)  # no body: the defaults
    await wire.call("GET", "/api/v1/local/namespace", "SessionNamespaceStateBase", many=True)
    await wire.call("GET", "/api/v1/local/namespace/extended", "SessionNamespaceStateExtended", many=True)
    await wire.call("GET", f"/api/v1/local/namespace/{ns}", "SessionStateBase", many=True)
    extended = await wire.call(
        "GET", f"/api/v1/local/namespace/{ns}/extended", "SessionStateExtended", many=True
    )
    assert extended[0]["base"]["status"]["type"] == "executed"
    # the thread and message shapes, as the console reads them
    thread = {"threadName": "t", "participantNames": []}
    tid = (await wire.coral.request("POST", f"/api/v1/puppet/{ns}/{sid}/human/thread", thread))[1]["thread"][
        "id"
    ]
    message = {"threadId": tid, "content": "hi", "mentions": []}
    await wire.coral.request("POST", f"/api/v1/puppet/{ns}/{sid}/human/thread/message", message)
    state = await wire.call("GET", f"/api/v1/local/session/{ns}/{sid}/extended", "SessionStateExtended")
    check_event(wire, state["threads"][0], "SessionThread")
    check_event(wire, state["threads"][0]["messages"][0], "SessionThreadMessage")
    check_event(wire, state["agents"][0], "SessionAgentState")
    await wire.call("DELETE", f"/api/v1/local/namespace/{ns}", None)
    await wire.call("GET", f"/api/v1/local/namespace/{ns}", "ErrorBody", status=404)


async def frames(ws: aiohttp.ClientWebSocketResponse, last: Any) -> list[Body]:
    """The frames of a WebSocket up to the first `last` accepts (or the end of the stream)."""
    out: list[Body] = []
    async with asyncio.timeout(WAIT_S):
        async for msg in ws:
            out.append(json.loads(msg.data))
            if last(out[-1]):
                break
    return out


async def drive_reference_streams(wire: Wire, tmp_path: Path) -> None:
    """The reference's event streams (each also with the key in the path): every frame validated."""
    coral = wire.coral
    base = coral.base_url.replace("http://", "ws://")
    ns = "wire-streams"
    ws = functools.partial(coral.http.ws_connect, headers=coral.headers)
    sleeps = {"PID_FILE": {"type": "string", "value": str(tmp_path / "s.pid")}}
    agents = [agent_spec("human", runtime="external"), agent_spec("sleeper", "sleeper", options=sleeps)]
    async with (
        ws(f"{base}/ws/v1/events/lsm?namespaceFilter={ns}") as lsm,
        ws(f"{base}/ws/v1/events/any-token/lsm?namespaceFilter={ns}") as lsm_token,
        ws(f"{base}/ws/v1/logs?namespaceFilter={ns}") as logs,
        ws(f"{base}/ws/v1/logs/any-token?namespaceFilter={ns}") as logs_token,
    ):
        created = await coral.request("POST", "/api/v1/local/session", session_body(agents, namespace=ns))
        sid = created[1]["sessionId"]
        async with (
            ws(f"{base}/ws/v1/events/session/{ns}/{sid}") as session,
            ws(f"{base}/ws/v1/events/any-token/session/{ns}/{sid}") as session_token,
        ):
            puppet = f"/api/v1/puppet/{ns}/{sid}/human"
            tid = (
                await coral.request("POST", puppet + "/thread", {"threadName": "t", "participantNames": []})
            )[1]["thread"]["id"]
            await coral.request(
                "POST", puppet + "/thread/message", {"threadId": tid, "content": "hi", "mentions": []}
            )
            await coral.request("DELETE", puppet + "/thread", {"threadId": tid, "summary": "done"})
            # The sleeper has printed its two lines before the session goes.
            await poll(
                coral, f"/api/v1/session/{ns}/{sid}/agents/sleeper/logs", lambda out: len(out["lines"]) == 2
            )
            await coral.request("DELETE", f"/api/v1/local/session/{ns}/{sid}")
            for sock in (session, session_token):
                events = await frames(sock, lambda e: False)  # to the end: the session closed
                kinds = {e["type"] for e in events}
                assert {"thread_created", "thread_message_sent", "thread_closed", "session_closed"} <= kinds
                for event in events:
                    check_event(wire, event, "SessionEvent")
        for sock in (lsm, lsm_token):
            for event in await frames(sock, lambda e: e["type"] == "namespace_closed"):
                check_event(wire, event, "LocalSessionManagerEvent")
        for sock in (logs, logs_token):
            for event in await frames(sock, lambda e: e["text"] == "sleeper stderr line"):
                check_event(wire, event, "LoggingEvent")
    for path in (
        "/ws/v1/events/session/{namespace}/{sessionId}",
        "/ws/v1/events/{token}/session/{namespace}/{sessionId}",
        "/ws/v1/events/lsm",
        "/ws/v1/events/{token}/lsm",
        "/ws/v1/logs",
        "/ws/v1/logs/{token}",
    ):
        wire.seen.add(("get", path, "101"))


async def drive_puppet(wire: Wire, puppet: str) -> None:
    """Every puppet route but stopping the agent; each answers a documented shape."""
    created = {"threadName": "review", "participantNames": ["peer"]}
    tid = (await wire.call("POST", puppet + "/thread", "PuppetThreadAnswer", json=created))["thread"]["id"]
    message = {"threadId": tid, "content": "ship it?", "mentions": ["peer"]}
    await wire.call("POST", puppet + "/thread/message", "PuppetMessageAnswer", json=message)
    participant = {"threadId": tid, "participantName": "exiter"}
    await wire.call("POST", puppet + "/thread/participant", "PuppetThreadAnswer", json=participant)
    await wire.call("DELETE", puppet + "/thread/participant", "PuppetThreadAnswer", json=participant)
    closing = {"threadId": tid, "summary": "done"}
    closed = (await wire.call("DELETE", puppet + "/thread", "PuppetThreadAnswer", json=closing))["thread"]
    assert closed["state"] == {
        "state": "closed",
        "summary": "done",
        "timestamp": closed["state"]["timestamp"],
    }


FINAL = ("completed", "failed", "killed")


async def drive_runs(wire: Wire, coral: Coral, tmp_path: Path) -> None:
    """Every run route: a headless job to its end, two that wait for input (answered, killed), the cap,
    the live streams' snapshots, and each error status."""
    repo = init_git_repo(tmp_path / "jobs" / "repo").path
    headless = {"prompt": "say done", "repo_path": str(repo), "flags": "--dangerously-skip-permissions"}
    submitted = await wire.call("POST", "/api/tasks/run", "RunSubmitted", json=headless)
    assert submitted["status"] == "pending"
    done_id = submitted["run_id"]
    run_path = f"/api/tasks/runs/{done_id}"
    await poll(coral, run_path, lambda r: r["status"] in FINAL)
    done = await wire.call("GET", run_path, "RunDetail")
    assert (done["status"], done["exit_reason"], done["trigger_type"]) == ("completed", "agent_done", "api")
    assert done["result"]["mode"] == "headless" and done["result"]["agent"]["text"] == "done"
    assert done["branch"] == f"coral/run-{done_id}" and '"result":"done"' in done["output"]
    await wire.call("POST", run_path + "/kill", "ErrorBody", status=404)
    await wire.call("POST", run_path + "/input", "ErrorBody", json={"text": "yes"}, status=409)

    # -- two runs on a terminal, each paused at a permission prompt; a third is one too many
    asking = {"prompt": "write a greeting", "repo_path": str(repo), "display_name": "asks"}
    ids = [(await wire.call("POST", "/api/tasks/run", "RunSubmitted", json=asking))["run_id"] for _ in "ab"]
    for run_id in ids:
        waiting = await poll(
            coral,
            f"/api/tasks/runs/{run_id}",
            lambda r: r["status"] not in ("pending", "running"),
        )
        assert waiting["status"] == "waiting_input", waiting
    async with coral.http.post(coral.base_url + "/api/tasks/run", json=asking, headers=coral.headers) as resp:
        wire.check("POST", "/api/tasks/run", resp.status, await resp.json(), "ErrorBody")
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    assert "Retry-After" in wire.doc["paths"]["/api/tasks/run"]["post"]["responses"]["429"]["headers"]
    answered, killed = ids
    ws_url = coral.base_url.replace("http://", "ws://") + f"/ws/v1/runs/{answered}/events"
    async with coral.http.ws_connect(ws_url, headers=coral.headers) as ws:
        snapshot = json.loads((await ws.receive(timeout=10)).data)
    check_event(wire, snapshot, "RunSnapshot")
    assert snapshot["waiting_for"] == "Bash: echo hi > hi.txt - Do you want to proceed?", snapshot
    wire.seen.add(("get", "/ws/v1/runs/{run_id}/events", "101"))
    sse_path = f"/api/tasks/runs/{answered}/events"
    async with coral.http.get(coral.base_url + sse_path, headers=coral.headers) as sse:
        async with asyncio.timeout(15):
            snapshot = await anext(sse_data(sse))
        wire.seen.add(("get", wire.template(sse_path), str(sse.status)))
    check_event(wire, snapshot, "RunSnapshot")
    assert (snapshot["type"], snapshot["status"], snapshot["id"]) == ("snapshot", "waiting_input", answered)
    # Its whole stream from the start (?after=0): every event it sent, each checked against its shape.
    async with coral.http.ws_connect(ws_url + "?after=0", headers=coral.headers) as ws:
        await wire.call("POST", f"/api/tasks/runs/{answered}/input", "OkBody", json={"text": "yes"})
        types = await check_run_events(wire, ws)
    assert types[0] == "run_created" and "run_input_needed" in types and "run_output" in types, types
    await wire.call("POST", f"/api/tasks/runs/{killed}/kill", "OkBody")
    stopped = await poll(coral, f"/api/tasks/runs/{killed}", lambda r: r["status"] in FINAL)
    assert (stopped["status"], stopped["exit_reason"]) == ("killed", "user_cancelled"), stopped
    assert stopped["result"]["files_changed"] == []  # killed before any yes
    await poll(coral, f"/api/tasks/runs/{answered}", lambda r: r["status"] in FINAL)
    yes = await wire.call("GET", f"/api/tasks/runs/{answered}", "RunDetail")
    assert (yes["status"], yes["result"]["mode"]) == ("completed", "interactive"), yes
    assert [f["path"] for f in yes["result"]["files_changed"]] == ["hi.txt"]  # done after the yes

    # -- listings: newest first, paged, filtered
    page = await wire.call("GET", "/api/tasks/runs", "RunPage")
    assert [r["id"] for r in page["runs"]] == [killed, answered, done_id] and page["next_before"] is None
    assert all("output" not in r for r in page["runs"])
    first = await wire.call("GET", "/api/tasks/runs?limit=1", "RunPage")
    rest = await wire.call("GET", f"/api/tasks/runs?limit=2&before={first['next_before']}", "RunPage")
    assert [r["id"] for r in rest["runs"]] == [answered, done_id]
    huge = "6956170140609761196900352"  # beyond a SQLite integer: found by schemathesis as a 500
    bad = await wire.call("GET", f"/api/tasks/runs?before={huge}", "ErrorBody", status=400)
    assert bad["errors"][0]["field"] == "before"
    await wire.call("GET", f"/api/tasks/runs/{huge}", "ErrorBody", status=404)
    completed = await wire.call("GET", "/api/tasks/runs?status=completed&trigger=api", "RunPage")
    assert {r["id"] for r in completed["runs"]} == {answered, done_id}

    # -- errors: a bad field, a repository outside the job roots, an unknown run, a bad listing
    bad = await wire.call("POST", "/api/tasks/run", "ErrorBody", json={"repo_path": str(repo)}, status=400)
    assert bad["errors"][0]["field"] == "prompt"
    outside = {"prompt": "x", "repo_path": str(init_git_repo(tmp_path / "outside").path)}
    await wire.call("POST", "/api/tasks/run", "ErrorBody", json=outside, status=403)
    await wire.call("GET", "/api/tasks/runs/999", "ErrorBody", status=404)
    await wire.call("POST", "/api/tasks/runs/999/input", "ErrorBody", json={"text": "x"}, status=404)
    await wire.call("GET", "/api/tasks/runs?status=bogus", "ErrorBody", status=400)

    # -- auto-accept: the prompt is answered for the run, and its stream says so
    accepting = {**asking, "auto_accept": True, "max_auto_accepts": 1}
    accepted = (await wire.call("POST", "/api/tasks/run", "RunSubmitted", json=accepting))["run_id"]
    ws_url = coral.base_url.replace("http://", "ws://") + f"/ws/v1/runs/{accepted}/events?after=0"
    async with coral.http.ws_connect(ws_url, headers=coral.headers) as ws:
        types = await check_run_events(wire, ws)
    assert "run_auto_accepted" in types and "run_input_needed" not in types, types


async def check_run_events(wire: Wire, ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    """Each event of a run's stream (resumed from its start) against its shape, until its final status."""
    types: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            event = json.loads((await ws.receive()).data)
            types.append(event["type"])
            check_event(wire, event, RUN_EVENTS[event["type"]].__name__)
            if event["type"] == "run_status" and event["status"] in FINAL:
                return types


async def drive_tasks(wire: Wire, coral: Coral) -> None:
    """Scheduled tasks: create (and deduplicated), list, read, change, preview, run, fire, act, fail."""
    step = {
        "id": "tell",
        "uses": "webhook",
        "with": {"url": "http://127.0.0.1:9/t", "body": {"r": "${run.id}"}},
    }
    body = {
        "title": "wire",
        "description": "every task route",
        "schedule_kind": "event",
        "schedule_expr": "wire.topic",
        "created_by": "0b7e7a8e-2f35-4a53-9d3b-2b1c9f0c0a11",
        "max_retries": 0,
        "dedupe_key": "wire",
        "payload": {"pipeline": [step]},
    }
    made = await wire.call("POST", "/tasks", "TaskCreated", json=body, status=201)
    again = await wire.call("POST", "/tasks", "TaskCreated", json=body, status=200)
    assert (again["id"], again["deduplicated"]) == (made["id"], True)
    path = f"/tasks/{made['id']}"
    page = await wire.call("GET", "/tasks?schedule_kind=event&limit=10", "TaskPage")
    assert [t["id"] for t in page["items"]] == [made["id"]] and page["total"] == 1
    await wire.call("PUT", path, "TaskDetail", json={"priority": 2})
    preview = {
        "schedule_kind": "rrule",
        "schedule_expr": "FREQ=DAILY;COUNT=9",
        "timezone": "Europe/Berlin",
        "count": 2,
    }
    shown = await wire.call("POST", "/tasks/preview", "SchedulePreview", json=preview)
    assert len(shown["fire_times"]) == 2
    started = await wire.call("POST", path + "/run_now", "TaskRunStarted", status=202)
    # (the task's dedupe key holds an event's run back while the manual one is active)
    await poll(coral, f"/api/tasks/runs/{started['run']['run_id']}", lambda r: r["status"] in FINAL)
    fired = await wire.call("POST", "/events", "EventAccepted", json={"topic": "wire.topic"}, status=202)
    assert fired["triggered_tasks"] == [made["id"]]
    await poll(coral, f"/api/tasks/runs/{fired['runs'][0]['run_id']}", lambda r: r["status"] in FINAL)
    runs = await wire.call("GET", path + "/runs", "TaskRunPage")
    assert runs["total"] == 2 and {r["trigger_type"] for r in runs["items"]} == {"manual", "event"}
    listed = await wire.call("GET", f"/runs?task_id={made['id']}&include_errors=true", "TaskRunList")
    assert listed["total"] == 2 and {r["success"] for r in listed["items"]} == {False}
    one = await wire.call("GET", f"/runs/{started['run']['run_id']}", "TaskRun")
    assert (one["task_id"], one["error"]) == (made["id"], one["error_msg"])
    await wire.call("GET", "/runs/999999999", "ErrorBody", status=404)
    await wire.call("GET", "/runs?start_time=soon", "ErrorBody", status=400)
    shown_task = await wire.call("GET", path, "TaskDetail")
    assert shown_task["last_run"] is not None and shown_task["runs_total"] == 2
    await wire.call("POST", path + "/snooze", "TaskDetail", json={"delay_seconds": 60, "reason": "wire"})
    await wire.call("POST", path + "/pause", "TaskDetail")
    await wire.call("POST", path + "/resume", "TaskDetail")
    await wire.call("POST", path + "/cancel", "TaskDetail")
    await wire.call("POST", path + "/pause", "ErrorBody", status=409)
    await wire.call("GET", "/tasks/0b7e7a8e-0000-4a53-9d3b-2b1c9f0c0a11", "ErrorBody", status=404)
    await wire.call("POST", "/tasks", "ErrorBody", json={**body, "priority": 0}, status=400)
    await wire.call("POST", "/events", "ErrorBody", json={"topic": ""}, status=400)


def check_event(wire: Wire, body: Body, shape: str) -> None:
    """An event payload (not a route's answer) against its schemas/ file and the document's component."""
    _validate(json.loads((SCHEMA_DIR / f"{shape}.json").read_bytes()), body, f"schemas/{shape}.json: event")
    component = {"$ref": f"#/components/schemas/{shape}", "components": wire.doc["components"]}
    _validate(component, body, f"openapi component {shape}: event")
    wire.shapes.add(shape)


async def test_a_server_with_keys_documents_and_sends_401(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=("k",)):
        wire = Wire(coral, await served_doc(coral))
        coral.headers = {}
        await wire.call("GET", "/api/v1/session", "ErrorBody", status=401)
        await wire.call("GET", "/api/v1/registry/local/echo/latest", "ErrorBody", status=401)
