"""Event streams let go as soon as their client leaves, idle or not: the handler returns (so the
access log has its line), and the client's place under the per-client cap is free again."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coral_server.api.events import KEEPALIVE_S, STREAMS, WS_HEARTBEAT_S
from coral_server.redaction import mask_target
from tests.conftest import WAIT_S, Coral, agent_spec, session_body, start_coral, wait_until

KEY = "release-key"
CAP = 2
# Well within the SSE keep-alive and the WebSocket heartbeat: a stream must learn that its client
# left from the leaving itself, not from its next write.
RELEASE_S = 10.0
# A client's close frame (masked, as a client's must be; a zero mask): status 1000.
CLOSE_FRAME = b"\x88\x82\x00\x00\x00\x00" + struct.pack("!H", 1000)

# Every stream route an idle client may leave, with how it authenticates: the key in its path, in
# `?token=`, else a bearer header.
ROUTES = {
    "session": "/ws/v1/events/{ns}/{sid}?token={key}",
    "reference-session": "/ws/v1/events/session/{ns}/{sid}",
    "reference-session-token": "/ws/v1/events/{key}/session/{ns}/{sid}",
    "lsm": "/ws/v1/events/lsm",
    "lsm-token": "/ws/v1/events/{key}/lsm",
    "logs": "/ws/v1/logs",
    "logs-token": "/ws/v1/logs/{key}",
    "sse": "/api/v1/events/{ns}/{sid}",
}
WEBSOCKET_LEAVES = ("close-frame", "eof", "reset")
CASES = [
    pytest.param(route, leave, id=f"{route}-{leave}")
    for route in ROUTES
    for leave in (("eof", "reset") if route == "sse" else WEBSOCKET_LEAVES)
]


@pytest.fixture
async def coral(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Coral]:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async for server in start_coral(tmp_path, auth_keys=(KEY,), max_streams_per_client=CAP):
        yield server


class Client:
    """A raw client of one event stream: it asks, reads the answer's head, and reads nothing more
    until it leaves (so nothing but its leaving can tell the server it is gone)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int) -> None:
        self.reader, self.writer, self.status = reader, writer, status

    @classmethod
    async def open(cls, coral: Coral, target: str) -> Client:
        host, port = coral.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if KEY not in target:
            head += f"Authorization: Bearer {KEY}\r\n"
        if target.startswith("/ws/"):
            key = base64.b64encode(os.urandom(16)).decode()
            head += (
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            )
        writer.write((head + "\r\n").encode())
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        return cls(reader, writer, int(answer.split(b" ", 2)[1]))

    async def leave(self, how: str) -> None:
        """`close-frame`: the WebSocket closing handshake, then the connection closed; `eof`: the
        connection closed without a word; `reset`: the connection reset (a client that vanished)."""
        if how == "close-frame":
            self.writer.write(CLOSE_FRAME)
            # The server answers with its own close frame and closes the connection.
            await asyncio.wait_for(self.reader.read(), RELEASE_S)
        elif how == "reset":
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()
        await self.writer.wait_closed()


def access_lines(caplog: pytest.LogCaptureFixture, target: str) -> int:
    """How many requests for `target` the access log has written (each when its handler returned)."""
    status = 101 if target.startswith("/ws/") else 200
    line = f"method=GET path={mask_target(target)} status={status} "
    return sum(r.name == "aiohttp.access" and line in r.getMessage() for r in caplog.records)


def test_the_bound_is_below_every_periodic_write() -> None:
    assert min(KEEPALIVE_S, WS_HEARTBEAT_S) > RELEASE_S


@pytest.mark.parametrize(("route", "leave"), CASES)
async def test_an_idle_stream_ends_when_its_client_leaves(
    coral: Coral, caplog: pytest.LogCaptureFixture, route: str, leave: str
) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("me", runtime="external")]))
    target = ROUTES[route].format(ns=ns, sid=sid, key=KEY)
    expected = 101 if target.startswith("/ws/") else 200

    clients = [await Client.open(coral, target) for _ in range(CAP)]
    assert [c.status for c in clients] == [expected] * CAP
    refused = await Client.open(coral, target)
    assert refused.status == 429  # the cap is what shows a place held
    await refused.leave("eof")
    assert access_lines(caplog, target) == 0  # not vacuous: nothing logged while the streams run

    for client in clients:
        await client.leave(leave)
    # Nothing is published meanwhile: only the clients' leaving can end the streams.
    await wait_until(
        lambda: access_lines(caplog, target) == CAP,
        timeout=RELEASE_S,
        what=lambda: (
            f"the access lines of {CAP} streams of {route} whose clients left ({leave}): "
            f"{access_lines(caplog, target)} written, {len(coral.app[STREAMS])} streams open"
        ),
    )
    await wait_until(lambda: len(coral.app[STREAMS]) == 0, timeout=RELEASE_S, what="every place freed")

    again = [await Client.open(coral, target) for _ in range(CAP)]
    assert [c.status for c in again] == [expected] * CAP
    for client in again:
        await client.leave("eof")


async def test_a_stream_that_its_session_ended_is_logged_once_its_client_leaves(
    coral: Coral, caplog: pytest.LogCaptureFixture
) -> None:
    ns, sid = await coral.create_session(session_body([agent_spec("me", runtime="external")]))
    target = f"/ws/v1/events/{ns}/{sid}?token={KEY}"
    async with coral.http.ws_connect(coral.base_url.replace("http", "ws") + target) as ws:
        assert (await ws.receive_json(timeout=WAIT_S))["type"] == "snapshot"
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        async with asyncio.timeout(WAIT_S):
            while (await ws.receive_json())["type"] != "session_closed":
                pass
    await wait_until(lambda: access_lines(caplog, target) == 1, timeout=RELEASE_S, what="its access line")
    assert len(coral.app[STREAMS]) == 0
