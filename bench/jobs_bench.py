# ruff: noqa: ASYNC220, ASYNC230, ASYNC240  (a benchmark driver: blocking calls are fine here)
"""Benchmark one-time jobs against floors measured in the same run.

    .venv/bin/python bench/jobs_bench.py [--quick] [--rounds N] [--files N] [--part worktree|server|all]
        [--runs N] [--cap N] [--retry-s S] [--no-queue-floor] [--settle-s S] [--claude-bin PATH]
        [--server-log-level LEVEL] [--keep-server-log PATH]

A repository of 10,000 committed files is generated once, in a temp dir, and used by every part.

1. `worktree`: the git side of starting a job. Each round times our `create_worktree` (validation + a
   locked `git worktree add` on a new branch) and a plain `git worktree add --quiet -b <branch> <path>
   main` of the same repository, in alternating order, plus our finish + cleanup beside a plain `git
   worktree remove`. Medians and ratios are printed. Target (`benchmarks.md`): job submit -> running
   <= 1.2x + 50 ms of the plain add; this part is the git share of that budget.
2. `server`: a coral server in its own process runs the real `claude` CLI against a scripted fake
   Anthropic API (`tests/fakes/anthropic.py`, in this process): one bash turn that writes a file and
   commits it, then a text answer.
   a/b. Each round submits one job and, in alternating order, does the same by hand: a plain `git
      worktree add`, the same `claude -p --output-format json --dangerously-skip-permissions` in it
      (argv, environment and prepared HOME as the server builds them), a plain `git worktree remove`.
      (a) submit -> running (seen on the run's event stream) against the hand `git worktree add`,
      target <= 1.2x + 50 ms; (b) submit -> completed against the whole hand run, target <= 1.1x +
      100 ms.
   c. `--runs` jobs (50) through a cap of `--cap` (5): one client submits them in turn and, on a 429,
      submits again after `--retry-s` (0.05 s; the server's Retry-After, the time until the first
      run reaches its max_duration_s within 1..60 s, is too long for a bench). A sampler polls
      `GET /api/tasks/runs?status=running` and the whole listing (pending,
      running, waiting_input) and counts the server's `claude` processes in /proc; afterwards the
      runs' own timestamps give the exact overlap. Beside it, the floor: the same number of hand runs
      through a semaphore of the same size, half before and half after the server's runs (so a drift
      of the machine's load falls on both), each block `--settle-s` after the one before (see `settle`).

Everything runs on this machine in temp dirs that are removed at the end; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from coral_server.jobs.agents import Endpoint, Secret, agent_cli, find_binary
from coral_server.jobs.git import GitFailed, git, is_transient
from coral_server.jobs.worktree import cleanup_worktree, create_worktree, validate_repository

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the scripted fake API lives with the tests
from tests.fakes.anthropic import FakeAnthropic, Step, bash  # noqa: E402
from tests.jobs.clis import run_headless  # noqa: E402

TARGET_RATIO, TARGET_SLACK_MS = 1.2, 50.0
RUN_TARGET_RATIO, RUN_TARGET_SLACK_MS = 1.1, 100.0
# Part 1's run ids: far above the ids the server of part 2 hands out, so their branches never meet.
PART1_RUN_IDS = 1_000_000
T = TypeVar("T")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def generate_repository(root: Path, files: int) -> Path:
    """A repository of `files` small, distinct source-like files in 100 folders, committed on main."""
    repo = root / "repo"
    for i in range(files):
        folder = repo / f"pkg{i % 100:02d}"
        if i < 100:
            folder.mkdir(parents=True)
        body = f"# module {i}\n\ndef f{i}(x):\n    return x * {i} + {i % 7}\n" + "# padding\n" * (i % 20)
        (folder / f"mod{i}.py").write_text(body)
    return repo


async def commit_repository(repo: Path) -> None:
    await git(repo, "init", "-q", "-b", "main")
    await git(repo, "add", "--all")
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost"}
    env |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    await git(repo, "commit", "-q", "-m", "10k files", env=env)
    # The agent commits in its worktree with a fresh HOME: the identity must be the repository's.
    await git(repo, "config", "user.name", "bench")
    await git(repo, "config", "user.email", "bench@localhost")


@dataclass
class Sample:
    wall: float
    cpu: float  # this process plus its children (git): less sensitive to other load than wall time


def cpu_now() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def timed(action: Awaitable[T]) -> tuple[Sample, T]:
    cpu, started = cpu_now(), time.perf_counter()
    value = await action
    return Sample(time.perf_counter() - started, cpu_now() - cpu), value


def row(label: str, samples: list[Sample]) -> str:
    wall, cpu = [s.wall for s in samples], [s.cpu for s in samples]
    p50, low, cpu_p50 = ms(statistics.median(wall)), ms(min(wall)), ms(statistics.median(cpu))
    return f"   {label:<27}p50 {p50} (min {low})   cpu p50 {cpu_p50}"


def wall_row(label: str, seconds: list[float]) -> str:
    """A row of wall times only (what another process did: our rusage does not see it)."""
    p50, low, high = ms(statistics.median(seconds)), ms(min(seconds)), ms(max(seconds))
    return f"   {label:<30}p50 {p50} (min {low}, max {high})"


def verdict(label: str, ours: list[float], floor: list[float], ratio: float, slack_ms: float) -> None:
    """Medians, the ratio, and the target `ours <= ratio x floor + slack` on the medians."""
    m_ours, m_floor = statistics.median(ours), statistics.median(floor)
    paired = statistics.median(o / f for o, f in zip(ours, floor, strict=True))
    budget = m_floor * ratio + slack_ms / 1000
    print(
        f"   {label}: medians {m_ours / m_floor:.2f}x, per round {paired:.2f}x, "
        f"overhead {ms(m_ours - m_floor).strip()}"
    )
    outcome = "OK" if m_ours <= budget else "MISSED"
    print(f"   target <= {ratio}x + {slack_ms:g} ms of the floor = {ms(budget).strip()}: {outcome}")


async def part_worktree(args: argparse.Namespace, tmp: Path, repo: Path) -> None:
    print(f"== 1. worktree overhead: {args.files} files, {args.rounds} rounds (+1 warm-up)")
    print(f"   load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; git {await git_version()}")
    ours: list[Sample] = []
    plain: list[Sample] = []
    validation: list[Sample] = []
    our_cleanup: list[Sample] = []
    plain_remove: list[Sample] = []
    for n in range(args.rounds + 1):
        plain_path = tmp / f"plain_{n}"
        plain_add = ("worktree", "add", "--quiet", "-b", f"plain-{n}", str(plain_path), "main")
        run_id = PART1_RUN_IDS + n
        # Alternate who goes first, so neither side always meets a warmer cache.
        if n % 2 == 0:
            t_ours, wt = await timed(create_worktree(str(repo), run_id, base_branch="main"))
            t_plain, _ = await timed(git(repo, *plain_add))
        else:
            t_plain, _ = await timed(git(repo, *plain_add))
            t_ours, wt = await timed(create_worktree(str(repo), run_id, base_branch="main"))
        t_valid, _ = await timed(validate_repository(str(repo), base_branch="main"))
        t_cleanup, _ = await timed(cleanup_worktree(wt))
        t_remove, _ = await timed(git(repo, "worktree", "remove", "--force", str(plain_path)))
        if n == 0:
            continue  # warm-up: page cache, git's first start
        ours.append(t_ours)
        plain.append(t_plain)
        validation.append(t_valid)
        our_cleanup.append(t_cleanup)
        plain_remove.append(t_remove)

    m_ours, m_plain = statistics.median(s.wall for s in ours), statistics.median(s.wall for s in plain)
    paired = statistics.median(o.wall / p.wall for o, p in zip(ours, plain, strict=True))
    cpu_ratio = statistics.median(s.cpu for s in ours) / statistics.median(s.cpu for s in plain)
    budget = m_plain * TARGET_RATIO + TARGET_SLACK_MS / 1000
    print(row("plain git worktree add", plain))
    print(row("create_worktree (ours)", ours))
    print(row("  of which validation", validation))
    print(
        f"   ratio ours/plain: medians {m_ours / m_plain:.2f}x, per round {paired:.2f}x, cpu {cpu_ratio:.2f}x"
    )
    print(f"   overhead of the medians {ms(m_ours - m_plain)}")
    verdict = "OK" if m_ours <= budget else "MISSED"
    print(f"   target <= {TARGET_RATIO}x + {TARGET_SLACK_MS:g} ms of plain = {ms(budget)}: {verdict}")
    print(row("plain git worktree remove", plain_remove))
    print(row("finish + cleanup (ours)", our_cleanup))
    print("   (cleanup = status, rev-parse HEAD, remove, delete the empty branch: 4 git processes)")


# -- part 2: through a real server ------------------------------------------------------------------

API_KEY = "sk-ant-bench-0123456789abcdefghijklmnop"
PROMPT = "add hello.txt and commit it"
FLAGS = "--dangerously-skip-permissions"
ANSWER = "Done: committed hello.txt"
SCRIPT: list[Step] = [
    bash("echo hello > hello.txt && git add hello.txt && git commit -qm 'Add hello.txt'", "Commit"),
    ANSWER,
]
FINAL = ("completed", "failed", "killed")
ACTIVE = ("pending", "running", "waiting_input")
SAMPLE_S = 0.02  # the sampler's period (plus the time its two GETs and the /proc walk take)
RUN_TIMEOUT_S = 180.0  # one run, however busy the machine: a bench that hangs is worse than a failure


class BenchError(Exception):
    """Something that makes a figure meaningless (a run that failed, a wrong result)."""


@dataclass
class Coral:
    """A coral server in its own process, and an HTTP client for it."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    http: aiohttp.ClientSession

    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        """POST a job: the status, the body and the Retry-After header."""
        async with self.http.post(f"{self.url}/api/tasks/run", json=body) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")

    async def get(self, path: str) -> dict[str, Any]:
        async with self.http.get(self.url + path) as resp:
            body: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise BenchError(f"GET {path}: {resp.status} {body}")
            return body

    async def follow(self, run_id: int, submitted: float) -> RunTimes:
        """Follow the run's event stream to its end: when (after `submitted`) it was seen running and
        seen ended."""
        times = RunTimes(run_id)
        url = f"{self.url}/ws/v1/runs/{run_id}/events?types=run_status"
        async with asyncio.timeout(RUN_TIMEOUT_S), self.http.ws_connect(url) as ws:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                # The snapshot carries the run at the top; a run_status event its new status.
                status = event.get("status")
                now = time.perf_counter() - submitted
                if status in ("running", "waiting_input") and times.running is None:
                    times.running = now
                if status in FINAL:
                    times.ended = now
                    break
        if times.ended is None:
            raise BenchError(f"run {run_id}: its event stream ended before the run did")
        return times

    def server_lines(self) -> list[str]:
        """What the server wrote to stderr (WARNING and above), less its start-up line."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if "listening on" not in line]


@dataclass
class RunTimes:
    run_id: int
    running: float | None = None  # seconds after the submit was sent
    ended: float | None = None


@contextlib.asynccontextmanager
async def coral_server(
    tmp: Path, claude: Path, fake: FakeAnthropic, cap: int, log_level: str = "WARNING"
) -> AsyncIterator[Coral]:
    """A server process (`python -m coral_server`) whose claude CLI talks to `fake`."""
    data = tmp / "data"
    log_path = tmp / "server.log"
    cmd = [sys.executable, "-m", "coral_server", "--port", "0", "--data-dir", str(data)]
    cmd += ["--log-level", log_level, "--claude-bin", str(claude), "--anthropic-base-url", fake.base_url]
    cmd += ["--max-concurrent-jobs", str(cap)]
    env = {**os.environ, "CORAL_SERVER_ANTHROPIC_API_KEY": API_KEY}
    # The log goes to a file: an undrained pipe would block the server once full.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stderr=log, env=env, cwd=tmp)
    try:
        url = await listening_url(proc, log_path)
        async with aiohttp.ClientSession() as http:
            yield Coral(proc, url, log_path, http)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def listening_url(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if "listening on " in line:
                return line.split("listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise BenchError(f"the server exited: {text}")
        await asyncio.sleep(0.05)
    raise BenchError("the server did not start within 60 s")


def job_body(repo: Path) -> dict[str, Any]:
    return {"prompt": PROMPT, "repo_path": str(repo), "flags": FLAGS, "max_duration_s": 600}


def check_run(run: dict[str, Any]) -> None:
    """A finished run did what the script says: completed, one commit on its branch, the answer."""
    result = run.get("result") or {}
    agent = result.get("agent") or {}
    if run["status"] != "completed" or result.get("commit_count") != 1 or agent.get("text") != ANSWER:
        summary = {k: run.get(k) for k in ("status", "exit_reason", "error_msg")}
        raise BenchError(
            f"run {run['id']}: {summary}, commits {result.get('commit_count')}, answer {agent.get('text')!r}"
        )


async def server_run(coral: Coral, repo: Path) -> tuple[RunTimes, dict[str, Any]]:
    """Submit one job and follow it to its end."""
    started = time.perf_counter()
    status, out, _ = await coral.submit(job_body(repo))
    if status != 200:
        raise BenchError(f"submit: {status} {out}")
    times = await coral.follow(out["run_id"], started)
    run = await coral.get(f"/api/tasks/runs/{out['run_id']}")
    check_run(run)
    return times, run


@dataclass
class HandRun:
    """A job done by hand: `git worktree add`, the CLI in it, `git worktree remove`."""

    add: float
    agent: float
    remove: float

    @property
    def total(self) -> float:
        return self.add + self.agent + self.remove


@dataclass
class Hand:
    """What the hand runs need: the repository, where to put worktrees, the CLI and its endpoint."""

    repo: Path
    tmp: Path
    claude: Path
    endpoint: Endpoint
    # The environment the server gives its CLIs: its own, less its settings.
    base_env: dict[str, str] = field(
        default_factory=lambda: {k: v for k, v in os.environ.items() if not k.startswith("CORAL_")}
    )

    async def add(self, branch: str, path: Path) -> None:
        """`git worktree add`, again after a failure that only says another add was half-way (as the
        server does: concurrent adds on one repository meet each other's half-made entries)."""
        for attempt in range(20):
            try:
                await git(self.repo, "worktree", "add", "--quiet", "-b", branch, str(path), "main")
                return
            except GitFailed as exc:
                if not is_transient(exc.result.stderr) or attempt == 19:
                    raise
            # Take back what the failed attempt made, as the server does before its retry.
            await git(self.repo, "worktree", "remove", "--force", str(path), check=False)
            await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
            await git(self.repo, "worktree", "prune", check=False)
            await git(self.repo, "branch", "-D", branch, check=False)
            await asyncio.sleep(0.02 * (attempt + 1))

    async def run(self, name: str) -> HandRun:
        cli = agent_cli("claude")
        path, home = self.tmp / f"hand_{name}", self.tmp / f"hand_home_{name}"
        branch = f"hand-{name}"
        started = time.perf_counter()
        await self.add(branch, path)
        added = time.perf_counter()
        cli.prepare_home(home, path, self.endpoint)
        launch = cli.launch(
            binary=str(self.claude),
            prompt=PROMPT,
            flags=FLAGS,
            endpoint=self.endpoint,
            home=home,
            mode="headless",
            base_env=self.base_env,
        )
        finished = await run_headless(launch, path, RUN_TIMEOUT_S)
        ran = time.perf_counter()
        await git(self.repo, "worktree", "remove", "--force", str(path))
        removed = time.perf_counter()
        result = cli.parse_headless(finished.stdout)
        commits = (await git(self.repo, "rev-list", "--count", f"main..{branch}")).text.strip()
        if finished.returncode != 0 or result.text != ANSWER or commits != "1":
            raise BenchError(
                f"hand run {name}: exit {finished.returncode}, {result.text!r}, {commits} commits, "
                f"{finished.stderr!r}"
            )
        return HandRun(added - started, ran - added, removed - ran)


async def part_server(args: argparse.Namespace, tmp: Path, repo: Path) -> None:
    """Part 2: a real server beside the same work done by hand, then a queue through the cap."""
    claude = claude_binary(args.claude_bin)
    print(
        f"== 2. through the server: claude {claude_version(claude)}, a scripted fake API, {args.files} files"
    )
    print(f"   load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    async with FakeAnthropic(SCRIPT) as fake:
        hand = Hand(repo, tmp, claude, Endpoint(Secret(API_KEY), fake.base_url))
        async with coral_server(tmp, claude, fake, args.cap, args.server_log_level) as coral:
            try:
                await one_job_rounds(args, coral, hand, repo)
                await queue_through_cap(args, coral, hand, repo)
            finally:
                if args.keep_server_log:
                    shutil.copyfile(coral.log_path, args.keep_server_log)
                lines = coral.server_lines()
                print(f"   server log lines (WARNING and above): {len(lines)}")
                for line in lines[:20]:
                    print(f"     {line[:300]}")
        if fake.errors:
            print(f"   fake API errors: {fake.errors}")


async def one_job_rounds(args: argparse.Namespace, coral: Coral, hand: Hand, repo: Path) -> None:
    print(f"-- 2a/2b. one job at a time: {args.rounds} rounds (+1 warm-up), sides alternating")
    to_running: list[float] = []
    to_end: list[float] = []
    hands: list[HandRun] = []
    for n in range(args.rounds + 1):
        if n % 2 == 0:
            times, _ = await server_run(coral, repo)
            by_hand = await hand.run(str(n))
        else:
            by_hand = await hand.run(str(n))
            times, _ = await server_run(coral, repo)
        if n == 0:
            continue  # warm-up: the server's first run, the CLI's first start
        assert times.running is not None and times.ended is not None
        to_running.append(times.running)
        to_end.append(times.ended)
        hands.append(by_hand)
    adds = [h.add for h in hands]
    print(wall_row("plain git worktree add", adds))
    print(wall_row("submit -> running (server)", to_running))
    verdict("(a) submit -> running / plain add", to_running, adds, TARGET_RATIO, TARGET_SLACK_MS)
    print(wall_row("hand: claude -p", [h.agent for h in hands]))
    print(wall_row("hand: git worktree remove", [h.remove for h in hands]))
    print(wall_row("hand: whole run", [h.total for h in hands]))
    print(wall_row("submit -> completed (server)", to_end))
    print(wall_row("  running -> completed", [e - r for e, r in zip(to_end, to_running, strict=True)]))
    verdict(
        "(b) submit -> completed / hand run",
        to_end,
        [h.total for h in hands],
        RUN_TARGET_RATIO,
        RUN_TARGET_SLACK_MS,
    )


@dataclass
class Peaks:
    """The most runs (and CLI processes) the sampler saw at once."""

    running: int = 0  # GET /api/tasks/runs?status=running
    active: int = 0  # pending + running + waiting_input in one listing
    with_worktree: int = 0  # active runs whose worktree is made (claimed and past `git worktree add`)
    processes: int = 0  # the server's claude processes in /proc
    samples: int = 0
    errors: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def sampling(coral: Coral, claude: Path) -> AsyncIterator[Peaks]:
    """A sampler running while the block runs; its peaks."""
    peaks, stop = Peaks(), asyncio.Event()
    sampler = asyncio.create_task(sample(coral, claude, peaks, stop))
    try:
        yield peaks
    finally:
        stop.set()
        await sampler


def process_cpu(pid: int) -> float:
    """CPU seconds of a process itself (user + system; not its children)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample(coral: Coral, claude: Path, peaks: Peaks, stop: asyncio.Event) -> None:
    """Poll the listings and /proc until `stop`, keeping the peaks."""
    exe = str(claude.resolve())
    while not stop.is_set():
        try:
            running = await coral.get("/api/tasks/runs?status=running&limit=200")
            listing = await coral.get("/api/tasks/runs?limit=200")
        except (aiohttp.ClientError, BenchError) as exc:
            peaks.errors.append(f"sampler: {exc}")
            running, listing = {"runs": []}, {"runs": []}
        statuses = [r["status"] for r in listing["runs"]]
        peaks.running = max(peaks.running, len(running["runs"]))
        peaks.active = max(peaks.active, sum(s in ACTIVE for s in statuses))
        made = [r for r in listing["runs"] if r["status"] in ACTIVE and r["worktree_path"]]
        peaks.with_worktree = max(peaks.with_worktree, len(made))
        peaks.processes = max(peaks.processes, await asyncio.to_thread(cli_processes, coral.proc.pid, exe))
        peaks.samples += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SAMPLE_S):
                await stop.wait()


def cli_processes(root: int, exe: str) -> int:
    """Processes under `root` running `exe` whose parent does not (one per CLI run)."""
    parents: dict[int, int] = {}
    exes: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                parents[pid] = int(stat.read().rsplit(b")", 1)[1].split()[1])
            exes[pid] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue  # gone meanwhile, or a kernel thread

    def under_root(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    return sum(
        1 for pid, path in exes.items() if path == exe and exes.get(parents[pid]) != exe and under_root(pid)
    )


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at the same instant as a start comes first)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Floor:
    """Hand runs through a semaphore: how long they took, each run, the idle server's CPU meanwhile."""

    seconds: float
    runs: list[HandRun]
    server_cpu: float


async def settle(args: argparse.Namespace) -> None:
    """Let the files the previous block deleted age before the next block creates its worktrees.

    On ext4 without a journal (this machine's disk, for one) the kernel does not reuse an inode freed
    in the last ~30 s, and skips each such inode one by one on every allocation: a 10,000-file
    checkout within 30 s of removing a few worktrees of the same size takes 5-20x longer. Without a
    pause, whichever block comes right after another's removals would pay for them.
    """
    if args.settle_s > 0:
        await asyncio.sleep(args.settle_s)


async def queue_floor(coral: Coral, hand: Hand, runs: int, cap: int, name: str) -> Floor:
    slots = asyncio.Semaphore(cap)

    async def one(n: int) -> HandRun:
        async with slots:
            return await hand.run(f"{name}_{n}")

    # The sampler runs here too (against the idle server), so both sides pay for it.
    cpu_before = process_cpu(coral.proc.pid)
    async with sampling(coral, hand.claude):
        started = time.perf_counter()
        done = await asyncio.gather(*(one(n) for n in range(runs)))
        seconds = time.perf_counter() - started
    return Floor(seconds, list(done), process_cpu(coral.proc.pid) - cpu_before)


async def queue_through_cap(args: argparse.Namespace, coral: Coral, hand: Hand, repo: Path) -> None:
    print(
        f"-- 2c. {args.runs} runs through a cap of {args.cap}: one client, re-submitting {args.retry_s:g} s "
        "after a 429 (instead of its Retry-After)"
    )
    floors: list[Floor] = []
    if args.queue_floor:  # its first half before the server's runs, its second after them
        await settle(args)
        floors.append(await queue_floor(coral, hand, args.runs // 2, args.cap, "q1"))
        await settle(args)

    ids: list[int] = []
    followers: list[asyncio.Task[RunTimes]] = []
    accepted: list[float] = []
    refused: list[float] = []
    retry_after: set[str | None] = set()
    errors: list[str] = []
    cpu_before = process_cpu(coral.proc.pid)
    async with sampling(coral, hand.claude) as peaks:
        started = time.perf_counter()
        try:
            for _ in range(args.runs):
                while True:
                    sent = time.perf_counter()
                    status, out, after = await coral.submit(job_body(repo))
                    took = time.perf_counter() - sent
                    if status == 200:
                        accepted.append(took)
                        ids.append(out["run_id"])
                        followers.append(asyncio.create_task(coral.follow(out["run_id"], sent)))
                        break
                    if status != 429:
                        errors.append(f"submit: {status} {out}")
                        break
                    refused.append(took)
                    retry_after.add(after)
                    await asyncio.sleep(args.retry_s)
            ended = await asyncio.gather(*followers, return_exceptions=True)
            total_s = time.perf_counter() - started
        finally:
            for task in followers:
                task.cancel()
    server_cpu = process_cpu(coral.proc.pid) - cpu_before
    if args.queue_floor:
        await settle(args)
        floors.append(await queue_floor(coral, hand, args.runs - args.runs // 2, args.cap, "q2"))
    errors += [f"{e!r}" for e in ended if isinstance(e, BaseException)] + peaks.errors

    runs = [await coral.get(f"/api/tasks/runs/{run_id}") for run_id in ids]
    for run in runs:
        try:
            check_run(run)
        except BenchError as exc:
            errors.append(str(exc))
    running = [(unix(r["started_at"]), unix(r["finished_at"])) for r in runs if r["started_at"]]
    active = [(unix(r["created_at"]), unix(r["finished_at"])) for r in runs if r["finished_at"]]
    done = sum(r["status"] == "completed" for r in runs)

    print(f"   completed {done} of {args.runs} in {total_s:.1f} s: {done / total_s:.2f} runs/s")
    if floors:
        floor_s = sum(f.seconds for f in floors)
        halves = " + ".join(f"{f.seconds:.1f} s" for f in floors)
        print(
            f"   floor: {args.runs} hand runs through a semaphore of {args.cap} in {floor_s:.1f} s "
            f"({halves}, before and after): {args.runs / floor_s:.2f} runs/s; "
            f"server/floor time {total_s / floor_s:.2f}x"
        )
        hand_runs = [h for f in floors for h in f.runs]
        print(wall_row("floor: git worktree add", [h.add for h in hand_runs]))
        print(wall_row("floor: claude -p", [h.agent for h in hand_runs]))
        print(wall_row("floor: git worktree remove", [h.remove for h in hand_runs]))
    # The server's own clock (ms): admission -> the CLI started (claim + worktree + spawn), and the
    # CLI started -> the run ended (the CLI, then finish + cleanup).
    admitted = [unix(r["started_at"]) - unix(r["created_at"]) for r in runs if r["started_at"]]
    print(wall_row("server: admitted -> running", admitted))
    print(wall_row("server: running -> ended", [end - start for start, end in running]))
    idle = f"; {sum(f.server_cpu for f in floors):.1f} s while idle beside the floor (the sampler's share)"
    print(
        f"   server process CPU (not its children: git, claude): {server_cpu:.1f} s{idle if floors else ''}"
    )
    print(f"   submits: {len(accepted)} accepted (p50 {ms(statistics.median(accepted)).strip()}), ", end="")
    if refused:
        p50 = ms(statistics.median(refused)).strip()
        print(f"{len(refused)} refused with 429 (p50 {p50}, Retry-After {sorted(map(str, retry_after))})")
    else:
        print("none refused")
    print(
        f"   seen at once ({peaks.samples} samples): running {peaks.running}, active {peaks.active} "
        f"(with a worktree {peaks.with_worktree}), claude processes {peaks.processes}"
    )
    print(
        f"   from the runs' timestamps: at most {max_overlap(running)} running, "
        f"{max_overlap(active)} admitted and not ended"
    )
    most = max(peaks.running, peaks.active, peaks.processes, max_overlap(running), max_overlap(active))
    print(f"   never more than {args.cap} running: {'OK' if most <= args.cap else f'OVERSHOOT ({most})'}")
    print(f"   errors: {len(errors)}")
    for error in errors[:10]:
        print(f"     {error[:300]}")


def claude_binary(given: str | None) -> Path:
    """The claude CLI: `--claude-bin`, else where the server would look (`$CORAL_TOOLS_DIR`, `.tools/`,
    PATH)."""
    if given:
        return Path(given)
    tools = [Path(os.environ["CORAL_TOOLS_DIR"])] if os.environ.get("CORAL_TOOLS_DIR") else []
    found = find_binary(agent_cli("claude"), [*tools, REPO_ROOT / ".tools"], os.environ.get("PATH"))
    if found is None:
        raise SystemExit("no claude CLI: run scripts/install-clis.sh claude, or pass --claude-bin")
    return found


def claude_version(claude: Path) -> str:
    done = subprocess.run([str(claude), "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip().split(" ")[0]


PARTS: dict[str, Callable[[argparse.Namespace, Path, Path], Awaitable[None]]] = {
    "worktree": part_worktree,
    "server": part_server,
}


async def git_version() -> str:
    return (await git(Path.cwd(), "--version")).text.strip().removeprefix("git version ")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs (smoke test)")
    parser.add_argument("--rounds", type=int, help="measured rounds per side (default 7, quick 3)")
    parser.add_argument("--files", type=int, default=10_000, help="files in the generated repository")
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--runs", type=int, help="runs through the cap (default 50, quick 15)")
    parser.add_argument("--cap", type=int, default=5, help="the server's max_concurrent_jobs")
    parser.add_argument("--retry-s", type=float, default=0.05, help="the client's wait after a 429")
    parser.add_argument(
        "--no-queue-floor", dest="queue_floor", action="store_false", help="skip the hand runs beside 2c"
    )
    parser.add_argument("--claude-bin", help="the claude CLI (default: as the server finds it)")
    parser.add_argument(
        "--settle-s", type=float, default=35.0, help="pause between the blocks of 2c (see `settle`)"
    )
    parser.add_argument("--server-log-level", default="WARNING", help="the server's --log-level")
    parser.add_argument("--keep-server-log", metavar="PATH", help="copy the server's log to PATH")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    if args.runs is None:
        args.runs = 15 if args.quick else 50
    with tempfile.TemporaryDirectory(prefix="coral-jobs-bench-") as tmp:
        started = time.perf_counter()
        repo = await asyncio.to_thread(generate_repository, Path(tmp), args.files)
        await commit_repository(repo)
        took = time.perf_counter() - started
        print(f"== repository: {args.files} files generated and committed in {took:.1f} s")
        for name, part in PARTS.items():
            if args.part in (name, "all"):
                await part(args, Path(tmp), repo)


if __name__ == "__main__":
    asyncio.run(main())
