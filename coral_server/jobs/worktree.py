"""Git worktrees of job runs: creating them, preserving the work in them, removing them.

Decisions (the API and the coordinator rely on them; `repository.py` has those of validation):

* A run's worktree is `{repo_path}_task_run_{run_id}` on branch `coral/run-{run_id}`, created locked
  with the reason `coral run <id> (base <sha>)`: the lock marks it as in use by a run (a user's
  `git worktree prune/remove` leaves it alone) and lets crash recovery (`recovery.py`) find it and its
  base. The worktree starts at the base branch's commit as resolved at creation (`base_sha`).
* Finishing never loses work: uncommitted changes, untracked files included and ignored files excluded,
  are committed to the branch the worktree is on (hooks and signing off, author from the settings),
  then the worktree is unlocked. An agent that left HEAD detached on commits no branch holds gets them
  kept on `coral/run-<id>-detached`. Cleanup then removes the worktree (still locked: a forced removal
  takes it; it prunes only if that failed); the branch stays, except a run branch with no commit beyond
  its base, which is deleted (nothing is on it). Finishing runs only the git commands the case needs:
  a run that changed nothing costs 4 (status, rev-parse, remove, delete the empty branch), a run with
  commits and uncommitted work 7 (status, add, commit, rev-parse, diff, rev-list, remove).
* `create_worktree=false` (`use_repository_in_place`): the run works in the repository itself on
  whatever is checked out; nothing is created, committed or removed there. Its result reports the
  checked-out branch, HEAD before and after, and what is left uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coral_server.jobs.git import DEFAULT_LOCK_WAIT_S, GitFailed, GitResult, git, is_transient
from coral_server.jobs.ignored import check_copy_patterns, copy_ignored_files
from coral_server.jobs.repository import (
    PathLike,
    Repository,
    RepositoryBusy,
    RepositoryInvalid,
    RepositoryNotAllowed,
    WorktreeError,
    normalise,
    validate_repository,
    validate_with_refs,
)

__all__ = [
    "DEFAULT_AUTHOR",
    "ChangedFile",
    "GitAuthor",
    "Repository",
    "RepositoryBusy",
    "RepositoryInvalid",
    "RepositoryNotAllowed",
    "Worktree",
    "WorktreeEntry",
    "WorktreeError",
    "WorktreeResult",
    "cleanup_worktree",
    "create_worktree",
    "finish_worktree",
    "list_worktrees",
    "run_branch",
    "use_repository_in_place",
    "validate_repository",
    "worktree_path",
]

log = logging.getLogger("coral_server.jobs.worktree")

_REASON = re.compile(r"^coral run (\d+)(?: of (\S+))? \(base ([0-9a-f]{40,64})\)$")
_AUTO_COMMIT_BODY = (
    "The run ended with changes it had not committed. coral_server committed them so that\n"
    "nothing is lost when the run's worktree is removed."
)


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class GitAuthor:
    """Author and committer of the commits that preserve a run's uncommitted work."""

    name: str = "coral"
    email: str = "coral@localhost"

    def env(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


DEFAULT_AUTHOR = GitAuthor()


@dataclass(frozen=True, slots=True)
class Worktree:
    """Where a run works. `isolated` is False for a run in the repository itself (create_worktree=false)."""

    run_id: int
    repo_path: Path
    path: Path
    branch: str | None  # coral/run-<id>; in place: the branch checked out then (None when detached)
    base_sha: str | None  # None only for a worktree recovered without any record of its base
    base_branch: str | None = None
    isolated: bool = True
    copied: tuple[str, ...] = ()  # ignored files copied in from the repository (copy_ignored)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "repo_path": str(self.repo_path),
            "path": str(self.path),
            "branch": self.branch,
            "base_sha": self.base_sha,
            "base_branch": self.base_branch,
            "isolated": self.isolated,
            "copied": list(self.copied),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Worktree:
        return cls(
            run_id=int(data["run_id"]),
            repo_path=Path(data["repo_path"]),
            path=Path(data["path"]),
            branch=data.get("branch"),
            base_sha=data.get("base_sha"),
            base_branch=data.get("base_branch"),
            isolated=bool(data.get("isolated", True)),
            copied=tuple(data.get("copied", ())),
        )


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """One path of `git diff --name-status` (A, M, D, R, C, T) or of `git status` (`?` = untracked)."""

    path: str
    status: str
    old_path: str | None = None  # renames and copies

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "status": self.status}
        if self.old_path is not None:
            out["old_path"] = self.old_path
        return out


