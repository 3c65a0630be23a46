"""Benchmark coral_server's agent-facing MCP endpoint against floors measured in the same run.

    /work/venv/bin/python bench/mcp_bench.py [--quick]

The server runs as its own process (`python -m coral_server`), load generators run in this process and
in spawned worker processes, everything on 127.0.0.1. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson

PROTOCOL_VERSION = "2025-06-18"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ARM_DELAY_S = 0.005  # after the receiver has issued its wait, before the sender starts the clock
PAIR_WINDOW = 4  # messages a sender may be ahead of its receiver in the msgs/s benchmark
GIB_KB = 1024 * 1024
SPAWN = mp.get_context("spawn")


@dataclass(frozen=True)
class Plan:
    floor_calls: int
    tool_calls: int
    mention_rounds: int
    pair_counts: tuple[int, ...]
    warm_s: float
    measure_s: float
    agents: int
    session_size: int
    warmup: int


FULL = Plan(
    floor_calls=3000,
    tool_calls=2000,
    mention_rounds=1000,
    pair_counts=(1, 10, 100),
    warm_s=1.0,
    measure_s=4.0,
    agents=1000,
    session_size=10,
    warmup=100,
)
QUICK = Plan(
    floor_calls=300,
    tool_calls=200,
    mention_rounds=100,
    pair_counts=(1, 10, 100),
    warm_s=0.3,
    measure_s=1.0,
    agents=100,
    session_size=10,
    warmup=20,
)


# -- small helpers ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def ms(ns: float) -> float:
    return ns / 1e6


async def arecv(conn: Connection, timeout: float = 120.0) -> Any:
    """Receive from a multiprocessing pipe without blocking the event loop."""
    loop = asyncio.get_running_loop()
    if not conn.poll():
        ready = loop.create_future()
        fd = conn.fileno()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait_for(ready, timeout)
        finally:
            loop.remove_reader(fd)
    item = conn.recv()
    if isinstance(item, tuple) and item and item[0] == "error":
        raise RuntimeError(f"worker failed: {item[1]}")
    return item


async def sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def own_cpu_between(start_ns: int, end_ns: int) -> float:
    """This process's CPU seconds over [start_ns, end_ns] (monotonic clock)."""
    await sleep_until(start_ns)
    cpu0 = time.process_time()
    await sleep_until(end_ns)
    return time.process_time() - cpu0


# -- processes: the coral server and the echo floor --------------------------------------------------


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], port: int, log: Path | None) -> None:
        self.name, self.popen, self.port, self.log = name, popen, port, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def problems(self) -> list[str]:
        """WARNING/ERROR lines (and tracebacks) the server wrote to stderr."""
        if self.log is None or not self.log.exists():
            return []
        lines = self.log.read_text(errors="replace").splitlines()
        return [ln for ln in lines if "listening on" not in ln and ln.strip()]


