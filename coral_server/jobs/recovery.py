"""Recovering run worktrees after a crash: preserve their uncommitted work, remove them, prune."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container
from pathlib import Path

from coral_server.jobs.git import DEFAULT_LOCK_WAIT_S, git
from coral_server.jobs.repository import PathLike, normalise
from coral_server.jobs.worktree import (
    DEFAULT_AUTHOR,
    GitAuthor,
    Worktree,
    WorktreeResult,
    cleanup_worktree,
    finish_worktree,
    list_worktrees,
    run_branch,
    worktree_path,
)

__all__ = ["recover_worktree", "recover_worktrees"]

log = logging.getLogger("coral_server.jobs.recovery")


async def recover_worktree(
    repo_path: PathLike,
    run_id: int,
    *,
    base_sha: str | None = None,
    owner: str | None = None,
    remove: bool = True,
    author: GitAuthor = DEFAULT_AUTHOR,
    delete_empty_branch: bool = True,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
) -> WorktreeResult | None:
    """After a crash: preserve the uncommitted work of run `run_id`'s worktree, remove it (`remove`), prune.

    Finds the worktree by its lock (run id and `owner`, as given at creation) or, unlocked, by its path;
    `base_sha` defaults to the one in the lock reason. A worktree whose directory is gone is pruned.
    Returns what the run's branch holds, or None when the run left neither a worktree nor a branch.
    """
    repo = normalise(repo_path)
    expected = await asyncio.to_thread(worktree_path(repo, run_id).resolve)
    entry = None
    for e in await list_worktrees(repo, lock_wait_s=lock_wait_s):
        ours = e.run_id == run_id and e.owner == owner
        if ours or (e.run_id is None and await asyncio.to_thread(e.path.resolve) == expected):
            entry = e
            break
    if entry is None:
        await git(repo, "worktree", "prune", check=False, lock_wait_s=lock_wait_s)
        gone = Worktree(run_id, repo, worktree_path(repo, run_id), run_branch(run_id), base_sha)
        left = await finish_worktree(gone, author=author)  # no directory: describes the branch
        return left if left.head_sha is not None else None
    wt = Worktree(run_id, repo, entry.path, run_branch(run_id), base_sha or entry.base_sha)
    if remove:
        result = await cleanup_worktree(
            wt, author=author, delete_empty_branch=delete_empty_branch, lock_wait_s=lock_wait_s
        )
    else:
        result = await finish_worktree(wt, author=author, lock_wait_s=lock_wait_s)
        await git(repo, "worktree", "prune", check=False, lock_wait_s=lock_wait_s)
    log.info("worktree.recovered run=%s path=%s removed=%s", run_id, entry.path, result.worktree_removed)
    return result


async def recover_worktrees(
    repo_path: PathLike,
    *,
    active_run_ids: Container[int],
    owner: str | None = None,
    remove: bool = True,
    author: GitAuthor = DEFAULT_AUTHOR,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
) -> dict[int, WorktreeResult]:
    """Recover every worktree a run of `owner` still has locked unless the run is in `active_run_ids`.

    Worktrees of finished runs kept on purpose (cleanup_worktree=false) are unlocked, so never touched.
    """
    results: dict[int, WorktreeResult] = {}
    for e in await list_worktrees(repo_path, lock_wait_s=lock_wait_s):
        if e.run_id is None or e.owner != owner or e.run_id in active_run_ids:
            continue
        found = await recover_worktree(
            repo_path,
            e.run_id,
            base_sha=e.base_sha,
            owner=owner,
            remove=remove,
            author=author,
            lock_wait_s=lock_wait_s,
        )
        if found is not None:
            results[e.run_id] = found
    await git(Path(repo_path), "worktree", "prune", check=False, lock_wait_s=lock_wait_s)
    return results