@dataclass(frozen=True, slots=True)
class WorktreeResult:
    """What a run left in git: the branch holding its work, commits and files against its base."""

    branch: str | None
    head_sha: str | None
    base_sha: str | None
    files_changed: tuple[ChangedFile, ...]  # git diff --name-status base...head
    commit_count: int  # git rev-list --count base..head (the auto-commit included)
    auto_committed: bool
    auto_commit_sha: str | None = None
    uncommitted: tuple[ChangedFile, ...] = ()  # runs in place only: left in the working tree
    worktree_removed: bool = False
    branch_deleted: bool = False  # the run branch had nothing beyond its base and was deleted

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "head_sha": self.head_sha,
            "base_sha": self.base_sha,
            "files_changed": [f.to_json() for f in self.files_changed],
            "commit_count": self.commit_count,
            "auto_committed": self.auto_committed,
            "auto_commit_sha": self.auto_commit_sha,
            "uncommitted": [f.to_json() for f in self.uncommitted],
            "worktree_removed": self.worktree_removed,
            "branch_deleted": self.branch_deleted,
        }


@dataclass(frozen=True, slots=True)
class WorktreeEntry:
    """One entry of `git worktree list --porcelain`; `run_id` is set on worktrees a run has locked."""

    path: Path
    head: str | None
    branch: str | None
    locked: str | None  # the lock reason ("" when locked without one)
    prunable: bool
    run_id: int | None = None
    owner: str | None = None
    base_sha: str | None = None


def run_branch(run_id: int) -> str:
    return f"coral/run-{run_id}"


def worktree_path(repo_path: PathLike, run_id: int) -> Path:
    return Path(f"{normalise(repo_path)}_task_run_{run_id}")


def _lock_reason(run_id: int, owner: str | None, base_sha: str) -> str:
    of = f" of {owner}" if owner else ""
    return f"coral run {run_id}{of} (base {base_sha})"


# ------------------------------------------------------------------------------------------ creation


async def create_worktree(
    repo_path: object,
    run_id: int,
    *,
    base_branch: str = "main",
    allowed_roots: Sequence[PathLike] | None = None,
    copy_ignored: Sequence[str] = (),
    owner: str | None = None,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
) -> Worktree:
    """Validate, then add the run's locked worktree on a new branch `coral/run-<id>` from `base_branch`.

    Raises the validation errors, RepositoryBusy (the branch or the path exists, a lock is held) with the
    repository untouched, or GitFailed. `copy_ignored`: paths or globs, relative to the repository, of
    ignored files (e.g. `.env`) to copy into the new worktree; other matches are skipped. `owner` (e.g.
    the server's instance id) goes into the lock reason, so recovery only touches its own worktrees.
    """
    patterns = check_copy_patterns(copy_ignored)
    if owner is not None and (not owner or any(c.isspace() for c in owner)):
        raise ValueError(f"owner must be a non-empty word, got {owner!r}")
    branch = run_branch(run_id)
    repo, refs = await validate_with_refs(
        repo_path, base_branch, True, allowed_roots, (f"refs/heads/{branch}",)
    )
    if patterns and repo.bare:
        raise RepositoryInvalid("copy_ignored", "a bare repository has no files to copy")
    path = worktree_path(repo.path, run_id)
    if f"refs/heads/{branch}" in refs:
        raise RepositoryBusy("branch_exists", f"branch {branch!r} already exists in {repo.path}")
    if await asyncio.to_thread(os.path.lexists, path):
        raise RepositoryBusy("path_exists", f"{path} already exists")
    assert repo.base_sha is not None
    reason = _lock_reason(run_id, owner, repo.base_sha)
    add = ("worktree", "add", "--quiet", "--lock", "--reason", reason, "-b", branch, "--", str(path))
    started = asyncio.get_running_loop().time()
    try:
        await _add(repo.path, (*add, repo.base_sha), branch, reason, repo.base_sha, lock_wait_s)
        wt = Worktree(run_id, repo.path, path, branch, repo.base_sha, base_branch)
        if patterns:
            wt = replace(wt, copied=await copy_ignored_files(repo.path, path, patterns))
    except GitFailed as exc:
        busy = _busy(exc, branch, path)
        if busy is not None:  # someone else's branch, path or lock: touch nothing
            raise busy from exc
        await asyncio.shield(_discard(repo.path, path, branch, reason, repo.base_sha, lock_wait_s))
        raise
    except BaseException:  # cancelled, or the copy failed: take back whatever was made
        await asyncio.shield(_discard(repo.path, path, branch, reason, repo.base_sha, lock_wait_s))
        raise
    took_ms = (asyncio.get_running_loop().time() - started) * 1000
    log.info(
        "worktree.created run=%s path=%s branch=%s base=%s ms=%.0f",
        run_id,
        path,
        branch,
        repo.base_sha,
        took_ms,
    )
    return wt


