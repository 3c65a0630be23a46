"""Slowloris: N connections that send half their headers, or their body, at one byte a second.

Prints how many the server still holds as time goes on (by the client's view of each socket, read with
TCP_INFO), what it answered, the server's open fds, and how long a normal request takes meanwhile.
Run: python bench/slowloris_bench.py [--clients 600] [--watch-s 45]
Server settings come from the environment (e.g. CORAL_SERVER_HEADER_TIMEOUT_S=5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import tempfile
import time
from collections import Counter

import aiohttp
from churn_bench import fds_and_rss
from startup_bench import start_server, stop_server

TCP_ESTABLISHED = 1


def established(sock: socket.socket) -> bool:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return struct.unpack("B", info[:1])[0] == TCP_ESTABLISHED


async def slow(host: str, port: int, kind: str, answers: Counter[str], socks: list[socket.socket]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    socks.append(writer.get_extra_info("socket"))
    if kind == "headers":
        writer.write(b"GET /api/v1/session HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    else:
        writer.write(b"POST /api/v1/local/session HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(1)
                writer.write(b"a")
                await writer.drain()

    task = asyncio.create_task(dribble())
    try:
        status_line = (await reader.read(200)).split(b"\r\n")[0].decode() or "closed"
        answers[f"{kind}: {status_line}"] += 1
    except ConnectionError:
        answers[f"{kind}: reset"] += 1
    finally:
        task.cancel()
        writer.close()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="coral-slowloris-") as tmp:
        proc, url = await start_server(tmp)
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        try:
            fds0 = fds_and_rss(proc.pid)[0]
            answers: Counter[str] = Counter()
            socks: list[socket.socket] = []
            started = time.monotonic()
            tasks = [
                asyncio.create_task(slow(host, int(port), "headers" if i % 2 else "body", answers, socks))
                for i in range(args.clients)
            ]
            slowest = 0.0
            async with aiohttp.ClientSession() as http:
                for second in range(1, int(args.watch_s) + 1):
                    await asyncio.sleep(max(0.0, started + second - time.monotonic()))
                    t = time.monotonic()
                    async with http.get(f"{url}/api/v1/session") as resp:
                        await resp.read()
                    slowest = max(slowest, time.monotonic() - t)
                    if second % 5 == 0:
                        held = sum(established(s) for s in socks if s.fileno() != -1)
                        fds = fds_and_rss(proc.pid)[0]
                        print(
                            f"  {second:3d} s: {held} of {args.clients} held, server fds {fds} (from {fds0})"
                        )
                        if not held and all(t.done() for t in tasks):
                            break
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            print(f"answers: {dict(answers)}")
            print(f"slowest normal request meanwhile: {slowest * 1000:.0f} ms")
        finally:
            stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=600)
    parser.add_argument("--watch-s", type=float, default=45.0)
    args = parser.parse_args()
    print(f"slowloris: {args.clients} connections, half headers, half bodies, a byte a second")
    asyncio.run(run(args))


if __name__ == "__main__":
    os.environ.setdefault("CORAL_SERVER_LOG_LEVEL", "WARNING")
    main()
