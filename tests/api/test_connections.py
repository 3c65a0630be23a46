"""Slow and greedy clients on a real server: header and body deadlines, the connection cap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coral_server.app import CONNECTIONS
from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until

TIMEOUT_S = 2.0  # generous: a loaded 2-core machine must not turn a prompt request into a 408
DRIBBLE_S = 0.1  # a slow client's pace: a byte this often, for ever


@pytest.fixture
async def coral(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S):
        yield server


async def connect(coral: Coral) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = coral.base_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def slow_client(coral: Coral, head: bytes, tail: bytes) -> bytes:
    """Send `head` at once, then `tail` a byte at a time (slowloris) until the server hangs up; what
    the server answered."""
    reader, writer = await connect(coral)
    writer.write(head)

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(len(tail)):
                await asyncio.sleep(DRIBBLE_S)
                writer.write(tail[i : i + 1])
                await writer.drain()

    sending = asyncio.create_task(dribble())
    try:
        return await answer_then_close(reader, 10)
    finally:
        sending.cancel()
        writer.close()


async def open_connections(coral: Coral, count: int) -> None:
    await wait_until(lambda: len(coral.app[CONNECTIONS]) == count, what=f"{count} connections open")


async def answer_then_close(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """What the server sends until it closes the connection (ConnectionReset counts as closed)."""
    data = b""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def test_slowloris_headers_and_bodies_are_cut_off(coral: Coral) -> None:
    loop = asyncio.get_running_loop()
    baseline = len(coral.app[CONNECTIONS])
    headers = b"GET /api/v1/session HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    body_head = b"POST /api/v1/local/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    body = b'{"agentGraphRequest": ' + b" " * 1000 + b"}"
    body_head += b"Content-Length: %d\r\n\r\n{" % len(body)
    started = loop.time()
    clients = [
        asyncio.create_task(slow_client(coral, headers if i % 2 else body_head, b"b" * 1000))
        for i in range(200)
    ]
    # The server stays responsive meanwhile.
    assert (await coral.request("GET", "/api/v1/session"))[0] == 200
    answers = await asyncio.gather(*clients)
    elapsed = loop.time() - started
    for i, answer in enumerate(answers):
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:200]
        if not i % 2:
            assert b"body_timeout_s" in answer  # the body's deadline, in the usual error body
    assert elapsed < 10 * TIMEOUT_S + 3
    await wait_until(lambda: len(coral.app[CONNECTIONS]) <= baseline, what="connections released")


async def test_a_connection_that_sends_nothing_is_closed(coral: Coral) -> None:
    reader, writer = await connect(coral)
    assert (await answer_then_close(reader, 5)).startswith(b"HTTP/1.1 408")
    writer.close()


async def test_slow_answers_and_long_streams_are_not_timeouts(coral: Coral) -> None:
    """The deadlines are for what the client sends: a long stream, keep-alive reuse and a body sent in
    time all go on past them."""
    ns, sid = await coral.create_session(session_body([agent_spec("me", runtime="external")]))
    async with coral.http.get(f"{coral.base_url}/api/v1/events/{ns}/{sid}") as stream:
        assert stream.status == 200
        await stream.content.readuntil(b"\n\n")  # the snapshot
        for _ in range(3):  # the same keep-alive connection, well past the header timeout in all
            await asyncio.sleep(TIMEOUT_S / 2)
            assert (await coral.request("GET", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        # A body in two parts, the second well within the deadline.
        reader, writer = await connect(coral)
        payload = b'{"threadName": "t"}'
        writer.write(
            b"POST /api/v1/puppet/%s/%s/me/thread HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (ns.encode(), sid.encode(), len(payload), payload[:5])
        )
        await asyncio.sleep(TIMEOUT_S / 5)
        writer.write(payload[5:])
        assert (await answer_then_close(reader, 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        # The stream outlived every deadline and still delivers.
        assert not stream.content.at_eof()
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        assert b"session_closed" in await asyncio.wait_for(stream.content.read(), 10)


async def test_connections_beyond_the_cap_get_a_503(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, max_connections=5):
        await coral.request("GET", "/api/v1/session")  # the client's pooled connection: 1
        idle = [await connect(coral) for _ in range(4)]
        await open_connections(coral, 5)
        reader, writer = await connect(coral)
        answer = await answer_then_close(reader, 5)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
        assert b"Retry-After: 1" in answer and b"max_connections" in answer
        writer.close()
        idle[0][1].close()  # one leaves: there is room again
        await open_connections(coral, 4)  # a place freed
        assert (await coral.request("GET", "/api/v1/session"))[0] == 200
        for _, w in idle[1:]:
            w.close()