async def _add(
    repo: Path, add: tuple[str, ...], branch: str, reason: str, base_sha: str, lock_wait_s: float
) -> None:
    """`git worktree add`, retried while another git process is busy. It can fail that way after making
    the branch, so each retry first takes back what the failed attempt made."""
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + lock_wait_s, 0.02
    while True:
        try:
            # Allowed to complete when cancelled: stopping it midway races git's own clean-up against
            # the checkout it started; a whole worktree is then discarded cleanly.
            await git(repo, *add, finish_on_cancel=True)
            return
        except GitFailed as exc:
            if not is_transient(exc.result.stderr) or loop.time() + pause > deadline:
                raise
            log.info("worktree.add_retry repo=%s branch=%s error=%s", repo, branch, exc)
            await _discard(repo, Path(add[-2]), branch, reason, base_sha, lock_wait_s)
        await asyncio.sleep(pause)  # git's own lock timeouts poll the same way
        pause = min(pause * 2, 0.25)


def _busy(exc: GitFailed, branch: str, path: Path) -> RepositoryBusy | None:
    said = exc.result.stderr
    if exc.lock_path is not None:
        return RepositoryBusy("locked", f"another git process holds {exc.lock_path}; try again later")
    if "a branch named" in said and "already exists" in said:
        return RepositoryBusy("branch_exists", f"branch {branch!r} already exists")
    if "missing but" in said and "worktree" in said:
        return RepositoryBusy("path_registered", f"{path} is still registered as a worktree (run recovery)")
    if "already exists" in said:
        return RepositoryBusy("path_exists", f"{path} already exists")
    return None


async def _discard(repo: Path, path: Path, branch: str, reason: str, base_sha: str, wait: float) -> None:
    """Undo a creation that did not complete (nobody has worked in it yet): only what is ours."""
    listed = await git(repo, "worktree", "list", "--porcelain", "-z", check=False, lock_wait_s=wait)
    entries = _parse_worktrees(listed.stdout) if listed.ok else []
    for e in entries:
        if e.locked == reason:
            await git(repo, "worktree", "remove", "-f", "-f", str(e.path), check=False, lock_wait_s=wait)
    await git(repo, "worktree", "prune", check=False, lock_wait_s=wait)
    mine = not any(e.branch == branch and e.locked != reason for e in entries)
    if mine and await _rev(repo, f"refs/heads/{branch}") == base_sha:
        # Atomic: only while the branch still points at the base, i.e. holds nothing.
        await git(repo, "update-ref", "-d", f"refs/heads/{branch}", base_sha, check=False, lock_wait_s=wait)
    log.info("worktree.discarded path=%s branch=%s", path, branch)


