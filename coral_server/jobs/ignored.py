"""Copying ignored files (`.env`, local settings) from a repository into a run's new worktree on request.

Only files git ignores are copied: a tracked file is already in the worktree (at the base commit), and an
untracked file that is not ignored would be committed with the run's work (a secret in a branch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from coral_server.jobs.git import GitFailed, git
from coral_server.jobs.repository import RepositoryInvalid

__all__ = ["check_copy_patterns", "copy_ignored_files"]

log = logging.getLogger("coral_server.jobs.ignored")


def check_copy_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """The patterns, if each is a relative path or glob inside the repository (else RepositoryInvalid)."""
    if isinstance(patterns, str):
        raise RepositoryInvalid("copy_ignored", "must be a list of paths or globs")
    for i, p in enumerate(patterns):
        field = f"copy_ignored[{i}]"
        if not isinstance(p, str) or not p.strip() or "\0" in p:
            raise RepositoryInvalid(field, "must be a non-empty path or glob")
        parts = PurePosixPath(p).parts
        if not parts or p.startswith("/") or ".." in parts:
            raise RepositoryInvalid(field, f"{p!r} must be relative to the repository, without '..'")
        if parts[0] == ".git":
            raise RepositoryInvalid(field, f"{p!r}: nothing is copied from .git")
    return tuple(patterns)


def _expand(root: Path, patterns: Sequence[str]) -> list[str]:
    """Existing matches of the patterns inside `root`, as relative paths (blocking: run in a thread)."""
    real_root = root.resolve()
    found: dict[str, None] = {}
    for pattern in patterns:
        matches = root.glob(pattern) if any(c in pattern for c in "*?[") else [root / pattern]
        for match in matches:
            rel = match.relative_to(root)
            if not rel.parts or rel.parts[0] == ".git" or not os.path.lexists(match):
                continue
            # Read nothing through a symlinked directory that leads out of the repository.
            if not Path(os.path.realpath(match.parent)).is_relative_to(real_root):
                continue
            found[rel.as_posix()] = None
    return list(found)


def _copy(root: Path, dest: Path, rels: Sequence[str]) -> None:
    for rel in rels:
        src, dst = root / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)


async def copy_ignored_files(root: Path, dest: Path, patterns: Sequence[str]) -> tuple[str, ...]:
    """Copy the matches git ignores (never tracked or merely untracked files: those could get committed)."""
    candidates = await asyncio.to_thread(_expand, root, patterns)
    if not candidates:
        return ()
    feed = b"".join(os.fsencode(c) + b"\0" for c in candidates)
    r = await git(root, "check-ignore", "-z", "--stdin", input=feed, check=False)
    if r.returncode not in (0, 1):
        raise GitFailed(r, root)
    ignored = {os.fsdecode(p) for p in r.stdout.split(b"\0") if p}
    chosen = [c for c in candidates if c in ignored]
    skipped = [c for c in candidates if c not in ignored]
    if skipped:
        log.info("worktree.copy_skipped dest=%s paths=%s (not ignored by git)", dest, skipped)
    await asyncio.to_thread(_copy, root, dest, chosen)
    return tuple(chosen)
