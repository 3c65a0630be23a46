"""Event streams under abuse: clients that stop reading are dropped, streams end with their session,
and each client may hold only so many (raw sockets that never read, a real server)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coral_server.api.events import STREAMS
from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until

TCP_ESTABLISHED = 1
WRITE_TIMEOUT_S = 0.5
BIG = "x" * 32_000  # one message event fills a small receive window at once
FILL = 100  # messages of BIG: 3 MB, several times what a silent client's socket and buffers hold


def ext(name: str) -> dict[str, Any]:
    return agent_spec(name, runtime="external")


@pytest.fixture
async def coral(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(
        tmp_path, stream_write_timeout_s=WRITE_TIMEOUT_S, max_streams_per_client=60
    ):
        yield server


def held(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (no FIN or RST from it), read without reading."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return struct.unpack("B", info[:1])[0] == TCP_ESTABLISHED


@contextmanager
def silent_clients(coral: Coral, paths: list[str], websocket: bool = False) -> Iterator[list[socket.socket]]:
    """Raw sockets that ask for an event stream and then never read a byte."""
    host, port = coral.base_url.removeprefix("http://").split(":")
    socks: list[socket.socket] = []
    try:
        for path in paths:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
            if websocket:
                key = base64.b64encode(os.urandom(16)).decode()
                head += (
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                )
            sock.sendall((head + "\r\n").encode())
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def thread_of(coral: Coral, puppet: str) -> str:
    status, thread = await coral.request(
        "POST", f"{puppet}/thread", {"threadName": "t", "participantNames": ["you"]}
    )
    assert status == 200, thread
    return str(thread["thread"]["id"])


async def say(coral: Coral, puppet: str, thread: str, text: str) -> None:
    status, out = await coral.request(
        "POST", f"{puppet}/thread/message", {"threadId": thread, "content": text, "mentions": ["you"]}
    )
    assert status == 200, out


async def streams_open(coral: Coral, count: int) -> None:
    await wait_until(lambda: len(coral.app[STREAMS]) == count, what=f"{count} streams open")


@pytest.mark.parametrize("websocket", [False, True], ids=["sse", "websocket"])
async def test_clients_that_stop_reading_are_dropped_and_readers_get_everything(
    coral: Coral, websocket: bool
) -> None:
    ns, sid = await coral.create_session(session_body([ext("me"), ext("you")]))
    puppet = f"/api/v1/puppet/{ns}/{sid}/me"
    thread = await thread_of(coral, puppet)
    route = f"/ws/v1/events/{ns}/{sid}" if websocket else f"/api/v1/events/{ns}/{sid}"
    got: list[dict[str, Any]] = []
    async with coral.http.ws_connect(
        coral.base_url.replace("http", "ws") + f"/ws/v1/events/{ns}/{sid}"
    ) as reader:
        with silent_clients(coral, [route] * 20, websocket=websocket) as socks:
            await streams_open(coral, 21)

            async def read() -> None:
                async for msg in reader:
                    got.append(msg.json())

            reading = asyncio.create_task(read())
            for sent in range(FILL):
                await say(coral, puppet, thread, f"{sent} {BIG}")
            await wait_until(
                lambda: not any(held(s) for s in socks),
                what=lambda: (
                    f"{sum(held(s) for s in socks)} silent clients still held "
                    f"({len(coral.app[STREAMS])} streams open on the server)"
                ),
            )
            await streams_open(coral, 1)  # only the reader's is left
            assert coral.app[STREAMS].per_client == 60
            await wait_until(
                lambda: sum(e["type"] == "thread_message_sent" for e in got) == FILL, what="all read"
            )
            assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
            await asyncio.wait_for(reading, 10)
    assert got[-1]["type"] == "session_closed"
    assert [e["seq"] for e in got[1:]] == list(range(got[0]["seq"] + 1, got[-1]["seq"] + 1))


async def test_a_silent_client_is_let_go_when_its_session_ends(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("me"), ext("you")]))
    puppet = f"/api/v1/puppet/{ns}/{sid}/me"
    thread = await thread_of(coral, puppet)
    # Enough to fill the socket, yet each write finds room within the timeout, until the end.
    with silent_clients(coral, [f"/api/v1/events/{ns}/{sid}"]) as (sock,):
        await streams_open(coral, 1)
        await say(coral, puppet, thread, BIG)
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        loop = asyncio.get_running_loop()
        ended = loop.time()
        await wait_until(lambda: not held(sock), what="the stream let go")
        await streams_open(coral, 0)
        assert loop.time() - ended < WRITE_TIMEOUT_S + 5


async def test_streams_per_client_are_capped(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, max_streams_per_client=2):
        ns, sid = await coral.create_session(session_body([ext("me")]))
        url = f"{coral.base_url}/api/v1/events/{ns}/{sid}"
        first, second = await coral.http.get(url), await coral.http.get(url)
        assert (first.status, second.status) == (200, 200)
        async with coral.http.get(url) as third:
            assert third.status == 429
            assert third.headers["Retry-After"] == "5"
            assert "max_streams_per_client" in (await third.json())["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await coral.http.ws_connect(coral.base_url.replace("http", "ws") + f"/ws/v1/events/{ns}/{sid}")
        assert info.value.status == 429
        first.close()  # a stream that ends frees its place
        await streams_open(coral, 1)
        async with coral.http.get(url) as again:
            assert again.status == 200
        second.close()


async def test_streams_are_counted_per_key(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, max_streams_per_client=1, auth_keys=("k1", "k2")):
        ns, sid = await coral.create_session(session_body([ext("me")]))
        url = f"{coral.base_url}/api/v1/events/{ns}/{sid}"
        one = await coral.http.get(url, headers={"Authorization": "Bearer k1"})
        two = await coral.http.get(url, headers={"Authorization": "Bearer k2"})
        assert (one.status, two.status) == (200, 200)
        async with coral.http.get(url, headers={"Authorization": "Bearer k1"}) as again:
            assert again.status == 429
        # ?token= on a WebSocket is the same key.
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await coral.http.ws_connect(
                coral.base_url.replace("http", "ws") + f"/ws/v1/events/{ns}/{sid}?token=k2"
            )
        assert info.value.status == 429
        one.close()
        two.close()