def start_coral(workdir: Path, tag: str) -> Proc:
    home = workdir / tag
    home.mkdir(parents=True)
    log = home / "server.log"
    cmd = [sys.executable, "-m", "coral_server", "--port", "0", "--data-dir", str(home / "data")]
    cmd += ["--log-level", "WARNING"]
    with log.open("wb") as err:
        popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=home
        )
    proc = Proc(tag, popen, 0, log)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
            if found:
                proc.port = int(found.group(1))
                return proc
            if popen.poll() is not None:
                raise RuntimeError(f"coral server exited early:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
        raise RuntimeError("coral server did not report its port within 30 s")
    except BaseException:
        proc.stop()
        raise


def start_echo() -> Proc:
    popen = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--echo-server"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    proc = Proc("echo", popen, 0, None)
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline().decode().strip()
        proc.port = int(line)
        return proc
    except BaseException:
        proc.stop()
        raise


def run_echo_server() -> None:
    """The floor: an aiohttp app that parses a JSON body and answers it back."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# -- clients ----------------------------------------------------------------------------------------


class McpError(Exception):
    pass


class RawMcp:
    """A light MCP client: JSON-RPC over plain aiohttp POSTs (the server answers application/json)."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        self._next_id = 0

    async def connect(self) -> None:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcp-bench", "version": "0"},
            },
        }
        async with self.http.post(self.url, data=orjson.dumps(init), headers=self.headers) as resp:
            body = await resp.read()
            sid = resp.headers.get("mcp-session-id")
            if resp.status != 200 or not sid:
                raise McpError(f"initialize: HTTP {resp.status} {body[:200]!r}")
        self.headers = {**self.headers, "mcp-session-id": sid, "mcp-protocol-version": PROTOCOL_VERSION}
        note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        async with self.http.post(self.url, data=note, headers=self.headers) as resp:
            body = await resp.read()
            if resp.status != 202:
                raise McpError(f"notifications/initialized: HTTP {resp.status} {body[:200]!r}")

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request = {
            "jsonrpc": "2.0",
            "id": self._next_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        async with self.http.post(self.url, data=orjson.dumps(request), headers=self.headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise McpError(f"{name}: HTTP {resp.status} {raw[:200]!r}")
        answer = orjson.loads(raw)
        if "error" in answer:
            raise McpError(f"{name}: {answer['error']}")
        result = answer["result"]
        if result.get("isError"):
            raise McpError(f"{name}: {result['content'][0]['text']}")
        structured = result.get("structuredContent")
        return structured if structured is not None else orjson.loads(result["content"][0]["text"])


class SdkMcp:
    """The official MCP SDK client (`streamable_http_client` + `ClientSession`)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self.session.call_tool(name, arguments)
        text = result.content[0].text if result.content else ""
        if result.is_error:
            raise McpError(f"{name}: {text}")
        if result.structured_content is not None:
            return result.structured_content  # type: ignore[no-any-return]
        return orjson.loads(text)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def open_client(kind: str, url: str) -> AsyncIterator[RawMcp | SdkMcp]:
    if kind == "sdk":
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield SdkMcp(session)
    else:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            client = RawMcp(http, url)
            await client.connect()
            yield client


class Api:
    """The few HTTP API calls the benchmark needs."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http, self.base = http, base_url + "/api/v1/local/session"

    async def create(self, names: list[str], groups: list[list[str]] | None = None) -> tuple[str, str]:
        body = {
            "agentGraphRequest": {
                "agents": [
                    {
                        "id": {"name": "echo", "version": "0.1.0", "source": "local"},
                        "name": name,
                        "provider": {"type": "local", "runtime": "external"},
                    }
                    for name in names
                ],
                "groups": groups if groups is not None else [names],
            },
            "namespaceProvider": {
                "type": "create_if_not_exists",
                "namespaceRequest": {"name": "bench", "deleteOnLastSessionExit": False},
            },
            "execution": {"mode": "immediate"},
        }
        async with self.http.post(self.base, json=body) as resp:
            out = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"create session: HTTP {resp.status} {out}")
        return out["namespace"], out["sessionId"]

    async def connection_url(self, ns: str, sid: str, agent: str) -> str:
        async with self.http.get(f"{self.base}/{ns}/{sid}/agents/{agent}/connection") as resp:
            out = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"connection url: HTTP {resp.status} {out}")
        return out["connectionUrl"]  # type: ignore[no-any-return]

    async def state(self, ns: str, sid: str) -> dict[str, Any]:
        async with self.http.get(f"{self.base}/{ns}/{sid}") as resp:
            out = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"state: HTTP {resp.status} {out}")
        return out  # type: ignore[no-any-return]

    async def delete(self, ns: str, sid: str) -> None:
        async with self.http.delete(f"{self.base}/{ns}/{sid}") as resp:
            await resp.read()


@contextlib.asynccontextmanager
async def api_for(server: Proc) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.base_url)


# -- 1. floor: raw aiohttp JSON echo -------------------------------------------------------------------

FLOOR_BODY = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "coral_wait_for_message", "arguments": {"maxWaitMs": 0}},
    }
)


