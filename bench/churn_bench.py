# ruff: noqa: ASYNC110  (a benchmark driver: blocking calls and polling are fine here)
"""Create/DELETE churn: many workers create a session of echo agents and delete it at once, for a while.

Prints the errors (answers other than 200, requests that failed), the processes left running once every
session is gone (agents, their children, orphans of a dead zygote: every process that carries this
run's marker in its environment, other than the server and its zygote), zygote restarts, and the
server's open fds and RSS after a warm-up vs after the run.
Run: python bench/churn_bench.py [--workers 50] [--duration 60] [--agents 2] [--max-delay-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from startup_bench import start_server, stop_server

MARKER = "CORAL_CHURN_BENCH"


def body(agents: int, namespace: str) -> dict[str, Any]:
    names = [f"echo-{i}" for i in range(agents)]
    return {
        "agentGraphRequest": {
            "agents": [
                {"id": {"name": "echo", "version": "0.1.0"}, "name": n, "provider": {"runtime": "executable"}}
                for n in names
            ],
            "groups": [names],
        },
        "namespaceProvider": {"type": "create_if_not_exists", "namespaceRequest": {"name": namespace}},
    }


def marked(marker: str) -> set[int]:
    """Live processes started with this run's marker in their environment (zombies have none)."""
    needle = f"{MARKER}={marker}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        found.add(int(entry))
            except OSError:
                continue
    return found


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(") ", 1)[1].split()[1])


def zygotes(server: int, marker: str) -> set[int]:
    found = set()
    for pid in marked(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"coral_server.runtimes.zygote" in f.read() and parent_of(pid) == server:
                    found.add(pid)
        except OSError:
            continue
    return found


def fds_and_rss(pid: int) -> tuple[int, int]:
    """The server's open file descriptors and resident memory (KB)."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return len(os.listdir(f"/proc/{pid}/fd")), rss


async def wait_connected(http: aiohttp.ClientSession, url: str, ns: str, sid: str) -> None:
    async with asyncio.timeout(120):
        while True:
            async with http.get(f"{url}/api/v1/session/{ns}/{sid}") as resp:
                state = await resp.json()
            if all(a["isConnected"] for a in state["agents"]):
                return
            await asyncio.sleep(0.1)


async def no_sessions(http: aiohttp.ClientSession, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{url}/api/v1/session") as resp:
            if not await resp.json():
                return True
        await asyncio.sleep(0.1)
    return False


async def churn(args: argparse.Namespace) -> None:
    marker = uuid.uuid4().hex
    os.environ[MARKER] = marker  # the server inherits it, and so do its zygote and its agents
    with tempfile.TemporaryDirectory(prefix="coral-churn-") as tmp:
        proc, url = await start_server(tmp)
        try:
            # One connection for the readings, another pool for the workers (closed before the last one).
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
                await run(args, http, url, proc.pid, marker)
        finally:
            stop_server(proc)
            log = (Path(tmp) / "server.log").read_text()
            warnings = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
            print(f"server log lines at WARNING or above: {len(warnings)}")
            for line in Counter(re.sub(r"[0-9a-f-]{36}|\d+", "N", w)[:160] for w in warnings).most_common(8):
                print(f"  {line[1]:5d} x {line[0]}")
            left = marked(marker)
            if left:
                print(f"processes still running after the server stopped: {len(left)}")


async def run(
    args: argparse.Namespace, http: aiohttp.ClientSession, url: str, server: int, marker: str
) -> None:
    # Warm-up: the zygote is started and the server has served a session before the first reading.
    async with http.post(f"{url}/api/v1/local/session", json=body(args.agents, "warmup")) as resp:
        created = await resp.json()
    await wait_connected(http, url, created["namespace"], created["sessionId"])
    async with http.delete(f"{url}/api/v1/session/{created['namespace']}/{created['sessionId']}"):
        pass
    await no_sessions(http, url, 30)
    first_zygotes = zygotes(server, marker)
    fds0, rss0 = fds_and_rss(server)

    errors: Counter[str] = Counter()
    cycles = 0
    stop_at = time.monotonic() + args.duration

    async def worker(http: aiohttp.ClientSession, n: int) -> None:
        nonlocal cycles
        rng = random.Random(n)
        while time.monotonic() < stop_at:
            try:
                async with http.post(f"{url}/api/v1/local/session", json=body(args.agents, f"w{n}")) as resp:
                    out = await resp.json()
                    if resp.status != 200:
                        errors[f"create {resp.status}: {str(out)[:80]}"] += 1
                        continue
                # Deleted at once, or while its agents start and connect.
                await asyncio.sleep(rng.uniform(0, args.max_delay_ms / 1000))
                async with http.delete(f"{url}/api/v1/session/{out['namespace']}/{out['sessionId']}") as resp:
                    if resp.status != 200:
                        errors[f"delete {resp.status}"] += 1
                        continue
                cycles += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[f"{type(exc).__name__}: {exc}"[:100]] += 1

    async def halfway() -> int:
        """RSS half-way through: growth that goes on in the second half is what would be a leak."""
        await asyncio.sleep(args.duration / 2)
        return fds_and_rss(server)[1]

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.workers)) as workers:
        half = asyncio.create_task(halfway())
        await asyncio.gather(*(worker(workers, n) for n in range(args.workers)))
        rss_half = await half
    elapsed = time.monotonic() - started
    drained = await no_sessions(http, url, 60)
    # Agents stopping after the last DELETE answered get a moment to be reaped.
    deadline = time.monotonic() + 15
    while (leaked := marked(marker) - {server} - zygotes(server, marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    # The workers' connections are closed; the server drops them as it reads their end.
    deadline = time.monotonic() + 5
    while (reading := fds_and_rss(server))[0] > fds0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    fds1, rss1 = reading
    last_zygotes = zygotes(server, marker)

    print(f"churn: {args.workers} workers x {elapsed:.0f} s, sessions of {args.agents} echo agents")
    print(f"  sessions created and deleted: {cycles} ({cycles / elapsed:.1f}/s)")
    print(f"  errors: {sum(errors.values())}")
    for what, count in errors.most_common(10):
        print(f"    {count:5d} x {what}")
    print(f"  sessions left: {'none' if drained else 'some (not drained within 60 s)'}")
    print(f"  leaked processes: {len(leaked)}" + (f" (pids {sorted(leaked)[:10]})" if leaked else ""))
    restarts = "none" if last_zygotes == first_zygotes else f"pids {first_zygotes} -> {last_zygotes}"
    print(
        f"  zygote restarts: {restarts if first_zygotes else '(no zygote: python agents started directly)'}"
    )
    print(f"  server fds: {fds0} -> {fds1} ({fds1 - fds0:+d})")
    print(
        f"  server RSS: {rss0 / 1024:.1f} MB -> {rss_half / 1024:.1f} MB half-way -> {rss1 / 1024:.1f} MB"
        f" ({(rss1 - rss0) / 1024:+.1f} MB; second half {(rss1 - rss_half) / 1024:+.1f} MB)"
    )
    print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=50, help="concurrent create/delete loops (50)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of churn (60)")
    parser.add_argument("--agents", type=int, default=2, help="echo agents per session (2)")
    parser.add_argument(
        "--max-delay-ms",
        type=float,
        default=200,
        help="each DELETE waits 0..this long after its create (200)",
    )
    asyncio.run(churn(parser.parse_args()))


if __name__ == "__main__":
    main()
