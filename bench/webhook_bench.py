"""Benchmark custom tool forwarding and session-event fan-out against floors measured in the same run.

    /work/venv/bin/python bench/webhook_bench.py [--quick]

1. Custom tool round trip (agent -> coral -> the app's webhook receiver -> agent), beside a direct signed
   POST of the same body to the same receiver and a built-in tool call on the same MCP session.
2. Events fan-out: 100 WebSocket clients (2 worker processes) on one session while a driver posts
   messages through the puppet API, beside a minimal aiohttp broadcast server.

Every server runs as its own process on 127.0.0.1. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from mcp_bench import (
    SPAWN,
    Api,
    Proc,
    Table,
    api_for,
    arecv,
    ms,
    open_client,
    pct,
    proc_cpu_s,
    run,
    start_coral,
    x,
)

from coral_server.tools.forward import target_url
from coral_server.webhooks.signing import WebhookSigner
from coral_server.webhooks.verify import WebhookVerificationError, verify_coral_signature, verify_webhook

SECRET_ENV = "CORAL_SERVER_WEBHOOK_SECRETS"  # the server signs with it; the receiver verifies with it
HOOK_PATH = "/hook"
TOOL = "open_ticket"
WRITER = "writer"
ARGUMENTS = {
    "summary": "Nightly export failed",
    "body": "The export job stopped at step 3 of 5; the log says the disk is full. " * 3,
    "priority": "high",
}
TICKET_TOOL = {
    "description": "Open a ticket in the application's tracker",
    "inputSchema": {
        "type": "object",
        "required": ["summary", "body"],
        "properties": {
            "summary": {"type": "string", "maxLength": 200},
            "body": {"type": "string"},
            "priority": {"enum": ["low", "normal", "high"]},
        },
    },
    "outputSchema": {
        "type": "object",
        "required": ["ticketId", "status"],
        "properties": {"ticketId": {"type": "string"}, "status": {"const": "open"}},
    },
}
FANOUT_WORKERS = 2
DELIVERY_TIMEOUT_S = 30.0
# Messages the flood may have posted but not yet delivered to every client: enough to keep the server
# busy, few enough that flood latency is the cost of load rather than the length of a backlog.
FLOOD_WINDOW = 8


@dataclass(frozen=True)
class Plan:
    calls: int  # per kind (custom, built-in, direct), split over `blocks` interleaved blocks
    blocks: int
    warmup: int
    clients: int
    warm_msgs: int
    lockstep_msgs: int
    flood_msgs: int
    rounds: int  # fan-out rounds per target, floor and coral alternating

    @property
    def total_msgs(self) -> int:
        return self.warm_msgs + self.lockstep_msgs + self.flood_msgs


FULL = Plan(
    calls=2000, blocks=10, warmup=100, clients=100, warm_msgs=50, lockstep_msgs=300, flood_msgs=1500, rounds=3
)
QUICK = Plan(
    calls=300, blocks=3, warmup=30, clients=100, warm_msgs=20, lockstep_msgs=100, flood_msgs=400, rounds=1
)


# -- helper servers (each in its own process): the webhook receiver and the broadcast floor -----------


def spawn(target: Callable[..., None], *args: Any) -> tuple[SpawnProcess, Connection]:
    """Start `target(*args, conn)` in a spawned process; returns it and our end of the pipe."""
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    child.close()
    return process, parent


def reap(process: SpawnProcess, grace_s: float = 10.0) -> None:
    """Wait for `process` to end (after asking it with SIGTERM, if `grace_s` passes), then kill it."""
    process.join(grace_s)
    if process.is_alive():
        process.terminate()
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join()


class Helper:
    """A helper server (the webhook receiver or the broadcast floor) in its own process."""

    def __init__(self, app: str) -> None:
        self.process, conn = spawn(serve_helper, app)
        try:
            self.port: int = conn.recv() if conn.poll(60) else 0
        finally:
            conn.close()
        if not self.port:
            self.stop()
            raise RuntimeError(f"{app} server did not report its port")

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM: run_app shuts down cleanly
        reap(self.process)


def serve_helper(app: str, conn: Connection) -> None:
    """Serve one of the helper apps on a free 127.0.0.1 port (sent on `conn`) until SIGTERM."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    conn.close()
    factory = {"receiver": receiver_app, "broadcast": broadcast_app}[app]
    web.run_app(factory(), sock=sock, print=None, access_log=None, shutdown_timeout=2)