async def bench_floor(echo: Proc, plan: Plan) -> dict[str, float]:
    url = echo.base_url + "/"
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:

        async def one() -> None:
            async with http.post(url, data=FLOOR_BODY, headers=headers) as resp:
                await resp.read()

        for _ in range(plan.warmup):
            await one()
        lat: list[float] = []
        cpu0 = proc_cpu_s(echo.pid)
        for _ in range(plan.floor_calls):
            t0 = time.perf_counter_ns()
            await one()
            lat.append(ms(time.perf_counter_ns() - t0))
        cpu1 = proc_cpu_s(echo.pid)
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "cpu_ms": (cpu1 - cpu0) * 1000 / plan.floor_calls,
    }


# -- 2. one MCP tool call --------------------------------------------------------------------------


async def bench_tool_call(server: Proc, plan: Plan) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    async with api_for(server) as api:
        ns, sid = await api.create(["solo"])
        url = await api.connection_url(ns, sid, "solo")
        for kind in ("sdk", "raw"):
            async with open_client(kind, url) as client:
                for _ in range(plan.warmup):
                    await client.call("coral_wait_for_message", {"maxWaitMs": 0})
                lat: list[float] = []
                cpu0, mine0 = proc_cpu_s(server.pid), time.process_time()
                for _ in range(plan.tool_calls):
                    t0 = time.perf_counter_ns()
                    got = await client.call("coral_wait_for_message", {"maxWaitMs": 0})
                    lat.append(ms(time.perf_counter_ns() - t0))
                    if got.get("status") != "Timeout reached":
                        raise RuntimeError(f"unexpected answer {got}")
                cpu1, mine1 = proc_cpu_s(server.pid), time.process_time()
            out[kind] = {
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "server_cpu_ms": (cpu1 - cpu0) * 1000 / plan.tool_calls,
                "client_cpu_ms": (mine1 - mine0) * 1000 / plan.tool_calls,
            }
        await api.delete(ns, sid)
    return out


# -- 3. mention round trip: A (this process) sends, B (its own process) is blocked in a wait ------------


def mention_receiver(url: str, kind: str, rounds: int, conn: Connection) -> None:
    try:
        asyncio.run(_mention_receiver(url, kind, rounds, conn))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


async def _mention_receiver(url: str, kind: str, rounds: int, conn: Connection) -> None:
    async with open_client(kind, url) as client:
        conn.send("connected")
        ends: list[tuple[int, str]] = []
        for i in range(rounds):
            waiting = asyncio.create_task(client.call("coral_wait_for_mention", {"maxWaitMs": 20_000}))
            await asyncio.sleep(0)  # let the request go out
            conn.send(i)  # armed: the sender waits ARM_DELAY_S more, then starts the clock
            got = await waiting
            end = time.monotonic_ns()
            ends.append((end, got.get("message", {}).get("text", "<timeout>")))
        conn.send(ends)


async def bench_mention(server: Proc, kind: str, plan: Plan) -> dict[str, float]:
    total = plan.warmup + plan.mention_rounds
    async with api_for(server) as api:
        ns, sid = await api.create(["alice", "bob"])
        url_a = await api.connection_url(ns, sid, "alice")
        url_b = await api.connection_url(ns, sid, "bob")
        parent, child = SPAWN.Pipe()
        proc = SPAWN.Process(target=mention_receiver, args=(url_b, kind, total, child), daemon=True)
        proc.start()
        child.close()
        try:
            async with open_client(kind, url_a) as alice:
                created = await alice.call(
                    "coral_create_thread", {"threadName": "rt", "participantNames": ["bob"]}
                )
                thread_id = created["thread"]["id"]
                if await arecv(parent, 60) != "connected":
                    raise RuntimeError("receiver did not connect")
                starts: list[int] = []
                send_lat: list[float] = []
                not_parked = 0
                for i in range(total):
                    if await arecv(parent, 30) != i:
                        raise RuntimeError("receiver out of step")
                    await asyncio.sleep(ARM_DELAY_S)
                    if i < plan.warmup:  # check (only while warming up) that B's wait is parked by now
                        state = await api.state(ns, sid)
                        bob = next(a for a in state["agents"] if a["name"] == "bob")
                        not_parked += not bob["isWaiting"]
                    t0 = time.monotonic_ns()
                    await alice.call(
                        "coral_send_message", {"threadId": thread_id, "content": str(i), "mentions": ["bob"]}
                    )
                    send_lat.append(ms(time.monotonic_ns() - t0))
                    starts.append(t0)
                ends = await arecv(parent, 30)
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
        await api.delete(ns, sid)
    lat = []
    for i in range(plan.warmup, total):
        end, text = ends[i]
        if text != str(i):
            raise RuntimeError(f"round {i}: receiver got {text!r}")
        lat.append(ms(end - starts[i]))
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat),
        "send_p50": pct(send_lat[plan.warmup :], 50),
        "not_parked": not_parked,
    }


