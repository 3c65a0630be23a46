"""Black-box: custom tools reach the app as signed POSTs; every failure is a clear tool error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coral_server.webhooks.verify import verify_coral_signature, verify_webhook
from tests.conftest import Coral, agent_spec, session_body, start_coral
from tests.e2e.mcp_client import connect
from tests.e2e.test_events import of_type, read_until, ws_stream

SECRET = "test-webhook-secret"

REPORT_SCHEMA = {
    "name": "submit_report",
    "description": "Submit a completed report to the application",
    "inputSchema": {
        "type": "object",
        "properties": {"title": {"type": "string"}, "content": {"type": "string"}},
        "required": ["title", "content"],
    },
    "outputSchema": {
        "type": "object",
        "properties": {"success": {"type": "boolean"}, "reportId": {"type": "string"}},
        "required": ["success"],
    },
}


class Receiver:
    """The app's webhook endpoint on loopback; verifies both signatures on the raw body."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.mode = "ok"
        self.seen: set[str] = set()
        self.url = ""
        self.released = asyncio.Event()  # "slow" answers only once this is set (at teardown)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verify_coral_signature(request.headers, body, [SECRET])
        verify_webhook(request.headers, body, [SECRET], seen_ids=self.seen)
        self.calls.append({"path": request.path, "json": json.loads(body), "headers": dict(request.headers)})
        if self.mode == "500":
            return web.Response(status=500, text="database on fire")
        if self.mode == "slow":
            await self.released.wait()
        if self.mode == "bad-output":
            return web.json_response({"reportId": 42})
        if self.mode == "not-json":
            return web.Response(text="thanks!")
        return web.json_response({"success": True, "reportId": f"r{len(self.calls)}"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{session}/{agent}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    yield rec
    rec.released.set()
    await runner.cleanup()


@pytest.fixture
async def wcoral(tmp_path: Path) -> AsyncIterator[Coral]:
    # The default timeout (30 s): a busy machine must not turn a good answer into a timeout.
    async for server in start_coral(tmp_path, webhook_secrets=(SECRET,)):
        yield server


def tool_body(url: str, **tool: Any) -> dict[str, Any]:
    body = session_body(
        [
            agent_spec("writer", runtime="external", customToolAccess=["submit_report"]),
            agent_spec("reader", runtime="external"),
        ]
    )
    body["agentGraphRequest"]["customTools"] = {
        "submit_report": {
            "transport": {"type": "http", "url": url, "signatureHeader": "X-Coral-Signature"},
            **(tool or {"schema": REPORT_SCHEMA}),
        }
    }
    return body


async def test_submit_report_end_to_end(wcoral: Coral, receiver: Receiver) -> None:
    ns, sid = await wcoral.create_session(tool_body(receiver.url))
    async with (
        connect(await wcoral.connection_url(ns, sid, "writer")) as writer,
        connect(await wcoral.connection_url(ns, sid, "reader")) as reader,
    ):
        listed = {t.name: t for t in (await writer.session.list_tools()).tools}
        assert listed["submit_report"].description == "Submit a completed report to the application"
        assert "submit_report" not in {t.name for t in (await reader.session.list_tools()).tools}
        result = await writer.session.call_tool("submit_report", {"title": "Q4", "content": "# up"})
        assert not result.is_error
        assert result.structured_content == {"success": True, "reportId": "r1"}
        is_error, _ = await reader.call("submit_report", title="x", content="y")
        assert is_error
    [call] = receiver.calls
    assert call["path"] == f"/hook/{sid}/writer"
    assert call["json"] == {"title": "Q4", "content": "# up"}
    assert call["headers"]["X-Coral-SessionId"] == sid and call["headers"]["X-Coral-AgentName"] == "writer"


@pytest.mark.parametrize(
    ("mode", "arguments", "expected"),
    [
        ("ok", {"title": "no content"}, "do not match the input schema"),
        ("ok", {"title": 5, "content": "x"}, "title: 5 is not of type 'string'"),
        ("500", {"title": "t", "content": "c"}, "HTTP 500: database on fire"),
        ("slow", {"title": "t", "content": "c"}, "did not answer within 0.5 s"),
        ("bad-output", {"title": "t", "content": "c"}, "does not match the output schema"),
        ("not-json", {"title": "t", "content": "c"}, "not JSON"),
        ("down", {"title": "t", "content": "c"}, "cannot reach the app"),
    ],
)
async def test_custom_tool_failures_are_tool_errors(
    tmp_path: Path, receiver: Receiver, mode: str, arguments: dict[str, Any], expected: str
) -> None:
    receiver.mode = mode
    url = "http://127.0.0.1:9/hook" if mode == "down" else receiver.url
    # A short timeout only where it is what is tested ("slow" never answers in time).
    timeout = 0.5 if mode == "slow" else 30.0
    async for wcoral in start_coral(tmp_path, webhook_secrets=(SECRET,), custom_tool_timeout_s=timeout):
        ns, sid = await wcoral.create_session(tool_body(url))
        async with connect(await wcoral.connection_url(ns, sid, "writer")) as writer:
            is_error, payload = await writer.call("submit_report", **arguments)
            assert is_error and expected in str(payload), payload
            if "input schema" in expected or "of type" in expected:
                assert receiver.calls == []  # bad arguments never reach the app
            # The agent keeps working after the failure.
            assert (await writer.ok("coral_wait_for_message", maxWaitMs=1)) == {"status": "Timeout reached"}


async def test_flat_reference_spelling_and_bad_schema(wcoral: Coral, receiver: Receiver) -> None:
    flat = {"inputSchema": REPORT_SCHEMA["inputSchema"], "description": "flat"}
    ns, sid = await wcoral.create_session(tool_body(receiver.url, **flat))
    async with connect(await wcoral.connection_url(ns, sid, "writer")) as writer:
        assert (
            await writer.session.call_tool("submit_report", {"title": "a", "content": "b"})
        ).is_error is False
    bad = {"schema": {**REPORT_SCHEMA, "inputSchema": {"type": "no-such-type"}}}
    status, out = await wcoral.request("POST", "/api/v1/local/session", tool_body(receiver.url, **bad))
    assert status == 400
    assert out["errors"][0]["field"] == "agentGraphRequest.customTools.submit_report.schema.inputSchema"
    assert "not a valid JSON Schema" in out["errors"][0]["message"]


async def test_calls_are_published_as_events_without_their_data(wcoral: Coral, receiver: Receiver) -> None:
    ns, sid = await wcoral.create_session(tool_body(receiver.url))
    async with (
        ws_stream(wcoral, ns, sid) as ws,
        connect(await wcoral.connection_url(ns, sid, "writer")) as writer,
    ):
        await writer.ok("submit_report", title="ok-title", content="s3cret-content")
        receiver.mode = "500"
        await writer.call("submit_report", title="t", content="c")
        await writer.call("submit_report", title="missing content")
        events = await read_until(ws, of_type("custom_tool_called", outcome="invalid_arguments"))
    calls = [e for e in events if e["type"] == "custom_tool_called"]
    assert [(e["name"], e["tool"], e["outcome"], e.get("status")) for e in calls] == [
        ("writer", "submit_report", "ok", 200),
        ("writer", "submit_report", "http_error", 500),
        ("writer", "submit_report", "invalid_arguments", None),
    ]
    assert all(e["durationMs"] >= 0 for e in calls)
    assert calls[0]["durationMs"] > 0
    text = json.dumps(events)
    assert "s3cret-content" not in text and "ok-title" not in text and "database on fire" not in text
