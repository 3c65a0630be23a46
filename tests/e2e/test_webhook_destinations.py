"""Black-box: where a server with auth keys lets webhooks and custom tools point (issue 15.11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import agent_spec, session_body, start_coral, wait_until

KEYS = {"auth_keys": ("k",)}


def external(**settings: Any) -> dict[str, Any]:
    return session_body([agent_spec("a", runtime="external")], **settings)


def end_hook(url: str) -> dict[str, Any]:
    return {"sessionEnd": {"url": url}}


async def test_internal_destinations_are_a_400_naming_the_field(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, **KEYS):
        cases: list[tuple[dict[str, Any], str, str]] = []
        body = external(webhooks=end_hook("http://127.0.0.1:9/hook"))
        cases.append((body, "execution.runtimeSettings.webhooks.sessionEnd.url", "loopback"))
        body = external()
        body["sessionRuntimeSettings"] = {"webhooks": end_hook("http://169.254.169.254/latest")}
        cases.append((body, "sessionRuntimeSettings.webhooks.sessionEnd.url", "link-local"))
        body = external()
        body["agentGraphRequest"]["customTools"] = {
            "lookup": {"transport": {"type": "http", "url": "http://localhost:6379/"}}
        }
        cases.append((body, "agentGraphRequest.customTools.lookup.transport.url", "localhost (127.0.0.1)"))
        for body, field, kind in cases:
            status, out = await coral.request("POST", "/api/v1/local/session", body)
            assert status == 400, out
            assert [e["field"] for e in out["errors"]] == [field], out
            message = out["errors"][0]["message"]
            assert "destination not allowed" in message and kind in message, message
        # A job's status webhook, and the webhooks of a coral job's session.
        session = external()
        run = {"prompt": "p", "repo_path": str(tmp_path), "agent_type": "coral", "session": session}
        status, out = await coral.request(
            "POST", "/api/tasks/run", {**run, "webhook_url": "http://10.0.0.5:8080/status"}
        )
        assert (status, [e["field"] for e in out["errors"]]) == (400, ["webhook_url"]), out
        assert "private" in out["errors"][0]["message"]
        hooked = {**run, "session": external(webhooks=end_hook("http://[::1]:9/"))}
        status, out = await coral.request("POST", "/api/tasks/run", hooked)
        assert status == 400, out
        assert out["errors"][0]["field"] == "session.execution.runtimeSettings.webhooks.sessionEnd.url"
        # Nothing was created or queued.
        assert await coral.request("GET", "/api/v1/session") == (200, [])
        assert await coral.request("GET", "/api/v1/webhooks/deliveries") == (200, [])


async def test_an_allowed_internal_receiver_gets_its_report(tmp_path: Path) -> None:
    """The operator lists an internal receiver: the request passes and the report is delivered."""
    reports: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        reports.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/end", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async for coral in start_coral(tmp_path, webhook_allow=("127.0.0.0/8",), **KEYS):
            body = external(webhooks=end_hook(f"http://127.0.0.1:{port}/end"))
            ns, sid = await coral.create_session(body)
            status, _ = await coral.request("DELETE", f"/api/v1/local/session/{ns}/{sid}")
            assert status == 200
            await wait_until(lambda: reports, what="the end report")
            assert b'"reason":"deleted"' in reports[0]
    finally:
        await runner.cleanup()