# -- 4. messages/s with N agent pairs (raw-HTTP clients in worker processes) ---------------------------


def pairs_worker(pairs: list[tuple[str, str]], window: int, conn: Connection) -> None:
    try:
        asyncio.run(_pairs_worker(pairs, window, conn))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


async def _pairs_worker(pairs: list[tuple[str, str]], window: int, conn: Connection) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        ready: list[tuple[RawMcp, RawMcp, str]] = []
        for url_a, url_b in pairs:
            sender, receiver = RawMcp(http, url_a), RawMcp(http, url_b)
            await sender.connect()
            await receiver.connect()
            created = await sender.call(
                "coral_create_thread", {"threadName": "load", "participantNames": ["receiver"]}
            )
            ready.append((sender, receiver, created["thread"]["id"]))
        conn.send("ready")
        measure_from, measure_to, stop_at = await arecv(conn)
        count = sent = errors = 0
        lat: list[float] = []
        error_samples: list[str] = []

        def failed(exc: Exception) -> bool:
            nonlocal errors
            errors += 1
            if len(error_samples) < 3:
                error_samples.append(repr(exc)[:300])
            return errors > 200

        async def send_loop(client: RawMcp, thread_id: str, slots: asyncio.Semaphore) -> None:
            nonlocal sent
            while time.monotonic_ns() < stop_at:
                await slots.acquire()
                t0 = time.monotonic_ns()
                try:
                    await client.call(
                        "coral_send_message",
                        {"threadId": thread_id, "content": str(t0), "mentions": ["receiver"]},
                    )
                    sent += 1
                except (McpError, aiohttp.ClientError) as exc:
                    slots.release()
                    if failed(exc):
                        return

        async def receive_loop(client: RawMcp, slots: asyncio.Semaphore) -> None:
            nonlocal count
            while True:
                try:
                    got = await client.call("coral_wait_for_mention", {"maxWaitMs": 250})
                except (McpError, aiohttp.ClientError) as exc:
                    if failed(exc):
                        return
                    continue
                now = time.monotonic_ns()
                message = got.get("message")
                if message is None:
                    if now >= stop_at:
                        return
                    continue
                slots.release()
                if measure_from <= now < measure_to:
                    count += 1
                    lat.append(ms(now - int(message["text"])))

        senders, receivers = [], []
        for sender, receiver, thread_id in ready:
            slots = asyncio.Semaphore(window)
            senders.append(asyncio.create_task(send_loop(sender, thread_id, slots)))
            receivers.append(asyncio.create_task(receive_loop(receiver, slots)))
        cpu = asyncio.create_task(own_cpu_between(measure_from, measure_to))
        await asyncio.gather(*receivers)
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        result = {"count": count, "sent": sent, "errors": errors, "lat": lat, "samples": error_samples}
        conn.send({**result, "cpu": await cpu})


def echo_worker(url: str, concurrency: int, conn: Connection) -> None:
    try:
        asyncio.run(_echo_worker(url, concurrency, conn))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


async def _echo_worker(url: str, concurrency: int, conn: Connection) -> None:
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        conn.send("ready")
        measure_from, measure_to, stop_at = await arecv(conn)
        count = 0

        async def loop() -> None:
            nonlocal count
            while time.monotonic_ns() < stop_at:
                async with http.post(url, data=FLOOR_BODY, headers=headers) as resp:
                    await resp.read()
                now = time.monotonic_ns()
                if measure_from <= now < measure_to:
                    count += 1

        cpu = asyncio.create_task(own_cpu_between(measure_from, measure_to))
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        conn.send({"count": count, "sent": count, "errors": 0, "lat": [], "samples": [], "cpu": await cpu})


