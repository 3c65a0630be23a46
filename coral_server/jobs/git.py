"""Running `git` as an asyncio subprocess: a clean environment, timeouts, retries while a lock is held."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_LOCK_WAIT_S", "DEFAULT_TIMEOUT_S", "GitFailed", "GitResult", "git", "lock_path_of"]

log = logging.getLogger("coral_server.jobs.git")

DEFAULT_TIMEOUT_S = 300.0  # a checkout of a large repository on a slow disk
DEFAULT_LOCK_WAIT_S = 3.0  # how long to retry while another git process holds a lock we need
_STOP_GRACE_S = 5.0

# Variables that point git at another repository, index or object store: a server started from a git
# hook (or a test run under one) would otherwise act on the wrong repository.
_REDIRECTING_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)
_LOCK_HELD = re.compile(r"Unable to create '([^']+\.lock)': File exists|could not lock config file ([^:]+):")


@dataclass(frozen=True, slots=True)
class GitResult:
    """What one git command did: its arguments, exit code, output and (decoded) error output."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class GitFailed(Exception):
    """A git command failed (or timed out); `str(err)` names the command and git's own message."""

    def __init__(self, result: GitResult, cwd: Path | str) -> None:
        self.result = result
        self.cwd = str(cwd)
        said = " ".join(result.stderr.strip().splitlines()[-3:]) or f"exit code {result.returncode}"
        super().__init__(f"git {' '.join(result.args)} failed in {self.cwd}: {said}")

    @property
    def lock_path(self) -> str | None:
        """The lock file another process holds, when that is why the command failed."""
        return lock_path_of(self.result.stderr)


def lock_path_of(stderr: str) -> str | None:
    """The `.lock` file named in git's "File exists" message, or None when git failed for another reason."""
    found = _LOCK_HELD.search(stderr)
    if found is None:
        return None
    return found.group(1) or found.group(2)


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING_ENV}
    env["LC_ALL"] = "C"  # messages we match (locks, "already exists") are the English ones
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password on a terminal nobody watches
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `status` must not take index.lock behind the user's back
    if extra:
        env.update(extra)
    return env


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (git removes a half-made worktree on it), then SIGKILL if it lingers."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _run_once(
    cwd: Path | str, args: tuple[str, ...], input: bytes | None, env: dict[str, str], timeout_s: float
) -> GitResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(cwd),
            *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError:
        return GitResult(args, 127, b"", "git is not installed (not found on PATH)")
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(input)
    except TimeoutError:
        await _stop(proc)
        return GitResult(args, -1, b"", f"timed out after {timeout_s:g} s")
    except BaseException:  # cancelled: do not leave git running on its own
        await _stop(proc)
        raise
    return GitResult(args, proc.returncode or 0, out, err.decode("utf-8", "replace"))


async def git(
    cwd: Path | str,
    *args: str,
    check: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    lock_wait_s: float = 0.0,
) -> GitResult:
    """Run `git -C cwd args...` without blocking the loop.

    While another process holds a lock the command needs (index.lock, config.lock, a ref's lock), it is
    retried with a growing pause for up to `lock_wait_s`; git takes those locks only for milliseconds, so
    a lock still held after that is reported (`GitFailed.lock_path`). With `check`, a non-zero exit raises
    `GitFailed`.
    """
    full_env = _environment(env)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock_wait_s
    pause = 0.02
    while True:
        result = await _run_once(cwd, args, input, full_env, timeout_s)
        if result.ok or lock_wait_s <= 0:
            break
        held = lock_path_of(result.stderr)
        if held is None or loop.time() + pause > deadline:
            break
        log.info("git.lock_busy cwd=%s lock=%s command=%s", cwd, held, args[0] if args else "")
        await asyncio.sleep(pause)  # git's own lock timeouts poll the same way
        pause = min(pause * 2, 0.25)
    if check and not result.ok:
        raise GitFailed(result, cwd)
    return result
