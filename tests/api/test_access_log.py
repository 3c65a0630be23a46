"""The access log of a real server: one structured line per request, credentials masked."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from pathlib import Path

import pytest

from coral_server.app import build_app
from coral_server.config import Settings
from coral_server.redaction import MASK, SecretRegistry, mask_target
from tests.conftest import agent_spec, session_body, start_coral, wait_until
from tests.e2e.mcp_client import HEADERS, INIT

LINE = re.compile(
    r"^http\.request method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d+) "
    r"bytes=(?P<bytes>\d+) ms=\d+\.\d remote=127\.0\.0\.1$"
)


def test_every_route_keyed_by_an_agent_secret_is_masked(tmp_path: Path) -> None:
    app = build_app(Settings(data_dir=tmp_path / "data"))
    keyed = [r.canonical for r in app.router.resources() if "{secret}" in r.canonical]
    assert len(keyed) >= 5  # streamable HTTP, SSE and devmode SSE, with their message endpoints
    for canonical in keyed:
        secret = secrets.token_urlsafe(32)
        path = canonical.replace("{secret}", secret)
        assert secret not in mask_target(path, SecretRegistry()), canonical


async def test_lines_mask_agent_secrets_and_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = secrets.token_urlsafe(16)
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async for coral in start_coral(tmp_path, auth_keys=(key,)):
        ns, sid = await coral.create_session(
            session_body([agent_spec("me", runtime="external")], namespace="acc")
        )
        url = await coral.connection_url(ns, sid, "me")
        agent_secret = url.split("/mcp/v1/")[1].split("/")[0]
        async with coral.http.post(url, json=INIT, headers=HEADERS) as resp:
            assert resp.status == 200
        async with coral.http.get(f"{coral.base_url}/api/v1/session?token={key}") as resp:
            assert resp.status == 401
    lines = [r for r in caplog.records if r.name == "aiohttp.access"]
    text = "\n".join(r.getMessage() for r in lines)
    assert agent_secret not in text and key not in text
    parsed = [LINE.match(r.getMessage()) for r in lines]
    assert all(parsed), text
    seen = {(m["method"], m["path"], m["status"]) for m in parsed if m}
    assert ("POST", f"/mcp/v1/{MASK}/mcp", "200") in seen
    assert ("GET", f"/api/v1/session?token={MASK}", "401") in seen
    assert ("POST", "/api/v1/local/session", "200") in seen
    # Masked as it is built: the log filter lets these lines through without a scan.
    assert all(getattr(r, "redacted", False) for r in lines)


async def test_a_request_that_cannot_be_parsed_is_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async for coral in start_coral(tmp_path):
        host, port = coral.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Probe: \x00\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
        await wait_until(
            lambda: any("http.malformed_request" in r.getMessage() for r in caplog.records),
            what="the malformed request logged",
        )
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server and all(r.levelno == logging.INFO and r.exc_info is None for r in server), server
    assert "Traceback" not in caplog.text