def receiver_app() -> web.Application:
    """The app's webhook endpoint: verifies both signatures on the raw body, answers JSON."""
    keys = [s.strip() for s in os.environ[SECRET_ENV].split(",")]
    seen: set[str] = set()
    stats = {"verified": 0, "rejected": 0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_coral_signature(request.headers, body, keys)
            verify_webhook(request.headers, body, keys, seen_ids=seen)
        except WebhookVerificationError as exc:
            stats["rejected"] += 1
            return web.json_response({"error": exc.reason}, status=401)
        orjson.loads(body)
        stats["verified"] += 1
        answer = {"ticketId": f"T-{stats['verified']}", "status": "open"}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def report(_: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application()
    app.router.add_post(HOOK_PATH + "/{session}/{agent}", hook)
    app.router.add_get("/stats", report)
    return app


def broadcast_app() -> web.Application:
    """The fan-out floor: POST /message sends one text frame shaped like `message_sent` to every client."""
    clients: set[web.WebSocketResponse] = set()
    seq = 0

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(orjson.dumps({"seq": seq, "type": "snapshot"}).decode())
        clients.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            clients.discard(ws)
        return ws

    async def message(request: web.Request) -> web.Response:
        nonlocal seq
        body = orjson.loads(await request.read())
        seq += 1
        now = time.time_ns() // 1_000_000
        text = orjson.dumps(
            {
                "seq": seq,
                "type": "message_sent",
                "timestamp": now,
                "message": {
                    "id": secrets.token_hex(16),
                    "threadId": body["threadId"],
                    "senderName": "driver",
                    "text": body["content"],
                    "timestamp": now,
                    "mentionNames": body["mentions"],
                },
            }
        ).decode()
        for ws in list(clients):
            await ws.send_str(text)
        return web.json_response({"seq": seq})

    app = web.Application()
    app.router.add_get("/ws", events)
    app.router.add_post("/message", message)
    return app


# -- 1. custom tool round trip ----------------------------------------------------------------------


async def create_tool_session(api: Api, hook_url: str) -> tuple[str, str]:
    """A session whose one external agent may call TOOL, which posts to `hook_url`."""
    writer = {
        "id": {"name": "echo", "version": "0.1.0", "source": "local"},
        "name": WRITER,
        "provider": {"type": "local", "runtime": "external"},
        "customToolAccess": [TOOL],
    }
    tool = {"transport": {"type": "http", "url": hook_url, "signatureHeader": "X-Coral-Signature"}}
    body = {
        "agentGraphRequest": {
            "agents": [writer],
            "groups": [[WRITER]],
            "customTools": {TOOL: {**tool, "schema": TICKET_TOOL}},
        },
        "namespaceProvider": {"type": "create_if_not_exists", "namespaceRequest": {"name": "bench"}},
        "execution": {"mode": "immediate"},
    }
    async with api.http.post(api.base, json=body) as resp:
        out = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"create session: HTTP {resp.status} {out}")
    return out["namespace"], out["sessionId"]


async def bench_custom_tool(server: Proc, receiver: Helper, plan: Plan) -> dict[str, Any]:
    hook_url = receiver.base_url + HOOK_PATH
    signer = WebhookSigner([os.environ[SECRET_ENV].split(",")[0].strip().encode()])
    body = orjson.dumps(ARGUMENTS)
    async with api_for(server) as api:
        ns, sid = await create_tool_session(api, hook_url)
        direct_url = target_url(hook_url, sid, WRITER)
        coral_headers = {
            "Content-Type": "application/json",
            "X-Coral-Namespace": ns,
            "X-Coral-SessionId": sid,
            "X-Coral-AgentName": WRITER,
        }
        agent_url = await api.connection_url(ns, sid, WRITER)
        async with open_client("sdk", agent_url) as agent, aiohttp.ClientSession() as http:

            async def direct() -> None:
                headers = {**coral_headers, **signer.sign(body)}
                async with http.post(direct_url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                    if resp.status != 200 or orjson.loads(answer)["status"] != "open":
                        raise RuntimeError(f"direct POST: HTTP {resp.status} {answer[:200]!r}")

            async def custom() -> None:
                got = await agent.call(TOOL, ARGUMENTS)
                if got.get("status") != "open":
                    raise RuntimeError(f"custom tool answered {got}")

            async def builtin() -> None:
                got = await agent.call("coral_wait_for_message", {"maxWaitMs": 0})
                if got.get("status") != "Timeout reached":
                    raise RuntimeError(f"unexpected answer {got}")

            kinds: dict[str, Callable[[], Awaitable[None]]] = {
                "direct": direct,
                "builtin": builtin,
                "custom": custom,
            }
            out = await interleave(kinds, (server.pid, receiver.pid), plan)
        async with api.http.get(receiver.base_url + "/stats") as resp:
            out["receiver"] = await resp.json()
        await api.delete(ns, sid)
    return out


async def interleave(
    kinds: dict[str, Callable[[], Awaitable[None]]], pids: tuple[int, int], plan: Plan
) -> dict[str, Any]:
    """Latencies and (server, receiver) CPU per call for each kind, run in alternating blocks.

    Alternating blocks (rather than one kind after another) spread other load on the machine evenly
    over the kinds, and keep each block long enough for /proc's 10 ms CPU ticks.
    """
    for call in kinds.values():
        for _ in range(plan.warmup):
            await call()
    lat: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [0.0, 0.0] for kind in kinds}
    per_block = plan.calls // plan.blocks
    names = list(kinds)
    for block in range(plan.blocks):
        for kind in names[block % len(names) :] + names[: block % len(names)]:
            call = kinds[kind]
            before = [proc_cpu_s(pid) for pid in pids]
            for _ in range(per_block):
                t0 = time.perf_counter_ns()
                await call()
                lat[kind].append(ms(time.perf_counter_ns() - t0))
            for i, pid in enumerate(pids):
                cpu[kind][i] += proc_cpu_s(pid) - before[i]
    calls = per_block * plan.blocks
    return {
        kind: {
            "p50": pct(lat[kind], 50),
            "p99": pct(lat[kind], 99),
            "server_cpu_ms": cpu[kind][0] * 1000 / calls,
            "receiver_cpu_ms": cpu[kind][1] * 1000 / calls,
            "calls": calls,
        }
        for kind in kinds
    }


# -- 2. events fan-out ------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """One WebSocket client's view of the stream: what arrived, and anything out of order."""

    last_seq: int
    got: bytearray
    gaps: int = 0
    disorder: int = 0
    duplicates: int = 0
    overflows: int = 0


def fanout_worker(ws_url: str, n_clients: int, total: int, conn: Connection) -> None:
    try:
        asyncio.run(_fanout_worker(ws_url, n_clients, total, conn))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


async def _fanout_worker(ws_url: str, n_clients: int, total: int, conn: Connection) -> None:
    """Hold `n_clients` WebSockets; send message i's index on `conn` once all of them have it."""
    lat_ns: list[list[int]] = [[] for _ in range(total)]
    counts = [0] * total
    last_recv = [0]

    async def read(ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
        async for frame in ws:
            now = time.time_ns()
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            event = orjson.loads(frame.data)
            seq = event["seq"]
            if seq > tally.last_seq + 1:
                tally.gaps += seq - tally.last_seq - 1
            elif seq <= tally.last_seq:
                tally.disorder += 1
            tally.last_seq = max(tally.last_seq, seq)
            if event["type"] == "overflow":
                tally.overflows += 1
            if event["type"] != "message_sent":
                continue
            index, stamp = event["message"]["text"].split()
            i = int(index)
            if tally.got[i]:
                tally.duplicates += 1
                continue
            tally.got[i] = 1
            lat_ns[i].append(now - int(stamp))
            last_recv[0] = now
            counts[i] += 1
            if counts[i] == n_clients:
                conn.send(i)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = await asyncio.gather(*(http.ws_connect(ws_url) for _ in range(n_clients)))
        readers: list[asyncio.Task[None]] = []
        try:
            tallies = []
            for ws in sockets:
                first = orjson.loads((await ws.receive(timeout=30)).data)
                if first["type"] != "snapshot":
                    raise RuntimeError(f"first frame is {first['type']}, not snapshot")
                tallies.append(Tally(first["seq"], bytearray(total)))
            readers = [asyncio.create_task(read(ws, t)) for ws, t in zip(sockets, tallies, strict=True)]
            conn.send("ready")
            if await arecv(conn, 600) != "finish":
                raise RuntimeError("driver out of step")
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    conn.send(
        {
            "lat_ns": lat_ns,
            "last_recv": last_recv[0],
            "gaps": sum(t.gaps for t in tallies),
            "disorder": sum(t.disorder for t in tallies),
            "duplicates": sum(t.duplicates for t in tallies),
            "overflows": sum(t.overflows for t in tallies),
            "missing": sum(total - sum(t.got) for t in tallies),
        }
    )


@dataclass
class FanoutTarget:
    """Where the clients subscribe and the driver posts; `body` is the POST body minus `content`."""

    ws_url: str
    post_url: str
    body: dict[str, Any]
    pid: int
    cleanup: Callable[[], Awaitable[None]] | None = None


async def coral_target(server: Proc, api: Api) -> FanoutTarget:
    ns, sid = await api.create(["driver", "peer"])
    puppet = f"{server.base_url}/api/v1/puppet/{ns}/{sid}/driver"
    async with api.http.post(
        puppet + "/thread", json={"threadName": "fan", "participantNames": ["peer"]}
    ) as r:
        thread = await r.json()
        if r.status != 200:
            raise RuntimeError(f"puppet thread: HTTP {r.status} {thread}")
    return FanoutTarget(
        ws_url=f"ws://127.0.0.1:{server.port}/ws/v1/events/{ns}/{sid}",
        post_url=puppet + "/thread/message",
        body={"threadId": thread["thread"]["id"], "mentions": []},
        pid=server.pid,
        cleanup=lambda: api.delete(ns, sid),
    )


def floor_target(floor: Helper) -> FanoutTarget:
    return FanoutTarget(
        ws_url=f"ws://127.0.0.1:{floor.port}/ws",
        post_url=floor.base_url + "/message",
        body={"threadId": secrets.token_hex(16), "mentions": []},
        pid=floor.pid,
    )


async def bench_fanout(target: FanoutTarget, plan: Plan) -> dict[str, Any]:
    """One round: warm-up and lockstep messages, then a flood; raw latencies, times and checks.

    In lockstep each message reaches every client before the next is posted; in the flood the driver
    keeps at most FLOOD_WINDOW messages ahead of the slowest client.
    """
    total = plan.total_msgs
    share = [
        plan.clients // FANOUT_WORKERS + (w < plan.clients % FANOUT_WORKERS) for w in range(FANOUT_WORKERS)
    ]
    procs, pipes = [], []
    stalled: list[str] = []
    try:
        for n in share:
            proc, parent = spawn(fanout_worker, target.ws_url, n, total)
            procs.append(proc)
            pipes.append(parent)
        for parent in pipes:
            if await arecv(parent, 120) != "ready":
                raise RuntimeError("fan-out worker not ready")
        done = [-1] * len(pipes)

        async def delivered(i: int) -> None:
            """Wait until every client has message i (or note that it never came)."""
            for k, parent in enumerate(pipes):
                try:
                    while done[k] < i:
                        done[k] = await arecv(parent, DELIVERY_TIMEOUT_S)
                except TimeoutError:
                    stalled.append(f"message {i} not delivered to all of worker {k}'s clients")
                    raise

        async with aiohttp.ClientSession() as http:

            async def post(i: int) -> None:
                body = {**target.body, "content": f"{i} {time.time_ns()}"}
                async with http.post(target.post_url, json=body) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"post: HTTP {resp.status} {(await resp.read())[:200]!r}")

            flood_from = plan.warm_msgs + plan.lockstep_msgs
            try:
                for i in range(flood_from):
                    await post(i)
                    await delivered(i)
                pids = [target.pid, *(p.pid for p in procs if p.pid is not None)]
                cpu0, t0 = [proc_cpu_s(pid) for pid in pids], time.time_ns()
                for i in range(flood_from, total):
                    if i - FLOOD_WINDOW >= flood_from:
                        await delivered(i - FLOOD_WINDOW)
                    await post(i)
                await delivered(total - 1)
                cpu1 = [proc_cpu_s(pid) for pid in pids]
            except TimeoutError:
                cpu0 = cpu1 = [0.0] * (1 + len(procs))
                t0 = time.time_ns()
        for parent in pipes:
            parent.send("finish")
        results = []
        for parent in pipes:
            while isinstance(item := await arecv(parent, 60), int):
                pass
            results.append(item)
    finally:
        for proc in procs:
            reap(proc)
        for parent in pipes:
            parent.close()
        if target.cleanup is not None:
            await target.cleanup()
    lock = range(plan.warm_msgs, flood_from)
    flood = range(flood_from, total)
    checks = ("gaps", "disorder", "duplicates", "overflows", "missing")
    return {
        "lock_lat": [ms(v) for r in results for i in lock for v in r["lat_ns"][i]],
        "flood_lat": [ms(v) for r in results for i in flood for v in r["lat_ns"][i]],
        "flood_s": max(1e-9, (max(r["last_recv"] for r in results) - t0) / 1e9),
        "server_cpu_s": cpu1[0] - cpu0[0],
        "clients_cpu_s": sum(b - a for a, b in zip(cpu0[1:], cpu1[1:], strict=True)),
        "deliveries": sum(len(v) for r in results for v in r["lat_ns"]),
        "expected": plan.clients * total,
        "stalled": stalled,
        **{k: sum(r[k] for r in results) for k in checks},
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the rounds of one target: latencies together, rates and CPU over the summed flood time."""
    lock = [v for r in rounds for v in r["lock_lat"]]
    flood = [v for r in rounds for v in r["flood_lat"]]
    flood_s = sum(r["flood_s"] for r in rounds)
    server_s = sum(r["server_cpu_s"] for r in rounds)
    counted = ("deliveries", "expected", "gaps", "disorder", "duplicates", "overflows", "missing")
    return {
        "lock_p50": pct(lock, 50),
        "lock_p99": pct(lock, 99),
        "flood_p50": pct(flood, 50),
        "flood_p99": pct(flood, 99),
        "rate": len(flood) / flood_s,
        "server_busy": server_s / flood_s,
        "server_cpu_us": server_s * 1e6 / len(flood) if flood else 0.0,
        "clients_busy": sum(r["clients_cpu_s"] for r in rounds) / flood_s,
        "stalled": [note for r in rounds for note in r["stalled"]],
        **{k: sum(r[k] for r in rounds) for k in counted},
    }


async def bench_fanout_rounds(floor: Helper, server: Proc, plan: Plan) -> dict[str, dict[str, Any]]:
    """Alternate floor and coral rounds, so load that comes and goes on the machine hits both alike."""
    rounds: dict[str, list[dict[str, Any]]] = {"floor": [], "coral": []}
    async with api_for(server) as api:
        for _ in range(plan.rounds):
            rounds["floor"].append(await bench_fanout(floor_target(floor), plan))
            rounds["coral"].append(await bench_fanout(await coral_target(server, api), plan))
    return {name: summarize(each) for name, each in rounds.items()}


# -- report -----------------------------------------------------------------------------------------


def report(plan: Plan, r: dict[str, Any]) -> None:
    t = Table()
    tool = r["tool"]
    direct, builtin, custom = tool["direct"], tool["builtin"], tool["custom"]
    t.section(
        f"1. custom tool round trip (agent -> coral -> receiver -> agent), concurrency 1, "
        f"{custom['calls']} calls each in {plan.blocks} alternating blocks"
    )
    t.add("direct signed POST to receiver p50", f"{direct['p50']:.3f} ms", "floor (aiohttp client)")
    t.add("direct signed POST to receiver p99", f"{direct['p99']:.3f} ms")
    for label, res in (("built-in tool call", builtin), ("custom tool round trip", custom)):
        for p in ("p50", "p99"):
            t.add(f"{label} {p} (SDK)", f"{res[p]:.3f} ms", x(res[p], direct[p], f"direct {p}"))
    forwarding = custom["p50"] - builtin["p50"]
    t.add(
        "forwarding cost p50 (custom - built-in)",
        f"{forwarding:.3f} ms",
        x(forwarding, direct["p50"], "direct p50"),
    )
    t.add(
        "coral CPU per call: custom / built-in",
        f"{custom['server_cpu_ms']:.3f} / {builtin['server_cpu_ms']:.3f} ms",
        f"forwarding CPU {custom['server_cpu_ms'] - builtin['server_cpu_ms']:.3f} ms/call",
    )
    t.add(
        "receiver CPU per request: forwarded / direct",
        f"{custom['receiver_cpu_ms']:.3f} / {direct['receiver_cpu_ms']:.3f} ms",
        "same work; sparser requests wake colder",
    )
    stats = tool["receiver"]
    expected = (custom["calls"] + direct["calls"]) + 2 * plan.warmup
    t.add(
        "signatures verified / rejected",
        f"{stats['verified']} / {stats['rejected']}",
        "X-Coral-Signature + webhook-signature",
        f"{expected} / 0",
        "PASS" if stats["verified"] == expected and stats["rejected"] == 0 else "MISS",
    )

    floor, coral = r["fanout_floor"], r["fanout"]
    t.section(
        f"2. events fan-out: {plan.clients} WebSocket clients in {FANOUT_WORKERS} processes, puppet API "
        f"driver; {plan.rounds} x ({plan.lockstep_msgs} lockstep + {plan.flood_msgs} flood msgs, "
        f"window {FLOOD_WINDOW})"
    )
    for key, label in (("lock", "lockstep"), ("flood", "flood")):
        for p in ("p50", "p99"):
            f = floor[f"{key}_{p}"]
            t.add(
                f"{label} delivery latency {p}",
                f"{coral[f'{key}_{p}']:.3f} ms",
                f"{x(coral[f'{key}_{p}'], f, 'floor')} (floor {f:.3f} ms)",
            )
    t.add(
        "flood deliveries/s",
        f"{coral['rate']:,.0f}/s",
        f"{x(coral['rate'], floor['rate'], 'floor')} (floor {floor['rate']:,.0f}/s)",
    )
    t.add(
        "server CPU per delivery (busy)",
        f"{coral['server_cpu_us']:.1f} us ({coral['server_busy'] * 100:.0f}%)",
        f"{x(coral['server_cpu_us'], floor['server_cpu_us'], 'floor')} "
        f"(floor {floor['server_cpu_us']:.1f} us, {floor['server_busy'] * 100:.0f}%)",
    )
    t.add(
        "client workers' CPU busy (sum)",
        f"{coral['clients_busy'] * 100:.0f}%",
        f"floor run {floor['clients_busy'] * 100:.0f}%",
    )
    for name, res in (("coral", coral), ("floor", floor)):
        t.add(
            f"{name}: deliveries (exactly once)",
            f"{res['deliveries']:,}",
            f"missing {res['missing']}, duplicates {res['duplicates']}",
            f"{res['expected']:,}",
            "PASS"
            if res["deliveries"] == res["expected"] and not res["missing"] + res["duplicates"]
            else "MISS",
        )
        t.add(
            f"{name}: seq gaps / out of order / overflow",
            f"{res['gaps']} / {res['disorder']} / {res['overflows']}",
            "",
            "0 / 0 / 0",
            "PASS" if not res["gaps"] + res["disorder"] + res["overflows"] else "MISS",
        )
    print()
    t.print()
    for res in (coral, floor):
        for note in res["stalled"]:
            print("note: " + note)


# -- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test (< 30 s)")
    opts = parser.parse_args()
    plan = QUICK if opts.quick else FULL
    started = time.perf_counter()
    print(
        f"coral_server webhook and events benchmark ({'quick' if opts.quick else 'full'}), "
        f"{os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} (other load skews results)",
        flush=True,
    )
    # One fresh secret shared by coral (which signs) and the receiver (which verifies); both inherit it.
    os.environ[SECRET_ENV] = secrets.token_hex(32)
    results: dict[str, Any] = {}
    problems: list[str] = []
    procs: list[Proc | Helper] = []
    with tempfile.TemporaryDirectory(prefix="coral-webhook-bench-") as tmp:
        workdir = Path(tmp)
        try:
            receiver = Helper("receiver")
            procs.append(receiver)
            server = start_coral(workdir, "tools")
            procs.append(server)
            results["tool"] = run(bench_custom_tool(server, receiver, plan), "custom tool round trips")
            receiver.stop()
            server.stop()
            problems += [f"[tools server] {line}" for line in server.problems()]

            floor = Helper("broadcast")
            procs.append(floor)
            server = start_coral(workdir, "events")
            procs.append(server)
            fanout = run(
                bench_fanout_rounds(floor, server, plan),
                f"events fan-out: {plan.rounds} round(s) each, floor and coral alternating",
            )
            results["fanout_floor"], results["fanout"] = fanout["floor"], fanout["coral"]
            floor.stop()
            server.stop()
            problems += [f"[events server] {line}" for line in server.problems()]
        finally:
            for proc in procs:
                proc.stop()
    report(plan, results)
    if problems:
        print(f"\nserver stderr at WARNING or above ({len(problems)} lines; first 20):")
        print("\n".join("  " + line[:200] for line in problems[:20]))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