async def use_repository_in_place(
    repo_path: object, run_id: int, *, allowed_roots: Sequence[PathLike] | None = None
) -> Worktree:
    """`create_worktree=false`: the run works in the repository itself, on what is checked out."""
    repo, _ = await validate_with_refs(repo_path, None, False, allowed_roots)
    r = await git(repo.path, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
    if not r.ok:
        raise RepositoryInvalid("repo_path", f"{repo.path} has no commits yet")
    head = r.text.strip()
    branch = await _current_branch(repo.path)
    log.info("worktree.in_place run=%s path=%s branch=%s head=%s", run_id, repo.path, branch, head)
    return Worktree(run_id, repo.path, repo.path, branch, head, None, isolated=False)


# -------------------------------------------------------------------------------- preserving the work


async def finish_worktree(
    wt: Worktree,
    *,
    author: GitAuthor = DEFAULT_AUTHOR,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    unlock: bool = True,
) -> WorktreeResult:
    """After the agent has ended (however): commit what it left uncommitted, unlock, describe the work.

    The worktree stays; `cleanup_worktree` finishes and removes it. Safe to call more than once.
    `unlock=False` leaves the lock for a caller that removes the worktree next (a forced removal
    takes a locked worktree; the unlock would be one git process for nothing).
    """
    if not wt.isolated:
        return await _describe_in_place(wt)
    present = await asyncio.to_thread(_checked_out, wt.path)
    committed = await _preserve(wt, author, lock_wait_s) if present else False
    result = await _describe(wt, present, committed)
    if unlock:  # no longer in use by a run: unlocked, the user may remove it the usual way
        await _unlock(wt, lock_wait_s)
    log.info(
        "worktree.finished run=%s branch=%s head=%s commits=%s auto_committed=%s",
        wt.run_id,
        result.branch,
        result.head_sha,
        result.commit_count,
        result.auto_committed,
    )
    return result


async def _unlock(wt: Worktree, lock_wait_s: float) -> None:
    await git(wt.repo_path, "worktree", "unlock", str(wt.path), check=False, lock_wait_s=lock_wait_s)


async def _preserve(wt: Worktree, author: GitAuthor, lock_wait_s: float) -> bool:
    """Commit every uncommitted change (untracked included, ignored excluded); whether it committed
    (the commit is then the worktree's HEAD)."""
    status = await git(
        wt.path, "status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=dirty"
    )
    if not status.stdout:
        return False
    await _git_in_worktree(wt.path, lock_wait_s, "add", "--all")
    message = f"coral: uncommitted work of run {wt.run_id}\n\n{_AUTO_COMMIT_BODY}\n"
    commit = (
        *("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false"),
        *("commit", "--no-verify", "--quiet", "-m", message),
    )
    r = await _git_in_worktree(wt.path, lock_wait_s, *commit, env=author.env(), check=False)
    if not r.ok:
        if "nothing to commit" in r.text or "nothing added to commit" in r.text:
            return False
        raise GitFailed(r, wt.path)
    return True


async def _git_in_worktree(path: Path, lock_wait_s: float, *args: str, **kw: Any) -> GitResult:
    """git in a finished run's worktree. Its own index.lock can only be a leftover of the agent, which
    has ended (killed in the middle of a git command): wait as usual, then remove it and try once more."""
    try:
        return await git(path, *args, lock_wait_s=lock_wait_s, **kw)
    except GitFailed as exc:
        own = await asyncio.to_thread(_private_git_dir, path)
        if own is None or exc.lock_path is None or Path(exc.lock_path) != own / "index.lock":
            raise
        log.warning("worktree.stale_lock_removed path=%s lock=%s", path, exc.lock_path)
        await asyncio.to_thread(Path(exc.lock_path).unlink, True)
        return await git(path, *args, lock_wait_s=lock_wait_s, **kw)


def _checked_out(path: Path) -> bool:
    """Whether the worktree exists and git finished making it. A crash during `git worktree add` leaves
    one without its index (written last): no agent ever worked there, and its missing files are not
    deletions to commit."""
    private = _private_git_dir(path)
    return private is not None and (private / "index").exists()


def _private_git_dir(path: Path) -> Path | None:
    """The worktree's own git directory (`<common>/worktrees/<name>`), read from its `.git` file."""
    try:
        first = (path / ".git").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith("gitdir: "):
        return None
    return normalise(path / first.removeprefix("gitdir: "))


async def _current_branch(path: Path) -> str | None:
    r = await git(path, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return (r.text.strip() or None) if r.ok else None


async def _head(path: Path) -> tuple[str | None, str | None]:
    """(HEAD's sha, the full ref name it is on, None when detached) of a working tree."""
    r = await git(path, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD", check=False)
    if not r.ok:
        return None, None
    sha, ref = [*r.text.split("\n"), ""][:2]
    return sha, (ref if ref.startswith("refs/heads/") else None)


async def _rev(repo: Path, ref: str) -> str | None:
    r = await git(repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
    return (r.text.strip() or None) if r.ok else None


async def _describe(wt: Worktree, present: bool, committed: bool) -> WorktreeResult:
    run_ref = f"refs/heads/{run_branch(wt.run_id)}"
    if present:
        head, ref = await _head(wt.path)
    else:  # the directory is gone: what the branch holds is what is left
        head, ref = await _rev(wt.repo_path, run_ref), run_ref
    auto_sha = head if committed else None  # the commit `_preserve` just made is HEAD
    if auto_sha is not None:
        log.info("worktree.auto_committed run=%s sha=%s", wt.run_id, auto_sha)
    if present and head is not None and ref is None:  # detached: the worktree's HEAD dies with it
        tip = await _rev(wt.repo_path, run_ref)
        held = tip is not None and (
            tip == head or (await git(wt.repo_path, "merge-base", "--is-ancestor", head, tip, check=False)).ok
        )
        if held:
            head, ref = tip, run_ref
        else:
            ref = f"{run_ref}-detached"
            await git(wt.repo_path, "update-ref", ref, head, lock_wait_s=DEFAULT_LOCK_WAIT_S)
            log.warning("worktree.detached_head_kept run=%s branch=%s head=%s", wt.run_id, ref, head)
    files, count = await _changes(wt.repo_path, wt.base_sha, head)
    return WorktreeResult(
        branch=ref.removeprefix("refs/heads/") if ref and head else None,
        head_sha=head,
        base_sha=wt.base_sha,
        files_changed=files,
        commit_count=count,
        auto_committed=auto_sha is not None,
        auto_commit_sha=auto_sha,
    )


async def _describe_in_place(wt: Worktree) -> WorktreeResult:
    head, ref = await _head(wt.path)
    (files, count), status = await asyncio.gather(
        _changes(wt.path, wt.base_sha, head),
        git(wt.path, "status", "--porcelain", "-z", "--untracked-files=all"),
    )
    return WorktreeResult(
        branch=ref.removeprefix("refs/heads/") if ref else None,
        head_sha=head,
        base_sha=wt.base_sha,
        files_changed=files,
        commit_count=count,
        auto_committed=False,
        uncommitted=_parse_status(status.stdout),
    )


async def _changes(repo: Path, base: str | None, head: str | None) -> tuple[tuple[ChangedFile, ...], int]:
    if base is None or head is None or head == base:
        return (), 0
    diff, count = await asyncio.gather(
        git(repo, "diff", "--no-ext-diff", "--no-color", "-M", "--name-status", "-z", f"{base}...{head}"),
        git(repo, "rev-list", "--count", f"{base}..{head}"),
    )
    return _parse_name_status(diff.stdout), int(count.text.strip() or 0)


def _parse_name_status(out: bytes) -> tuple[ChangedFile, ...]:
    fields = [f.decode("utf-8", "surrogateescape") for f in out.split(b"\0")]
    files, i = [], 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in "RC":
            files.append(ChangedFile(fields[i + 2], status, fields[i + 1]))
            i += 3
        else:
            files.append(ChangedFile(fields[i + 1], status))
            i += 2
    return tuple(files)


def _parse_status(out: bytes) -> tuple[ChangedFile, ...]:
    fields = [f.decode("utf-8", "surrogateescape") for f in out.split(b"\0")]
    files, i = [], 0
    while i < len(fields) and fields[i]:
        xy, path = fields[i][:2], fields[i][3:]
        status = "?" if xy == "??" else (xy[0] if xy[0] != " " else xy[1])
        if xy[0] in "RC":
            files.append(ChangedFile(path, status, fields[i + 1]))
            i += 2
        else:
            files.append(ChangedFile(path, status))
            i += 1
    return tuple(files)


# ---------------------------------------------------------------------------------------------- cleanup


async def cleanup_worktree(
    wt: Worktree,
    *,
    author: GitAuthor = DEFAULT_AUTHOR,
    delete_empty_branch: bool = True,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
) -> WorktreeResult:
    """Finish (preserve the work), then `git worktree remove --force --force` (it takes the locked
    worktree; `git worktree prune` only when that failed).

    The branch stays, so every commit stays reachable; a run branch with no commit beyond its base is
    deleted (`branch_deleted`, and `branch` is then None). A run in place is never removed.
    """
    if not wt.isolated:
        return await finish_worktree(wt, author=author, lock_wait_s=lock_wait_s)
    result = await finish_worktree(wt, author=author, lock_wait_s=lock_wait_s, unlock=False)
    removed = await _remove(wt.repo_path, wt.path, lock_wait_s)
    if not removed:  # it stays: unlocked, as a finished run's worktree is
        await _unlock(wt, lock_wait_s)
    deleted = False
    own = run_branch(wt.run_id)
    # The run's branch is known to hold nothing when the worktree ended on it at the base; on another
    # branch (the agent switched) the run's one may still be empty: then try.
    empty = result.head_sha == wt.base_sha if result.branch == own else True
    if removed and delete_empty_branch and wt.base_sha is not None and empty:
        # Atomic: git deletes the ref only if it still points at the base (no commit on it).
        ref = f"refs/heads/{own}"
        deleted = (
            await git(
                wt.repo_path, "update-ref", "-d", ref, wt.base_sha, check=False, lock_wait_s=lock_wait_s
            )
        ).ok
    branch = None if deleted and result.branch == own else result.branch
    log.info("worktree.removed run=%s removed=%s branch_deleted=%s", wt.run_id, removed, deleted)
    return replace(result, branch=branch, worktree_removed=removed, branch_deleted=deleted)


async def _remove(repo: Path, path: Path, lock_wait_s: float) -> bool:
    r = await git(
        repo, "worktree", "remove", "--force", "--force", str(path), check=False, lock_wait_s=lock_wait_s
    )
    if r.ok:  # git removed its entry with the directory: nothing left to prune
        return True
    removed = not await asyncio.to_thread(os.path.lexists, path)
    if not removed:
        # e.g. it holds initialised submodules, or is no longer a worktree: leave the files alone.
        log.warning("worktree.remove_failed path=%s error=%s", path, r.stderr.strip())
    pruned = await git(repo, "worktree", "prune", check=False, lock_wait_s=lock_wait_s)
    if not pruned.ok:
        log.warning("worktree.prune_failed repo=%s error=%s", repo, pruned.stderr.strip())
    return removed


# ---------------------------------------------------------------------------------------------- listing


async def list_worktrees(
    repo_path: PathLike, *, lock_wait_s: float = DEFAULT_LOCK_WAIT_S
) -> list[WorktreeEntry]:
    """Every worktree of the repository (`git worktree list --porcelain -z`), runs' ones recognised."""
    listed = await git(Path(repo_path), "worktree", "list", "--porcelain", "-z", lock_wait_s=lock_wait_s)
    return _parse_worktrees(listed.stdout)


def _parse_worktrees(out: bytes) -> list[WorktreeEntry]:
    entries: list[WorktreeEntry] = []
    attrs: dict[str, str] = {}
    for field in out.decode("utf-8", "surrogateescape").split("\0"):
        if field:
            key, _, value = field.partition(" ")
            attrs[key] = value
            continue
        if "worktree" in attrs:
            entries.append(_entry(attrs))
        attrs = {}
    return entries


def _entry(attrs: dict[str, str]) -> WorktreeEntry:
    locked = attrs.get("locked")
    found = _REASON.match(locked) if locked else None
    return WorktreeEntry(
        path=Path(attrs["worktree"]),
        head=attrs.get("HEAD"),
        branch=attrs["branch"].removeprefix("refs/heads/") if "branch" in attrs else None,
        locked=locked,
        prunable="prunable" in attrs,
        run_id=int(found.group(1)) if found else None,
        owner=found.group(2) if found else None,
        base_sha=found.group(3) if found else None,
    )