async def drive_workers(
    target: Callable[..., None], args_per_worker: list[tuple[Any, ...]], pid: int, plan: Plan
) -> tuple[list[dict[str, Any]], float]:
    """Start workers, release them together, measure the target's CPU over the window."""
    procs, pipes = [], []
    try:
        for args in args_per_worker:
            parent, child = SPAWN.Pipe()
            proc = SPAWN.Process(target=target, args=(*args, child), daemon=True)
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        for parent in pipes:
            if await arecv(parent, 120) != "ready":
                raise RuntimeError("worker not ready")
        measure_from = time.monotonic_ns() + int(plan.warm_s * 1e9)
        measure_to = measure_from + int(plan.measure_s * 1e9)
        stop_at = measure_to + 100_000_000
        for parent in pipes:
            parent.send((measure_from, measure_to, stop_at))
        await sleep_until(measure_from)
        cpu0 = proc_cpu_s(pid)
        await sleep_until(measure_to)
        cpu1 = proc_cpu_s(pid)
        results = [await arecv(parent, 60) for parent in pipes]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for parent in pipes:
            parent.close()
    return results, cpu1 - cpu0


async def bench_echo_throughput(echo: Proc, plan: Plan) -> float:
    args = [(echo.base_url + "/", 10), (echo.base_url + "/", 10)]
    results, _ = await drive_workers(echo_worker, args, echo.pid, plan)
    return sum(r["count"] for r in results) / plan.measure_s


