"""Fixtures for the job tests: a real git repository, and running a CLI headless."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from coral_server.jobs.agents import Launch


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A git repository on `main` with one commit (and an identity, so an agent can commit)."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "config", "user.email", "agent@example.invalid")
    git(repo, "config", "user.name", "Agent")
    (repo / "README.md").write_text("# repo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    return repo


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def run_headless(launch: Launch, cwd: Path, timeout: float = 90.0) -> Finished:
    """Run a headless launch to its end (stdin /dev/null, its own process group)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *launch.argv,
        cwd=str(cwd),
        env=launch.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)
