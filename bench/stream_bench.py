# ruff: noqa: ASYNC110  (a benchmark driver: blocking calls are fine here)
"""Event clients that stop reading: N raw SSE sockets that never read, then M messages in their session.

Prints how many of the N streams the server dropped (and how fast), how many it still held once the
session was deleted, and the server's RSS and open fds before, at the peak and after. A socket's state
is read with TCP_INFO (never by reading it, which would make it a reading client).
Run: python bench/stream_bench.py [--clients 50] [--messages 12000] [--size 200] [--after-s 30]
Server settings come from the environment (e.g. CORAL_SERVER_STREAM_WRITE_TIMEOUT_S=2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from churn_bench import fds_and_rss
from startup_bench import start_server, stop_server

TCP_ESTABLISHED = 1


def established(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (no FIN or RST from it), without reading."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return struct.unpack("B", info[:1])[0] == TCP_ESTABLISHED


def open_stream(host: str, port: int, path: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: it fills fast
    sock.connect((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def body() -> dict[str, Any]:
    agents = [
        {"id": {"name": "echo", "version": "0.1.0"}, "name": n, "provider": {"runtime": "external"}}
        for n in ("me", "you")
    ]
    return {
        "agentGraphRequest": {"agents": agents, "groups": [["me", "you"]]},
        "namespaceProvider": {"type": "create_if_not_exists", "namespaceRequest": {"name": "bench"}},
    }


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="coral-streams-") as tmp:
        proc, url = await start_server(tmp)
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        socks: list[socket.socket] = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/api/v1/local/session", json=body()) as resp:
                    created = await resp.json()
                ns, sid = created["namespace"], created["sessionId"]
                puppet = f"{url}/api/v1/puppet/{ns}/{sid}/me"
                async with http.post(
                    f"{puppet}/thread", json={"threadName": "t", "participantNames": ["you"]}
                ) as r:
                    thread = (await r.json())["thread"]["id"]
                fds0, rss0 = fds_and_rss(proc.pid)
                refused = 0
                for _ in range(args.clients):
                    sock = open_stream(host, int(port), f"/api/v1/events/{ns}/{sid}")
                    socks.append(sock)
                await asyncio.sleep(0.5)
                refused = sum(not established(s) for s in socks)
                content = "x" * args.size
                started = time.monotonic()
                sem = asyncio.Semaphore(20)
                peak_rss = rss0

                async def send(i: int) -> None:
                    nonlocal peak_rss
                    async with sem:
                        message = {"threadId": thread, "content": f"{i} {content}", "mentions": ["you"]}
                        async with http.post(f"{puppet}/thread/message", json=message) as r:
                            assert r.status == 200, await r.text()
                        if i % 500 == 0:
                            peak_rss = max(peak_rss, fds_and_rss(proc.pid)[1])

                dropped_at: dict[int, tuple[float, int]] = {}  # socket -> (seconds in, messages sent by then)
                done = 0

                async def watch() -> None:
                    while True:
                        for n, sock in enumerate(socks):
                            if n not in dropped_at and not established(sock):
                                dropped_at[n] = (time.monotonic() - started, done)
                        await asyncio.sleep(0.1)

                async def counted(i: int) -> None:
                    nonlocal done
                    await send(i)
                    done += 1

                watcher = asyncio.create_task(watch())
                await asyncio.gather(*(counted(i) for i in range(args.messages)))
                sent_s = time.monotonic() - started
                # Every stream the server means to drop is dropped within its write timeout.
                deadline = time.monotonic() + args.settle_s
                while any(established(s) for s in socks) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                watcher.cancel()
                dropped = sum(not established(s) for s in socks) - refused
                times = sorted(at for at, _ in dropped_at.values())
                counts = sorted(n for _, n in dropped_at.values())
                fds1, rss1 = fds_and_rss(proc.pid)
                async with http.delete(f"{url}/api/v1/session/{ns}/{sid}"):
                    pass
                deleted = time.monotonic()
                while any(established(s) for s in socks) and time.monotonic() < deleted + args.after_s:
                    await asyncio.sleep(0.1)
                held = sum(established(s) for s in socks)
                fds2, rss2 = fds_and_rss(proc.pid)
            print(
                f"streams: {args.clients} non-reading SSE clients, {args.messages} messages of {args.size} B"
            )
            print(f"  refused at open (stream cap): {refused}")
            print(f"  messages sent in {sent_s:.1f} s")
            print(f"  dropped by the server: {dropped} of {args.clients - refused}")
            if times:
                print(
                    f"    when: {times[0]:.1f}-{times[-1]:.1f} s into the messages, after "
                    f"{counts[0]}-{counts[-1]} of them had been sent"
                )
            print(f"  still held {time.monotonic() - deleted:.1f} s after the session was deleted: {held}")
            print(f"  server fds: {fds0} before, {fds1} after the messages, {fds2} after the delete")
            print(
                f"  server RSS: {rss0 // 1024} MB before, peak {peak_rss // 1024} MB, "
                f"{rss1 // 1024} MB after the messages, {rss2 // 1024} MB after the delete"
            )
        finally:
            for sock in socks:
                sock.close()
            stop_server(proc)
            log = (Path(tmp) / "server.log").read_text().splitlines()
            errors = [line for line in log if " ERROR " in line]
            print(f"  server log lines at ERROR: {len(errors)}")
            for line in errors[:5]:
                print(f"    {line[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=12_000)
    parser.add_argument("--size", type=int, default=200, help="bytes of each message's content")
    parser.add_argument("--settle-s", type=float, default=30.0, help="how long to wait for the drops")
    parser.add_argument("--after-s", type=float, default=30.0, help="how long to watch after the delete")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    os.environ.setdefault("CORAL_SERVER_LOG_LEVEL", "WARNING")
    main()
