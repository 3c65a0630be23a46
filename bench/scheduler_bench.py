"""Scheduled tasks against APScheduler driving the same schedules in the same run (issue 17).

    .venv/bin/python bench/scheduler_bench.py [--tasks 10000] [--plan-tasks N] [--window 20]
        [--cap 100] [--lead 3] [--part plan|fire|burst|all] [--no-sql-peer]

Ours: the real store (a SQLite file in a temp dir), the real `Runs` dispatcher and `Tasks` with its
scheduler loop on the real clock, and a "pipeline" executor that completes at once (it says
running, then completed: two transitions, each published, as a real executor's run has; a run
that ends at once has both stored in one write, as a real one that fails at once does). Tasks
sharing a schedule and a due time share its computation within a fire batch (all of part 3's
do: see `TaskLoop._decide`). Tasks are cron
tasks with a seconds field, e.g. `5 20 * * * 17` (daily at 20:05:17 UTC), written straight into the
store in one transaction (the SQL `Tasks.create` uses; creating them through the service is not
what is measured here). The peer: APScheduler 3's `AsyncIOScheduler` with its in-memory job store
(the ratio's peer) and, unless `--no-sql-peer`, its SQLAlchemy job store on a SQLite file (the
durable peer, printed beside it, on at most 1,000 jobs: adding each is a transaction of its own);
each job is a coroutine that notes when it ran, with
`misfire_grace_time=None` so APScheduler runs every late job instead of dropping it.

1. plan: `--plan-tasks` tasks (default `--tasks`) over `--window` distinct schedules: ours loads every
   active task from the store and computes its next fire (`TaskLoop.plan`, what a start-up does);
   APScheduler adds the same jobs to a stopped scheduler and starts it (each job's first
   `next_run_time` is computed then; on at most 10,000 jobs, compared per task). Target: 100,000
   tasks in <= 2 s.
2. fire: `--tasks` tasks due over a window of `--window` seconds (`tasks / window` due at each
   second, all at the same instant): lateness = when a task's run was created (its fire committed)
   minus its due time; p50/p99 ours and APScheduler's (when its job started). Target p99 <= 10 ms.
   2b. sparse: the same `--tasks` active, `--sparse` (5) of them due at each second of the window,
   the rest an hour later: the scheduler's own precision with that many tasks waiting.
3. burst: `--tasks` tasks all due at one instant: runs dispatched per second = tasks / (the last run
   completed - the due time), ours (created, claimed under `--cap`, executed, completed) and
   APScheduler's (job executed). Target: >= 2x APScheduler (in-memory).

The process runs with the collector setting `coral-server` takes at start-up (`coral_server.collector`:
start-up frozen, young collections every 50,000 allocations), ours and the peer alike (one process);
`--default-collector` keeps CPython's. The header and each part print the load average (2 cores
shared with other work: read the ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coral_server import collector
from coral_server.clock import SystemClock
from coral_server.events import EventBus
from coral_server.runs.service import Outcome, RunContext, Runs
from coral_server.store import SqliteStore
from coral_server.store.runs import Run
from coral_server.store.tasks import Task
from coral_server.tasks import Tasks, TaskSettings

PLAN_TARGET_S = 2.0  # for 100,000 tasks
LATENESS_P99_TARGET_MS = 10.0
DISPATCH_TARGET_RATIO = 2.0
SQL_PEER_TASKS = 1_000  # jobs of the SQLAlchemy peer (adding one is a transaction of its own: slow)
PEER_PLAN_TASKS = 10_000  # APScheduler's part 1 runs on at most this many jobs (its time per job compared)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min, {os.cpu_count()} cores)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cron_at(at: float) -> str:
    """Daily at `at`'s UTC wall time, to the second (our six-field cron: seconds last)."""
    moment = datetime.fromtimestamp(at, UTC)
    return f"{moment.minute} {moment.hour} * * * {moment.second}"


