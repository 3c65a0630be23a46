# ruff: noqa: ASYNC220, ASYNC230  (a benchmark driver: blocking calls are fine here)
"""Time from session creation to "all agents connected", for local-process and Docker agents.

Each row sits beside its floor, measured in the same run: the same number of bare clients (a plain
`python` process, or a plain `docker run` of the same image), all started at once, that import the
MCP SDK and connect to external agents of a session.
Run: python bench/startup_bench.py [--quick] [--no-docker] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

IMAGE = "coral-agents:0.1.0"
CONNECT = (
    "import asyncio, os\n"
    "from mcp import ClientSession\n"
    "from mcp.client.streamable_http import streamable_http_client\n"
    "async def main():\n"
    "    async with streamable_http_client(os.environ['URL']) as (r, w), ClientSession(r, w) as s:\n"
    "        await s.initialize()\n"
    "        await asyncio.sleep(30)\n"
    "asyncio.run(main())\n"
)


async def start_server(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    # The server's log goes to a file: an undrained pipe would block the server once full.
    log_path = Path(data_dir) / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the server's lifetime
    level = os.environ.get("CORAL_SERVER_LOG_LEVEL", "WARNING")
    cmd = [sys.executable, "-m", "coral_server", "--port", "0", "--data-dir", data_dir, "--log-level", level]
    proc = subprocess.Popen([*cmd, "--docker-network", "host"], stderr=log)
    for _ in range(600):
        found = re.search(r"listening on (http://\S+)", log_path.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + log_path.read_text())
        await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s: the server is gone when this returns."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def body(names: list[str], runtime: str) -> dict[str, Any]:
    return {
        "agentGraphRequest": {
            "agents": [
                {"id": {"name": "echo", "version": "0.1.0"}, "name": n, "provider": {"runtime": runtime}}
                for n in names
            ],
        },
        "namespaceProvider": {"type": "create_if_not_exists", "namespaceRequest": {"name": "bench"}},
    }


FLOOR_LABEL = "coral-bench.floor"


def floor_command(url: str, floor: str, run_id: str) -> list[str]:
    """A bare client: the MCP SDK's import plus one connect, in a plain process or `docker run`."""
    if floor == "docker":
        # The same image and network as the agents' containers, started the way `docker run` does.
        # The label lets each measurement remove its own containers (outside the timing) so none
        # outlives it into the next one.
        return [
            "docker",
            "run",
            "--rm",
            "--pull=never",
            "--network",
            "host",
            "--label",
            f"{FLOOR_LABEL}={run_id}",
            "-e",
            f"URL={url}",
            IMAGE,
            "python",
            "-c",
            CONNECT,
        ]
    return [sys.executable, "-c", CONNECT]


async def remove_floor_containers(run_id: str) -> None:
    listed = await asyncio.to_thread(
        subprocess.run,
        ["docker", "ps", "-aq", "--filter", f"label={FLOOR_LABEL}={run_id}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if ids := listed.stdout.split():
        await asyncio.to_thread(
            subprocess.run, ["docker", "rm", "-f", *ids], capture_output=True, check=False
        )


async def time_until_connected(
    http: aiohttp.ClientSession, base: str, n: int, runtime: str, floor: str
) -> float:
    """Seconds from the session request to every agent connected.

    With `floor` set, the agents are external and `floor` ("python" or "docker") starts bare clients:
    their connection URLs are fetched concurrently, then every client is started at once.
    """
    names = [f"a{i}" for i in range(n)]
    clients: list[subprocess.Popen[bytes]] = []
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    started = time.perf_counter()
    async with http.post(
        base + "/api/v1/local/session", json=body(names, "external" if floor else runtime)
    ) as r:
        sid = (await r.json())["sessionId"]

    async def url_of(name: str) -> str:
        async with http.get(f"{base}/api/v1/local/session/bench/{sid}/agents/{name}/connection") as r:
            return str((await r.json())["connectionUrl"])

    if floor:
        for url in await asyncio.gather(*(url_of(name) for name in names)):
            clients.append(
                subprocess.Popen(
                    floor_command(url, floor, run_id),
                    env={**os.environ, "URL": url},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    try:
        while True:
            async with http.get(f"{base}/api/v1/local/session/bench/{sid}") as r:
                state = await r.json()
            if r.status != 200 or "agents" not in state:
                # The session ended before every agent connected (an agent crashed, say): report it.
                raise RuntimeError(f"session {sid} ended before all agents connected: {r.status} {state}")
            if all(a["isConnected"] for a in state["agents"]):
                return time.perf_counter() - started
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"not connected after 120 s: {state['agents']}")
            await asyncio.sleep(0.005)
    finally:
        # Coral's containers are stopped and removed by the session's deletion; the floor's here.
        async with http.delete(f"{base}/api/v1/local/session/bench/{sid}") as r:
            await r.read()
        for client in clients:
            client.kill()
            await asyncio.to_thread(client.wait)
        if floor == "docker":
            await remove_floor_containers(run_id)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--repeats", type=int, help="measurements per row and side (default 3, quick 1)")
    args = parser.parse_args()
    sizes = [1, 5] if args.quick else [1, 5, 20]
    if os.environ.get("SIZES"):
        sizes = [int(x) for x in os.environ["SIZES"].split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    kinds = [("executable", "python")] + ([] if args.no_docker else [("docker", "docker")])
    print(f"load average at start: {load()} ({os.cpu_count()} CPUs); medians of {repeats} runs per side")
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = await start_server(tmp)
        try:
            async with aiohttp.ClientSession() as http:
                print(
                    f"{'runtime':<11}{'agents':>7}{'coral s':>10}{'floor s':>10}{'ratio':>8}"
                    f"  {'paired':<13}target <= 1.2x"
                )
                for runtime, floor in kinds:
                    for n in sizes:
                        ours, bare = [], []
                        for i in range(repeats):
                            # Alternate which side goes first: neither always runs right after the
                            # other's teardown.
                            if i % 2 == 0:
                                bare.append(await time_until_connected(http, base, n, runtime, floor))
                                ours.append(await time_until_connected(http, base, n, runtime, ""))
                            else:
                                ours.append(await time_until_connected(http, base, n, runtime, ""))
                                bare.append(await time_until_connected(http, base, n, runtime, floor))
                        o, b = statistics.median(ours), statistics.median(bare)
                        pairs = sorted(x / y for x, y in zip(ours, bare, strict=True))
                        spread = f"{pairs[0]:.2f}-{pairs[-1]:.2f}"
                        verdict = "PASS" if o <= 1.2 * b else "MISS"
                        print(
                            f"{runtime:<11}{n:>7}{o:>10.3f}{b:>10.3f}{o / b:>8.2f}x  {spread:<13}{verdict}",
                            flush=True,
                        )
        finally:
            await asyncio.to_thread(stop_server, proc)
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    asyncio.run(main())
