"""Large sessions: what an oversized request costs, and whether reading a big state holds up the server.

Three sessions of `external` agents on a server in its own process:
  * oversized: 3,000 agents in one group (a request of about 400 KB) - refused by the size limits, or,
    without them, created: its state's size, the time to create and read it, RSS after its delete;
  * largest allowed by default: 500 agents in overlapping groups of 200;
  * many messages: 2 agents, M messages (sent over the puppet API).
For each read: how long the GET of the state takes and, meanwhile, the slowest answer to a small
request on another connection (how long the server was held up).
Run: python bench/state_bench.py [--messages 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any

import aiohttp
from churn_bench import fds_and_rss
from startup_bench import start_server, stop_server


def body(names: list[str], groups: list[list[str]]) -> dict[str, Any]:
    return {
        "agentGraphRequest": {
            "agents": [
                {"id": {"name": "echo", "version": "0.1.0"}, "name": n, "provider": {"runtime": "external"}}
                for n in names
            ],
            "groups": groups,
        },
        "namespaceProvider": {"type": "create_if_not_exists", "namespaceRequest": {"name": "bench"}},
    }


async def read_state(http: aiohttp.ClientSession, ping: aiohttp.ClientSession, url: str) -> str:
    """GET the state a few times while another connection pings; the times and the slowest ping."""
    slowest = 0.0
    stop = asyncio.Event()

    async def pinger() -> None:
        nonlocal slowest
        while not stop.is_set():
            started = time.monotonic()
            async with ping.get(url.split("/api/")[0] + "/api/v1/registry") as resp:
                await resp.read()
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(pinger())
    await asyncio.sleep(0.2)
    slowest = 0.0
    times, size = [], 0
    for _ in range(3):
        started = time.monotonic()
        async with http.get(url) as resp:
            size = len(await resp.read())
        times.append(time.monotonic() - started)
    stop.set()
    await task
    return (
        f"state {size / 1e6:.1f} MB, GET {min(times):.2f}-{max(times):.2f} s, "
        f"slowest small request meanwhile {slowest * 1000:.0f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="coral-state-") as tmp:
        proc, url = await start_server(tmp)
        try:
            async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as ping:
                rss0 = fds_and_rss(proc.pid)[1]
                names = [f"a{i}" for i in range(3000)]
                started = time.monotonic()
                async with http.post(f"{url}/api/v1/local/session", json=body(names, [names])) as resp:
                    out = await resp.json()
                    status = resp.status
                took = time.monotonic() - started
                print(f"oversized (3,000 agents in one group): {status} in {took:.2f} s")
                if status != 200:
                    print(f"  {out['errors'][:3]}")
                else:
                    state_url = f"{url}/api/v1/session/{out['namespace']}/{out['sessionId']}"
                    print(f"  {await read_state(http, ping, state_url)}")
                    rss1 = fds_and_rss(proc.pid)[1]
                    async with http.delete(state_url):
                        pass
                    await asyncio.sleep(2)
                    print(
                        f"  server RSS {rss0 // 1024} MB before, {rss1 // 1024} MB with it, "
                        f"{fds_and_rss(proc.pid)[1] // 1024} MB after its delete"
                    )

                names = [f"a{i}" for i in range(500)]
                groups = [names[i : i + 200] for i in range(0, 301, 100)]
                async with http.post(f"{url}/api/v1/local/session", json=body(names, groups)) as resp:
                    out = await resp.json()
                    assert resp.status == 200, out
                state_url = f"{url}/api/v1/session/{out['namespace']}/{out['sessionId']}"
                largest = await read_state(http, ping, state_url)
                print(f"largest by default (500 agents, groups of 200): {largest}")
                rss1 = fds_and_rss(proc.pid)[1]
                async with http.delete(state_url):
                    pass
                await asyncio.sleep(2)
                print(
                    f"  server RSS {rss0 // 1024} MB at start, {rss1 // 1024} MB with it, "
                    f"{fds_and_rss(proc.pid)[1] // 1024} MB after its delete"
                )

                async with http.post(
                    f"{url}/api/v1/local/session", json=body(["me", "you"], [["me", "you"]])
                ) as r:
                    out = await r.json()
                ns, sid = out["namespace"], out["sessionId"]
                puppet = f"{url}/api/v1/puppet/{ns}/{sid}/me"
                async with http.post(
                    f"{puppet}/thread", json={"threadName": "t", "participantNames": ["you"]}
                ) as r:
                    thread = (await r.json())["thread"]["id"]
                sem = asyncio.Semaphore(20)

                async def say(i: int) -> None:
                    async with sem:
                        message = {
                            "threadId": thread,
                            "content": f"{i} " + "hello " * 40,
                            "mentions": ["you"],
                        }
                        async with http.post(f"{puppet}/thread/message", json=message) as r:
                            assert r.status == 200

                await asyncio.gather(*(say(i) for i in range(args.messages)))
                state_url = f"{url}/api/v1/session/{ns}/{sid}"
                print(f"{args.messages} messages: {await read_state(http, ping, state_url)}")
        finally:
            stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    os.environ.setdefault("CORAL_SERVER_LOG_LEVEL", "WARNING")
    main()