class InstantPipeline:
    """A pipeline executor whose runs complete at once (running, then completed)."""

    async def validate(self, spec: dict[str, Any]) -> dict[str, Any]:
        return spec

    async def execute(self, run: Run, ctx: RunContext) -> Outcome:
        await ctx.running()
        return Outcome("completed", "agent_done")

    async def recover(self, run: Run) -> dict[str, Any] | None:
        return None


class Recorder:
    """When each task's run was created and completed (by task id)."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.changed = asyncio.Event()

    def on_created(self, run: Run) -> None:
        if run.task_id is not None:
            self.created.setdefault(run.task_id, time.time())

    def on_finished(self, run: Run) -> None:
        if run.task_id is not None:
            self.completed.setdefault(run.task_id, time.time())
            self.changed.set()


class RecordingRuns(Runs):
    recorder: Recorder

    def admitted(self, run: Run, *, keep: bool = False) -> None:
        self.recorder.on_created(run)  # called once the fire's transaction has committed
        super().admitted(run, keep=keep)


class Ours:
    """One server's store, dispatcher and scheduler over a fresh database."""

    def __init__(self, store: SqliteStore, runs: RecordingRuns, tasks: Tasks, recorder: Recorder) -> None:
        self.store, self.runs, self.tasks, self.recorder = store, runs, tasks, recorder

    @classmethod
    async def open(cls, path: Path, cap: int) -> Ours:
        clock = SystemClock()
        store = await SqliteStore.open(path, clock=clock)
        recorder = Recorder()
        runs = RecordingRuns(
            lambda: store.runs, EventBus(clock=clock), clock, {"pipeline": InstantPipeline()}, cap=cap
        )
        runs.recorder = recorder
        runs.on_finished.append(recorder.on_finished)
        tasks = Tasks(lambda: store.tasks, runs, clock, TaskSettings())
        return cls(store, runs, tasks, recorder)

    async def insert(self, due: list[float]) -> list[str]:
        """Tasks firing daily at each time of `due`, written in one transaction; their ids."""
        now = time.time()
        tasks = [
            Task(
                id=f"t{i:07d}",
                title=f"bench {i}",
                description="",
                schedule_kind="cron",
                schedule_expr=cron_at(at),
                timezone="UTC",
                payload={
                    "pipeline": [{"id": "s1", "uses": "webhook", "with": {"url": "http://127.0.0.1:9"}}]
                },
                created_by="bench",
                created_at=now,
                updated_at=now,
                next_fire_at=at,
            )
            for i, at in enumerate(due)
        ]
        await self.store.tasks.insert_many(tasks)
        return [t.id for t in tasks]

    async def start(self) -> None:
        await self.runs.start()
        await self.tasks.start()

    async def close(self) -> None:
        await self.tasks.close()
        await self.runs.close()
        await self.store.close()


