"""Running `git` as an asyncio subprocess: a clean environment, timeouts, retries while a lock is held."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_LOCK_WAIT_S",
    "DEFAULT_TIMEOUT_S",
    "GitFailed",
    "GitResult",
    "git",
    "is_transient",
    "lock_path_of",
]

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
# Commands that list worktrees die when they meet one that `git worktree add` is still writing.
_WORKTREE_BEING_ADDED = re.compile(r"failed to read \S*worktrees/[^/\s]+/(?:commondir|gitdir)")


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


def is_transient(stderr: str) -> bool:
    """Whether git failed only because another git process was busy (a lock, a worktree being added)."""
    return lock_path_of(stderr) is not None or _WORKTREE_BEING_ADDED.search(stderr) is not None


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING_ENV}
    env["LC_ALL"] = "C"  # messages we match (locks, "already exists") are the English ones
    env["GIT_TERMINAL_PROMPT"] = "0"  # never wait for a password on a terminal nobody watches
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `status` must not take index.lock behind the user's back
    if extra:
        env.update(extra)
    return env


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # git and the git commands it started (its own session)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to git's process group (git removes what it half made), then SIGKILL if it lingers."""
    if proc.returncode is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
    except TimeoutError:
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()


async def _run_once(
    cwd: Path | str,
    args: tuple[str, ...],
    input: bytes | None,
    env: dict[str, str],
    timeout_s: float,
    finish_on_cancel: bool,
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
            start_new_session=True,  # a Ctrl-C meant for the server does not cut git off mid-way
        )
    except FileNotFoundError:
        return GitResult(args, 127, b"", "git is not installed (not found on PATH)")
    work = asyncio.ensure_future(proc.communicate(input))
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await (asyncio.shield(work) if finish_on_cancel else work)
    except TimeoutError:
        await _stop(proc)
        await asyncio.gather(work, return_exceptions=True)
        return GitResult(args, -1, b"", f"timed out after {timeout_s:g} s")
    except asyncio.CancelledError:
        try:
            if finish_on_cancel:  # let git complete, so that the caller can undo a whole step
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(work), timeout_s)
        finally:
            await _stop(proc)
            await asyncio.gather(work, return_exceptions=True)
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
    finish_on_cancel: bool = False,
) -> GitResult:
    """Run `git -C cwd args...` without blocking the loop.

    While another process holds a lock the command needs (index.lock, config.lock, a ref's lock), or
    another `git worktree add` is half-way (commands listing worktrees die on it), the command is retried
    with a growing pause for up to `lock_wait_s`; git holds those states only for milliseconds, so a
    lock still held after that is reported (`GitFailed.lock_path`). Use it only for commands that change
    nothing when they fail that way (`git worktree add` may have made its branch: see `worktree.py`).
    With `check`, a non-zero exit raises `GitFailed`.

    When the caller is cancelled, git is stopped (SIGTERM to its process group), or with
    `finish_on_cancel` allowed to complete first (for steps the caller then undoes as a whole: stopping
    `git worktree add` midway races its own clean-up against the checkout it started).
    """
    full_env = _environment(env)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock_wait_s
    pause = 0.02
    while True:
        result = await _run_once(cwd, args, input, full_env, timeout_s, finish_on_cancel)
        if result.ok or lock_wait_s <= 0:
            break
        if not is_transient(result.stderr) or loop.time() + pause > deadline:
            break
        said = result.stderr.strip().splitlines()[-1:]
        log.info("git.busy_retry cwd=%s command=%s error=%s", cwd, " ".join(args[:2]), said)
        await asyncio.sleep(pause)  # git's own lock timeouts poll the same way
        pause = min(pause * 2, 0.25)
    if check and not result.ok:
        raise GitFailed(result, cwd)
    return result