async def bench_pairs(server: Proc, n_pairs: int, plan: Plan) -> dict[str, Any]:
    async with api_for(server) as api:
        sessions = [await api.create(["sender", "receiver"]) for _ in range(n_pairs)]
        pairs = [
            (await api.connection_url(ns, sid, "sender"), await api.connection_url(ns, sid, "receiver"))
            for ns, sid in sessions
        ]
        n_workers = min(2, n_pairs)
        args = [(pairs[w::n_workers], PAIR_WINDOW) for w in range(n_workers)]
        results, cpu_s = await drive_workers(pairs_worker, args, server.pid, plan)
        for ns, sid in sessions:
            await api.delete(ns, sid)
    count = sum(r["count"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    return {
        "rate": count / plan.measure_s,
        "server_cpu": cpu_s / plan.measure_s,
        "cpu_per_msg_ms": cpu_s * 1000 / count if count else math.nan,
        "lat_p50": pct(lat, 50),
        "lat_p99": pct(lat, 99),
        "errors": sum(r["errors"] for r in results),
        "samples": [s for r in results for s in r["samples"]],
        "workers": n_workers,
        "client_cpu": sum(r["cpu"] for r in results) / plan.measure_s,
    }


# -- 5. connected agents per GiB ---------------------------------------------------------------------


async def bench_memory(server: Proc, plan: Plan) -> dict[str, Any]:
    async with api_for(server) as api:
        # Warm every code path once so the baseline includes imports and first-use caches.
        ns, sid = await api.create(["warm"])
        async with open_client("raw", await api.connection_url(ns, sid, "warm")) as client:
            await client.call("coral_wait_for_message", {"maxWaitMs": 0})
        await api.delete(ns, sid)
        await asyncio.sleep(0.3)
        rss0 = proc_rss_kb(server.pid)

        names = [f"agent{j}" for j in range(plan.session_size)]
        sessions = [await api.create(names) for _ in range(plan.agents // plan.session_size)]
        n_agents = len(sessions) * len(names)
        await asyncio.sleep(0.3)
        rss1 = proc_rss_kb(server.pid)

        urls = [await api.connection_url(ns, sid, name) for ns, sid in sessions for name in names]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as http:
            clients = [RawMcp(http, url) for url in urls]
            gate = asyncio.Semaphore(50)

            async def connect(client: RawMcp) -> None:
                async with gate:
                    await client.connect()

            t0 = time.perf_counter()
            await asyncio.gather(*(connect(c) for c in clients))
            connect_s = time.perf_counter() - t0
            await asyncio.sleep(0.5)
            rss2 = proc_rss_kb(server.pid)
            connected = 0
            for ns, sid in sessions:
                state = await api.state(ns, sid)
                connected += sum(1 for a in state["agents"] if a["isConnected"])
            # One tool call on a sample of the connected agents, to show the sessions are live.
            sample = clients[:: max(1, len(clients) // 20)]
            live = 0
            for client in sample:
                got = await client.call("coral_wait_for_message", {"maxWaitMs": 0})
                live += got.get("status") == "Timeout reached"
    per_agent_kb = (rss2 - rss0) / n_agents
    return {
        "agents": n_agents,
        "rss0_mb": rss0 / 1024,
        "rss1_mb": rss1 / 1024,
        "rss2_mb": rss2 / 1024,
        "session_kb": (rss1 - rss0) / n_agents,
        "connection_kb": (rss2 - rss1) / n_agents,
        "per_agent_kb": per_agent_kb,
        "per_gib": GIB_KB / per_agent_kb if per_agent_kb > 0 else math.inf,
        "connected": connected,
        "connects_per_s": n_agents / connect_s,
        "live": f"{live}/{len(sample)}",
    }


# -- report -----------------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, what: str, value: str, vs: str = "", target: str = "", verdict: str = "") -> None:
        self.rows.append((what, value, vs, target, verdict))

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", "", "", "", ""))

    def print(self) -> None:
        heads = ("measurement", "value", "vs floor / anchor", "target", "abs / scaled")
        body = [r for r in self.rows if not r[0].startswith("-- ")]
        widths = [max(len(r[i]) for r in [heads, *body]) for i in range(5)]
        line = "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
        print(line.rstrip())
        print("-" * len(line.rstrip()))
        for row in self.rows:
            if row[0].startswith("-- "):
                print(row[0])
                continue
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


ANCHOR_FLOOR_P50_MS = 0.23  # the echo floor in benchmarks.md, where the absolute targets were set
ANCHOR_FLOOR_CPU_MS = 0.08


def judge(value: float, target: float, scale: float, unit: str, higher: bool = False) -> tuple[str, str]:
    """Target text and "absolute / floor-scaled" verdicts; scale = this run's floor / the doc's floor."""
    scaled = target / scale if higher else target * scale
    op = ">=" if higher else "<="
    ok_abs = value >= target if higher else value <= target
    ok_scaled = value >= scaled if higher else value <= scaled
    text = (
        f"{op} {target:,g}{unit} (scaled {scaled:,.2f})"
        if target < 100
        else f"{op} {target:,.0f}{unit} (scaled {scaled:,.0f})"
    )
    return text, f"{verdict(ok_abs)} / {verdict(ok_scaled)}"


def x(value: float, floor: float, label: str) -> str:
    return f"{value / floor:.1f}x {label}" if floor > 0 else "-"


def report(plan: Plan, quick: bool, r: dict[str, Any]) -> None:
    floor = r["floor"]
    lat_scale = floor["p50"] / ANCHOR_FLOOR_P50_MS
    cpu_scale = floor["cpu_ms"] / ANCHOR_FLOOR_CPU_MS
    t = Table()
    t.section("1. floor: raw aiohttp JSON echo server (own process), aiohttp client, concurrency 1")
    t.add("echo POST round trip p50", f"{floor['p50']:.3f} ms", "anchor 0.23 ms")
    t.add("echo POST round trip p99", f"{floor['p99']:.3f} ms")
    t.add("echo server CPU per request", f"{floor['cpu_ms']:.3f} ms", "anchor 0.08 ms")
    if "echo_rps" in r:
        t.add(
            "echo req/s, 2 procs x 10 conc.",
            f"{r['echo_rps']:,.0f}/s",
            f"= {r['echo_rps'] / 2:,.0f} msgs/s at 2 req/msg",
        )

    tc = r["tool"]
    t.section("2. MCP tool call coral_wait_for_message(maxWaitMs=0), concurrency 1")
    sdk, raw = tc["sdk"], tc["raw"]
    t.add(
        "official SDK client p50",
        f"{sdk['p50']:.3f} ms",
        x(sdk["p50"], floor["p50"], "floor p50"),
        *judge(sdk["p50"], 1.0, lat_scale, " ms"),
    )
    t.add(
        "official SDK client p99",
        f"{sdk['p99']:.3f} ms",
        x(sdk["p99"], floor["p99"], "floor p99"),
        *judge(sdk["p99"], 2.0, lat_scale, " ms"),
    )
    t.add(
        "server CPU per call (SDK client)",
        f"{sdk['server_cpu_ms']:.3f} ms",
        x(sdk["server_cpu_ms"], floor["cpu_ms"], "floor CPU") + " (target <= 4x)",
        *judge(sdk["server_cpu_ms"], 0.3, cpu_scale, " ms"),
    )
    t.add(
        "  => server capacity, one core",
        f"{1000 / sdk['server_cpu_ms']:,.0f} calls/s",
        "",
        *judge(1000 / sdk["server_cpu_ms"], 3000, cpu_scale, "/s", higher=True),
    )
    t.add("official SDK client's own CPU/call", f"{sdk['client_cpu_ms']:.3f} ms", "anchor ~1 ms")
    t.add("raw-HTTP client p50", f"{raw['p50']:.3f} ms", x(raw["p50"], floor["p50"], "floor p50"))
    t.add("raw-HTTP client p99", f"{raw['p99']:.3f} ms", x(raw["p99"], floor["p99"], "floor p99"))
    t.add(
        "server CPU per call (raw client)",
        f"{raw['server_cpu_ms']:.3f} ms",
        x(raw["server_cpu_ms"], floor["cpu_ms"], "floor CPU"),
    )

    t.section("3. mention round trip: A sends mentioning B, B's blocked wait returns (A, B in 2 processes)")
    for kind, label in (("sdk", "official SDK"), ("raw", "raw-HTTP")):
        m = r["mention"][kind]
        sdk_row = kind == "sdk"
        t.add(
            f"{label}: mention p50",
            f"{m['p50']:.3f} ms",
            x(m["p50"], floor["p50"], "floor p50") + ("; proto 3.07 ms" if sdk_row else ""),
            *(judge(m["p50"], 2.0, lat_scale, " ms") if sdk_row else ("", "")),
        )
        t.add(
            f"{label}: mention p99",
            f"{m['p99']:.3f} ms",
            x(m["p99"], floor["p99"], "floor p99") + ("; proto 4.88 ms" if sdk_row else ""),
            *(judge(m["p99"], 5.0, lat_scale, " ms") if sdk_row else ("", "")),
        )
        t.add(f"{label}: A's send call p50", f"{m['send_p50']:.3f} ms")

    t.section(f"4. messages/s, N pairs (raw-HTTP clients, window {PAIR_WINDOW}, worker processes)")
    echo_msgs = r.get("echo_rps", 0) / 2
    for n, p in r["pairs"].items():
        target, ok = "", ""
        if n == 10:
            target, ok = judge(p["rate"], 1000, cpu_scale, "/s", higher=True)
        elif n == 100 and 10 in r["pairs"]:
            ten = r["pairs"][10]["rate"]
            target, ok = "flat vs 10 pairs (>= 0.9x)", verdict(p["rate"] >= 0.9 * ten)
        vs = x(p["rate"], echo_msgs, "of echo floor") if echo_msgs else ""
        if n == 1:
            vs += "; agent_mail 5.5/s"
        elif n == 10:
            vs += "; agent_mail 1-1.5/s"
        t.add(f"{n} pair(s): msgs/s ({p['workers']} worker procs)", f"{p['rate']:,.0f}/s", vs, target, ok)
        t.add(
            "  server CPU busy / CPU per msg",
            f"{p['server_cpu'] * 100:.0f}% / {p['cpu_per_msg_ms']:.3f} ms",
            f"load generators' CPU busy {p['client_cpu'] * 100:.0f}% (sum of workers)",
        )
        t.add(
            "  delivery latency p50 / p99",
            f"{p['lat_p50']:.2f} / {p['lat_p99']:.2f} ms",
            "send start -> receiver's wait returns",
        )
        if p["errors"]:
            t.add("  errors", str(p["errors"]), "; ".join(p["samples"])[:100])

    mem = r["memory"]
    t.section(
        f"5. connected agents: {mem['agents']} agents, sessions of {plan.session_size}, raw-HTTP connect"
    )
    t.add(
        "server RSS: idle / sessions / connected",
        f"{mem['rss0_mb']:.1f} / {mem['rss1_mb']:.1f} / {mem['rss2_mb']:.1f} MB",
    )
    t.add(
        "KB per agent: session+agent / MCP conn.",
        f"{mem['session_kb']:.1f} / {mem['connection_kb']:.1f} KB",
        "anchors: bridge ~105, hand-written ~44 KB/MCP session",
    )
    t.add(
        "KB per connected agent (total)",
        f"{mem['per_agent_kb']:.1f} KB",
        "",
        "<= 107 KB (10,000 in 1 GiB)",
        verdict(mem["per_agent_kb"] <= GIB_KB / 10_000),
    )
    t.add(
        "connected agents per GiB",
        f"{mem['per_gib']:,.0f}",
        "",
        ">= 10,000",
        verdict(mem["per_gib"] >= 10_000),
    )
    t.add(
        "isConnected true in state",
        f"{mem['connected']}/{mem['agents']}",
        f"tool call live: {mem['live']}",
        "1,000 in one process" if not quick else "(quick: fewer agents)",
        verdict(mem["connected"] == mem["agents"] and mem["agents"] >= 1000) if not quick else "",
    )
    t.add("connect rate (init + initialized)", f"{mem['connects_per_s']:,.0f} agents/s", "50 concurrent")
    print()
    t.print()
    print(
        f"scaled = target x (this run's floor / the floor where targets were set): latency x{lat_scale:.2f} "
        f"(echo p50 {floor['p50']:.3f} vs {ANCHOR_FLOOR_P50_MS} ms), CPU and throughput x{cpu_scale:.2f} "
        f"(echo CPU {floor['cpu_ms']:.3f} vs {ANCHOR_FLOOR_CPU_MS} ms)"
    )


# -- main -------------------------------------------------------------------------------------------


def run(section: Coroutine[Any, Any, Any], label: str) -> Any:
    t0 = time.perf_counter()
    print(f"  {label} ...", end="", flush=True)
    out = asyncio.run(section)
    print(f" {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test (< 30 s)")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.echo_server:
        run_echo_server()
        return
    plan = QUICK if opts.quick else FULL
    started = time.perf_counter()
    print(
        f"coral_server MCP benchmark ({'quick' if opts.quick else 'full'}), {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} (other load skews results)",
        flush=True,
    )
    results: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="coral-bench-") as tmp:
        workdir = Path(tmp)
        try:
            echo = start_echo()
            procs.append(echo)
            results["floor"] = run(bench_floor(echo, plan), "floor: echo round trips")
            results["echo_rps"] = run(bench_echo_throughput(echo, plan), "floor: echo throughput")
            echo.stop()

            server = start_coral(workdir, "latency")
            procs.append(server)
            results["tool"] = run(bench_tool_call(server, plan), "MCP tool calls (SDK, raw)")
            results["mention"] = {
                kind: run(bench_mention(server, kind, plan), f"mention round trips ({kind})")
                for kind in ("sdk", "raw")
            }
            server.stop()
            problems["latency"] = server.problems()

            server = start_coral(workdir, "throughput")
            procs.append(server)
            results["pairs"] = {
                n: run(bench_pairs(server, n, plan), f"msgs/s with {n} pair(s)") for n in plan.pair_counts
            }
            server.stop()
            problems["throughput"] = server.problems()

            server = start_coral(workdir, "memory")
            procs.append(server)
            results["memory"] = run(bench_memory(server, plan), f"memory with {plan.agents} connected agents")
            server.stop()
            problems["memory"] = server.problems()
        finally:
            for proc in procs:
                proc.stop()
    report(plan, opts.quick, results)
    for where, lines in problems.items():
        if lines:
            print(f"\nserver stderr ({where} server, {len(lines)} lines; first 10):")
            for line in lines[:10]:
                print("  " + line[:200])
    notes = [
        f"mention/{k}: B's wait not yet parked in {m['not_parked']} of {plan.warmup} checked warm-up rounds"
        for k, m in results["mention"].items()
        if m["not_parked"]
    ]
    for note in notes:
        print("note: " + note)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