async def wait_for(done: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            print(f"   !! timed out waiting for {what}")
            return False
        await asyncio.sleep(0.05)
    return True


# -- APScheduler ------------------------------------------------------------------------------------


class Peer:
    """APScheduler 3 (AsyncIOScheduler) with one job per task, each noting when it ran."""

    def __init__(self, sql_url: str | None) -> None:
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        store: Any
        if sql_url is None:
            store = MemoryJobStore()
        else:
            from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

            store = SQLAlchemyJobStore(url=sql_url)
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": store},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self.ran: dict[int, float] = {}
        self.name = f"peer{len(_RAN)}"
        _RAN[self.name] = self.ran  # jobs name it: a durable store pickles a job's arguments

    def add(self, due: list[float]) -> None:
        from apscheduler.triggers.cron import CronTrigger

        for i, at in enumerate(due):
            moment = datetime.fromtimestamp(at, UTC)
            trigger = CronTrigger(hour=moment.hour, minute=moment.minute, second=moment.second, timezone=UTC)
            self.scheduler.add_job(_peer_job, trigger, args=(self.name, i), id=f"j{i}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)


_RAN: dict[str, dict[int, float]] = {}


async def _peer_job(name: str, i: int) -> None:
    _RAN[name].setdefault(i, time.time())


# -- parts ------------------------------------------------------------------------------------------


def due_times(n: int, start: float, window: int) -> list[float]:
    """`n` due times over `window` whole seconds from `start` (round-robin: n / window per second)."""
    return [start + (i % window) for i in range(n)]


def next_second(lead: float) -> float:
    return float(int(time.time() + lead) + 1)


def peer_setup_s(n: int, sql_url: str | None) -> float:
    """How long APScheduler takes to add and start `n` jobs, from a sample (its due times must lie
    after its setup: a daily cron job added after its time waits for tomorrow)."""
    sample = 200 if sql_url is None else 20
    peer = Peer(None if sql_url is None else sql_url + ".sample")
    began = time.perf_counter()
    peer.add(due_times(sample, time.time() + 3600, 20))
    peer.scheduler.start(paused=True)
    spent = time.perf_counter() - began
    peer.close()
    return spent / sample * n * 1.5


async def part_plan(root: Path, n: int, window: int) -> None:
    print(f"\n1. plan: {n:,} tasks over {window} distinct schedules   [{load()}]")
    ours = await Ours.open(root / "plan.db", cap=5)
    try:
        start = next_second(3600.0)  # due in an hour: nothing fires while planning
        await ours.insert(due_times(n, start, window))
        began = time.perf_counter()
        checked = await ours.tasks.loop.plan()
        ours_s = time.perf_counter() - began
    finally:
        await ours.close()
    peer = Peer(None)
    peer_n = min(n, PEER_PLAN_TASKS)
    began = time.perf_counter()
    peer.add(due_times(peer_n, start, window))
    peer.scheduler.start(paused=True)  # computes every job's first next_run_time
    peer_s = time.perf_counter() - began
    jobs = len(peer.scheduler.get_jobs())
    peer.close()
    target = PLAN_TARGET_S * n / 100_000
    print(f"   ours          {ours_s:8.3f} s  ({checked:,} tasks planned, {ours_s / n * 1e6:.1f} µs/task)")
    peer_each = peer_s / jobs
    print(
        f"   APScheduler   {peer_s:8.3f} s  ({jobs:,} jobs, memory store, {peer_each * 1e6:.1f} µs/job)"
        f"   ours/peer per task {ours_s / n / peer_each:.3f}x"
    )
    verdict = "ok" if ours_s <= target else "MISSED"
    print(f"   target <= {target:.2f} s for {n:,} (2 s per 100,000): {verdict}")


async def run_ours(
    root: Path, name: str, due: list[float], cap: int, measured: int | None = None
) -> tuple[dict[str, float], Recorder, float]:
    """Run `due` through ours; waits for the first `measured` (default all) tasks' runs to complete."""
    count = len(due) if measured is None else measured
    ours = await Ours.open(root / f"{name}.db", cap=cap)
    try:
        ids = await ours.insert(due)
        await ours.start()
        if time.time() > min(due):
            print(f"   !! setup ended {time.time() - min(due):.2f} s after the first due time: raise --lead")
        by_id = dict(zip(ids[:count], due[:count], strict=True))
        last = max(due[:count])
        await wait_for(lambda: len(ours.recorder.completed) >= count, last - time.time() + 120, name)
        end = max(ours.recorder.completed.values(), default=time.time())
        return by_id, ours.recorder, end
    finally:
        await ours.close()


async def run_peer(
    due: list[float], sql_url: str | None, measured: int | None = None
) -> tuple[dict[int, float], float]:
    count = len(due) if measured is None else measured
    peer = Peer(sql_url)
    try:
        peer.add(due)
        peer.scheduler.start()
        if time.time() > min(due):
            print(f"   !! setup ended {time.time() - min(due):.2f} s after the first due time: raise --lead")
        last = max(due[:count])
        await wait_for(lambda: len(peer.ran) >= count, last - time.time() + 120, "APScheduler")
        return peer.ran, max(peer.ran.values(), default=time.time())
    finally:
        peer.close()


def lateness_line(label: str, late_ms: list[float], n: int) -> str:
    if not late_ms:
        return f"   {label:<22} nothing ran"
    return (
        f"   {label:<22} p50 {pct(late_ms, 0.5):8.1f} ms   p99 {pct(late_ms, 0.99):8.1f} ms"
        f"   max {max(late_ms):8.1f} ms   ({len(late_ms):,}/{n:,} ran)"
    )


async def part_fire(
    root: Path, n: int, window: int, lead: float, cap: int, sql_peer: bool, sparse: int
) -> None:
    print(
        f"\n2. fire lateness: {n:,} tasks due over {window} s ({n // window:,} at each second)   [{load()}]"
    )
    due = due_times(n, next_second(lead + n / 20_000), window)
    by_id, recorder, _ = await run_ours(root, "fire", due, cap)
    ours = [(recorder.created[t] - at) * 1000 for t, at in by_id.items() if t in recorder.created]
    print(lateness_line("ours (run created)", ours, n))
    peers: list[tuple[str, list[float]]] = []
    for label, url in (
        ("APScheduler memory", None),
        ("APScheduler SQLite", f"sqlite:///{root / 'aps_fire.db'}"),
    ):
        if url is not None and not sql_peer:
            continue
        peer_n = n if url is None else min(n, SQL_PEER_TASKS)
        due = due_times(peer_n, next_second(lead + peer_setup_s(peer_n, url)), window)
        ran, _ = await run_peer(due, url)
        late = [(ran[i] - due[i]) * 1000 for i in ran]
        print(lateness_line(f"{label} (job ran)", late, peer_n))
        peers.append((label, late))
    if peers and peers[0][1] and ours:
        ratio = pct(ours, 0.99) / max(pct(peers[0][1], 0.99), 1e-3)
        print(f"   p99 ours/APScheduler memory: {ratio:.2f}x")
    verdict = "ok" if ours and pct(ours, 0.99) <= LATENESS_P99_TARGET_MS else "MISSED"
    print(f"   target p99 <= {LATENESS_P99_TARGET_MS:.0f} ms: {verdict}   [{load()}]")
    if sparse:
        await part_sparse(root, n, window, lead, cap, sparse)


async def part_sparse(root: Path, n: int, window: int, lead: float, cap: int, per_second: int) -> None:
    m = per_second * window
    print(f"\n2b. fire lateness, sparse: {n:,} active tasks, {per_second} due at each second for {window} s")
    start = next_second(lead + n / 20_000)
    due = due_times(m, start, window) + [start + 3600 + i for i in range(n - m)]
    by_id, recorder, _ = await run_ours(root, "sparse", due, cap, m)
    ours = [(recorder.created[t] - at) * 1000 for t, at in by_id.items() if t in recorder.created]
    print(lateness_line("ours (run created)", ours, m))
    start = next_second(lead + peer_setup_s(n, None))
    due = due_times(m, start, window) + [start + 3600 + i for i in range(n - m)]
    ran, _ = await run_peer(due, None, m)
    late = [(ran[i] - due[i]) * 1000 for i in ran if i < m]
    print(lateness_line("APScheduler memory (job ran)", late, m))
    if late and ours:
        print(f"   p99 ours/APScheduler memory: {pct(ours, 0.99) / max(pct(late, 0.99), 1e-3):.2f}x")
    verdict = "ok" if ours and pct(ours, 0.99) <= LATENESS_P99_TARGET_MS else "MISSED"
    print(f"   target p99 <= {LATENESS_P99_TARGET_MS:.0f} ms: {verdict}   [{load()}]")


async def burst_ours(root: Path, name: str, n: int, lead: float, cap: int) -> float:
    """Ours through a burst of `n` tasks due at one instant; runs per second (and prints the line)."""
    at = next_second(lead + n / 20_000)
    _, recorder, end = await run_ours(root, name, [at] * n, cap)
    created = max(recorder.created.values(), default=at) - at
    rate = len(recorder.completed) / max(end - at, 1e-6)
    print(
        f"   ours                   {rate:9,.0f} runs/s   (all {len(recorder.created):,} created after"
        f" {created:.2f} s, completed after {end - at:.2f} s; cap {cap})"
    )
    return rate


async def burst_peer(label: str, n: int, lead: float, url: str | None, ours: float) -> float:
    """APScheduler through the same burst (at most `SQL_PEER_TASKS` jobs on SQL); its runs per second."""
    at = next_second(lead + peer_setup_s(n, url))
    ran, last = await run_peer([at] * n, url)
    rate = max(len(ran) / max(last - at, 1e-6), 1e-6)
    print(
        f"   {label:<22} {rate:9,.0f} runs/s   ({len(ran):,} ran, the last after {last - at:.2f} s)"
        f"   ours/peer {ours / rate:.2f}x"
    )
    return rate


async def part_burst(root: Path, n: int, lead: float, cap: int, sql_peer: bool, repeats: int) -> None:
    """Ours and APScheduler in memory, one after the other `repeats` times (pairs: the machine's speed
    drifts), then the durable peer once; the verdict is on the median of the pairs' ratios."""
    print(f"\n3. burst: {n:,} tasks due at one instant; runs dispatched per second   [{load()}]")
    ratios: list[float] = []
    ours = 0.0
    for i in range(repeats):
        ours = await burst_ours(root, f"burst{i}", n, lead, cap)
        ratios.append(ours / await burst_peer("APScheduler memory", n, lead, None, ours))
    if sql_peer:
        await burst_peer(
            "APScheduler SQLite", min(n, SQL_PEER_TASKS), lead, f"sqlite:///{root / 'aps_burst.db'}", ours
        )
    ratio = statistics.median(ratios)
    verdict = "ok" if ratio >= DISPATCH_TARGET_RATIO else "MISSED"
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"   ours/APScheduler memory, median of {repeats} pairs: {ratio:.2f}x ({shown});"
        f" target >= {DISPATCH_TARGET_RATIO:.0f}x: {verdict}   [{load()}]"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--plan-tasks", type=int, default=None, help="tasks of part 1 (default --tasks)")
    parser.add_argument("--window", type=int, default=20, help="seconds the fires spread over (part 2)")
    parser.add_argument("--sparse", type=int, default=5, help="tasks due per second in part 2b (0: skip)")
    parser.add_argument("--cap", type=int, default=100, help="the dispatcher's cap of busy runs")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds between setup and the first fire")
    parser.add_argument("--part", choices=("plan", "fire", "burst", "all"), default="all")
    parser.add_argument("--no-sql-peer", action="store_true", help="skip APScheduler's SQLAlchemy store")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of bursts, ours then the peer (part 3)")
    parser.add_argument(
        "--default-collector", action="store_true", help="keep CPython's collector setting (not the server's)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.default_collector:
        collector.tune()  # as `coral-server` does at start-up; one process: the peer runs with it too
    young = gc.get_threshold()[0]
    print(
        f"scheduler_bench: {args.tasks:,} tasks, cap {args.cap}, python {sys.version.split()[0]},"
        f" young collections every {young:,} allocations (both sides)   [{load()}]"
    )
    with tempfile.TemporaryDirectory(prefix="coral-schedbench-") as tmp:
        root = Path(tmp)
        parts: list[Awaitable[None]] = []
        if args.part in ("plan", "all"):
            parts.append(part_plan(root, args.plan_tasks or args.tasks, args.window))
        if args.part in ("fire", "all"):
            sql_peer = not args.no_sql_peer
            parts.append(part_fire(root, args.tasks, args.window, args.lead, args.cap, sql_peer, args.sparse))
        if args.part in ("burst", "all"):
            parts.append(
                part_burst(root, args.tasks, args.lead, args.cap, not args.no_sql_peer, args.repeats)
            )
        for part in parts:
            await part


if __name__ == "__main__":
    asyncio.run(main())
