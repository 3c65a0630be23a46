"""Black-box: all `coral-server` prints through a session (default level and DEBUG) holds no secret."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coral_server.config import BUNDLED_REGISTRY
from coral_server.webhooks.secrets import SECRET_FILE
from tests.conftest import agent_spec, session_body, wait_until
from tests.e2e.mcp_client import connect
from tests.test_cli import clean_env

# Agents holding secret options (their own registry, so the shared fixtures' listing stays as it is).
SECRET_AGENTS = Path(__file__).resolve().parents[1] / "fixtures" / "secret-agents"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
MCP_SECRET = re.compile(r"/mcp/v1/([^/]+)/")


def command() -> list[str]:
    """The installed `coral-server` script beside this interpreter (else the same entry point via -m)."""
    script = Path(sys.executable).with_name("coral-server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "coral_server"]


async def wait_for_text(path: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes]) -> re.Match[str]:
    def found() -> re.Match[str] | None:
        assert proc.poll() is None, path.read_text()
        return pattern.search(path.read_text())

    return await wait_until(found, interval=0.05, what=f"{pattern.pattern!r} in {path}")


async def wait_for_files(paths: list[Path]) -> list[dict[str, str]]:
    await wait_until(lambda: all(p.exists() for p in paths), interval=0.05, what=f"the files {paths}")
    return [json.loads(p.read_text()) for p in paths]


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, key: str) -> None:
        self.http, self.base, self.headers = http, base, {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=self.headers) as resp:
            return resp.status, await resp.json() if resp.content_type == "application/json" else None

    async def state_until(self, path: str, done: Any) -> dict[str, Any]:
        async def state() -> dict[str, Any] | None:
            status, state = await self.call("GET", path)
            assert status == 200, state
            return state if done(state) else None  # type: ignore[no-any-return]

        return await wait_until(state, interval=0.05, what=f"the state of {path}")


async def drive_a_session(base: str, key: str, reports: Path) -> list[str]:
    """Echo agents holding secret options, MCP traffic over every route, `?token=`; the secrets seen."""
    tokens = [secrets.token_urlsafe(18), f"pass phrase {secrets.token_hex(6)}!"]  # URL-safe and not
    options = [
        {"TOKEN": {"type": "secret", "value": token}, "REPORT_DIR": {"type": "string", "value": str(reports)}}
        for token in tokens
    ]
    body = session_body(
        [
            agent_spec("echo-a", "echo-secret", options=options[0]),
            agent_spec("echo-b", "echo-secret-sse", options=options[1]),
            agent_spec("me", "echo", runtime="external"),
        ],
        namespace="logs",
        ttl=60_000,
        webhooks={"sessionEnd": {"url": "http://127.0.0.1:9/end"}},  # refused: logged, retried
    )
    async with aiohttp.ClientSession() as http:
        api = Api(http, base, key)
        status, created = await api.call("POST", "/api/v1/local/session", body)
        assert status == 200, created
        session = f"/api/v1/local/session/logs/{created['sessionId']}"
        found = await wait_for_files([reports / "echo-a.json", reports / "echo-b.json"])
        assert [f["TOKEN"] for f in found] == tokens
        status, me = await api.call("GET", f"{session}/agents/me/connection")
        assert status == 200, me
        me_secret = MCP_SECRET.search(me["connectionUrl"]).group(1)  # type: ignore[union-attr]
        await api.state_until(session, lambda s: all(a["isConnected"] for a in s["agents"][:2]))

        async with connect(me["connectionUrl"]) as agent:  # streamable HTTP
            created_thread = await agent.ok(
                "coral_create_thread", threadName="t", participantNames=["echo-a", "echo-b"]
            )
            thread = created_thread["thread"]
            await agent.ok(
                "coral_send_message", threadId=thread["id"], content="hi", mentions=["echo-a", "echo-b"]
            )
            await api.state_until(
                session,
                lambda s: {m["senderName"] for m in s["threads"][0]["messages"]} >= {"echo-a", "echo-b"},
            )
        async with connect(me["sseUrl"]) as agent:  # SSE: the stream and its messages endpoint
            await agent.session.list_tools()
        devmode = f"{base}/mcp/v1/{me_secret}/devmode/sse"
        async with http.get(f"{devmode}?agentId=me") as resp:
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"event:")
        async with http.post(f"{devmode}/messages/?session_id=none&agentId=me", json={}) as resp:
            assert resp.status >= 400
        async with http.get(f"{base}/mcp/v1/{me_secret}/no-such-route") as resp:
            assert resp.status == 404
        # The browser way to authenticate an event stream (logged when the session's end closes
        # it), and the same key where it is not accepted.
        events = f"{base}/ws/v1/events/logs/{created['sessionId']}?token={key}"
        async with http.ws_connect(events) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            status, _ = await api.call("DELETE", session)
            assert status == 200
            async with asyncio.timeout(30):
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT and message.json()["type"] == "session_closed":
                        break
        async with http.get(f"{base}/api/v1/session?token={key}") as resp:
            assert resp.status == 401
    return [*tokens, *(f["CORAL_AGENT_SECRET"] for f in found), me_secret]


@pytest.mark.parametrize("level", [None, "DEBUG"], ids=["default-level", "debug"])
async def test_no_secret_reaches_the_log(tmp_path: Path, level: str | None) -> None:
    key = secrets.token_urlsafe(24)
    reports = tmp_path / "reports"
    reports.mkdir()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any await
            [
                *command(),
                "--port",
                "0",
                "--data-dir",
                str(tmp_path / "data"),
                f"--auth-key={key}",  # joined: a key may begin with "-"
                "--webhook-allow",  # the end webhook below goes to a closed local port
                "127.0.0.1",
                "--registry",
                str(BUNDLED_REGISTRY),
                "--registry",
                str(SECRET_AGENTS),
                *(["--log-level", level] if level else []),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,  # the whole output, in order
            cwd=tmp_path,
            env=clean_env(),
        )
    try:
        port = int((await wait_for_text(log_path, LISTENING, proc)).group(1))
        seen = await drive_a_session(f"http://127.0.0.1:{port}", key, reports)
        # The event stream's line is written when its handler returns, which it does once its
        # client has left: before the shutdown, however late the client's close comes.
        await wait_for_text(log_path, re.compile(r"\?token=\*\*\* status=101"), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    webhook_secret = (tmp_path / "data" / SECRET_FILE).read_text().strip()
    named = {"auth key": key, "webhook secret": webhook_secret}
    named.update({f"secret option of echo-{n}": v for n, v in zip("ab", seen[:2], strict=True)})
    agents = ("echo-a", "echo-b", "me")
    named.update({f"agent secret of {n}": v for n, v in zip(agents, seen[2:], strict=True)})
    leaks = {what: [line for line in log.splitlines() if value in line] for what, value in named.items()}
    assert not {what: lines for what, lines in leaks.items() if lines}, leaks

    # Not vacuous: the access log was on and saw every kind of credential-bearing request.
    # (Streams still open at the end are never logged: aiohttp logs a request when it completes.)
    for expected in (
        "http.request method=POST path=/mcp/v1/***/mcp status=200",
        "path=/mcp/v1/***/sse/messages/?session_id=",
        "path=/mcp/v1/***/devmode/sse/messages/?session_id=none&agentId=me status=4",
        "path=/mcp/v1/***/no-such-route status=404",
        "?token=*** status=101",
        "path=/api/v1/session?token=*** status=401",
        "webhooks.secret source=generated",
    ):
        assert expected in log, (expected, log)
