"""Where the tests find the real coding-agent CLIs (installed by scripts/install-clis.sh).

`CORAL_<NAME>_BIN` names one executable; otherwise `$CORAL_TOOLS_DIR/<name>/node_modules/.bin/<exe>`,
then `<repo>/.tools/...`. A missing CLI skips its tests, unless `CORAL_TEST_CLIS=1` (CI): then they fail.
"""

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

from coral_server.jobs.agents import Launch, agent_cli, find_binary

REPO = Path(__file__).resolve().parents[2]


def tools_dirs() -> list[Path]:
    dirs = [Path(os.environ["CORAL_TOOLS_DIR"])] if os.environ.get("CORAL_TOOLS_DIR") else []
    return [*dirs, REPO / ".tools"]


def cli_binary(agent_type: str, required: bool = False) -> Path:
    """The CLI's executable, or skip the test (fail under `CORAL_TEST_CLIS=1` or `required`)."""
    override = os.environ.get(f"CORAL_{agent_type.upper()}_BIN")
    found = Path(override) if override else find_binary(agent_cli(agent_type), tools_dirs())
    if found is not None and os.access(found, os.X_OK):
        return found
    why = f"no {agent_type} CLI (run scripts/install-clis.sh, or set CORAL_{agent_type.upper()}_BIN)"
    if required or os.environ.get("CORAL_TEST_CLIS") == "1":
        raise AssertionError(f"{why}; CORAL_TEST_CLIS=1 requires it")
    pytest.skip(why)


def claude_binary(required: bool = False) -> Path:
    return cli_binary("claude", required)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def agent_repo(tmp_path: Path) -> Path:
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
