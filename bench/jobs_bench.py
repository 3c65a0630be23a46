"""Benchmark one-time jobs against floors measured in the same run.

    .venv/bin/python bench/jobs_bench.py [--quick] [--rounds N] [--files N] [--part worktree|server|all]

1. `worktree`: the git side of starting a job. A repository of 10,000 committed files is generated in a
   temp dir; each round times our `create_worktree` (validation + a locked `git worktree add` on a new
   branch) and a plain `git worktree add --quiet -b <branch> <path> main` of the same repository, in
   alternating order, plus our finish + cleanup beside a plain `git worktree remove`. Medians and ratios
   are printed. Target (`benchmarks.md`): job submit -> running <= 1.2x + 50 ms of the plain add; this
   part is the git share of that budget.
2. `server`: submit -> running through the server, and 50 queued runs through a cap of 5 (throughput,
   never more than 5 running). Not written yet: `part_server` below is where it goes.

Everything runs on this machine in temp dirs that are removed at the end; nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from coral_server.jobs.git import git
from coral_server.jobs.worktree import cleanup_worktree, create_worktree, validate_repository

TARGET_RATIO, TARGET_SLACK_MS = 1.2, 50.0
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


async def part_worktree(args: argparse.Namespace) -> None:
    print(f"== 1. worktree overhead: {args.files} files, {args.rounds} rounds (+1 warm-up)")
    print(f"   load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; git {await git_version()}")
    ours: list[Sample] = []
    plain: list[Sample] = []
    validation: list[Sample] = []
    our_cleanup: list[Sample] = []
    plain_remove: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="coral-jobs-bench-") as tmp:
        started = time.perf_counter()
        repo = await asyncio.to_thread(generate_repository, Path(tmp), args.files)
        await commit_repository(repo)
        print(f"   generated and committed in {time.perf_counter() - started:.1f} s")
        for n in range(args.rounds + 1):
            plain_path = Path(tmp) / f"plain_{n}"
            plain_add = ("worktree", "add", "--quiet", "-b", f"plain-{n}", str(plain_path), "main")
            # Alternate who goes first, so neither side always meets a warmer cache.
            if n % 2 == 0:
                t_ours, wt = await timed(create_worktree(str(repo), n, base_branch="main"))
                t_plain, _ = await timed(git(repo, *plain_add))
            else:
                t_plain, _ = await timed(git(repo, *plain_add))
                t_ours, wt = await timed(create_worktree(str(repo), n, base_branch="main"))
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
    print("   (cleanup = status, describe, unlock, remove, prune, delete the empty branch)")


async def part_server(args: argparse.Namespace) -> None:
    """Part 2 (the coordinator adds it): submit -> running through a real server, beside part 1's plain
    `git worktree add`; then 50 queued runs through a cap of 5: throughput, and never more than 5 running."""
    print("== 2. submit -> running through the server; 50 queued runs through a cap of 5: not written yet")


PARTS: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
    "worktree": part_worktree,
    "server": part_server,
}


async def git_version() -> str:
    return (await git(Path.cwd(), "--version")).text.strip().removeprefix("git version ")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument("--rounds", type=int, help="measured rounds per side (default 7, quick 3)")
    parser.add_argument("--files", type=int, default=10_000, help="files in the generated repository")
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    for name, part in PARTS.items():
        if args.part in (name, "all"):
            await part(args)


if __name__ == "__main__":
    asyncio.run(main())
