"""A job's repository: checking `repo_path` and `base_branch` (and the allowed roots), and its errors.

Decisions: `repo_path` must be absolute, lie under one of the allowed roots after resolving symlinks
(checked before the filesystem is looked at, so a caller cannot probe paths outside the fence), be a
directory and be the top level of a git working tree, a main or a linked worktree. A subdirectory of a
repository, a `.git` directory or a plain directory are refused. A bare repository is accepted when the
run gets its own worktree (bare + worktrees is a common layout) and refused for a run in place.
`base_branch` must be a local branch (`refs/heads/<name>`); remote-tracking branches do not count (which
remote? how fresh?), but the error says when `<remote>/<name>` exists.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from coral_server.jobs.git import git

__all__ = [
    "PathLike",
    "Repository",
    "RepositoryBusy",
    "RepositoryInvalid",
    "RepositoryNotAllowed",
    "WorktreeError",
    "normalise",
    "validate_repository",
]

PathLike = str | os.PathLike[str]


def normalise(path: PathLike) -> Path:
    """`path` without `.`, `..` or doubled and trailing slashes (no filesystem access: symlinks stay)."""
    return Path(os.path.normpath(os.fspath(path)))


class WorktreeError(Exception):
    """Base class of every worktree error; `str(err)` is safe to show to the caller."""


class RepositoryInvalid(WorktreeError):
    """A job field about the repository is wrong (400): `field` names it, `message` says what is wrong.

    Fields: `repo_path`, `base_branch`, `copy_ignored` (or `copy_ignored[i]`).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class RepositoryNotAllowed(WorktreeError):
    """`repo_path` lies outside every directory jobs may use (403)."""

    field = "repo_path"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.message = f"{path} is not under a directory that jobs may use"
        super().__init__(f"{self.field}: {self.message}")


class RepositoryBusy(WorktreeError):
    """The run's worktree cannot be made now; the repository is left as it was.

    `reason`: `branch_exists`, `path_exists`, `path_registered` (a stale worktree entry) or `locked`
    (another git process holds a lock longer than we wait).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Repository:
    """A checked job repository: `path` as given (normalised), and the base commit when one was asked."""

    path: Path
    common_dir: Path  # the git directory all its worktrees share
    bare: bool
    base_branch: str | None
    base_sha: str | None


def _check_path(repo_path: object, allowed_roots: Sequence[PathLike] | None) -> Path:
    """The filesystem half of validation (blocking: run in a thread)."""
    if repo_path is None or repo_path == "":
        raise RepositoryInvalid("repo_path", "is required")
    if not isinstance(repo_path, str | os.PathLike):
        raise RepositoryInvalid("repo_path", "must be a string")
    raw = os.fspath(repo_path)
    if "\0" in raw:
        raise RepositoryInvalid("repo_path", "must not contain NUL characters")
    if not os.path.isabs(raw):
        raise RepositoryInvalid("repo_path", f"must be an absolute path (got {raw!r})")
    path = normalise(raw)
    if allowed_roots is not None:
        real = path.resolve()
        if not any(real.is_relative_to(Path(root).resolve()) for root in allowed_roots):
            raise RepositoryNotAllowed(path)
    if not path.exists():
        raise RepositoryInvalid("repo_path", f"{path} does not exist")
    if not path.is_dir():
        raise RepositoryInvalid("repo_path", f"{path} is not a directory")
    return path


async def _inspect(path: Path, *, create_worktree: bool) -> tuple[Path, bool]:
    """(common git dir, bare) of the repository at `path`, or RepositoryInvalid(repo_path)."""
    r = await git(
        path,
        "rev-parse",
        "--is-bare-repository",
        "--is-inside-git-dir",
        "--git-common-dir",
        "--show-prefix",
        check=False,
    )
    if not r.ok:
        if "not a git repository" in r.stderr:
            raise RepositoryInvalid("repo_path", f"{path} is not a git repository")
        said = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit code {r.returncode}"
        raise RepositoryInvalid("repo_path", f"git cannot use {path}: {said}")
    bare_s, in_git_dir, common, prefix = [*r.text.split("\n"), "", "", "", ""][:4]
    bare = bare_s == "true"
    if bare and not create_worktree:
        raise RepositoryInvalid(
            "repo_path", f"{path} is a bare repository: a run in place needs a working tree (create_worktree)"
        )
    if not bare and in_git_dir == "true":
        raise RepositoryInvalid("repo_path", f"{path} is a .git directory, not a repository's working tree")
    if prefix:
        top = path.parents[len(PurePosixPath(prefix).parts) - 1]
        raise RepositoryInvalid(
            "repo_path", f"{path} is not the top level of a git repository (it lies inside {top})"
        )
    return normalise(path / common), bare


async def _refs(path: Path, patterns: Sequence[str]) -> dict[str, str]:
    r = await git(path, "for-each-ref", "--format=%(objectname) %(refname)", *patterns)
    refs = {}
    for line in r.text.splitlines():
        sha, _, name = line.partition(" ")
        refs[name] = sha
    return refs


async def validate_with_refs(
    repo_path: object,
    base_branch: str | None,
    create_worktree: bool,
    allowed_roots: Sequence[PathLike] | None,
    extra_refs: Sequence[str] = (),
) -> tuple[Repository, dict[str, str]]:
    path = await asyncio.to_thread(_check_path, repo_path, allowed_roots)
    common, bare = await _inspect(path, create_worktree=create_worktree)
    if not create_worktree:
        return Repository(path, common, bare, None, None), {}
    if not isinstance(base_branch, str) or not base_branch:
        raise RepositoryInvalid("base_branch", "is required")
    local = f"refs/heads/{base_branch}"
    refs = await _refs(
        path, [local, f"refs/remotes/*/{base_branch}", f"refs/remotes/{base_branch}", *extra_refs]
    )
    if local not in refs:
        remote = sorted(n for n in refs if n.startswith("refs/remotes/") and n.endswith(f"/{base_branch}"))
        hint = ""
        if f"refs/remotes/{base_branch}" in refs:
            hint = f" ({base_branch!r} is a remote-tracking branch; jobs start from a local branch)"
        elif remote:
            hint = f" (only {remote[0].removeprefix('refs/remotes/')} exists; create a local branch from it)"
        raise RepositoryInvalid("base_branch", f"branch {base_branch!r} does not exist in {path}{hint}")
    return Repository(path, common, bare, base_branch, refs[local]), refs


async def validate_repository(
    repo_path: object,
    *,
    base_branch: str | None = "main",
    create_worktree: bool = True,
    allowed_roots: Sequence[PathLike] | None = None,
) -> Repository:
    """Check a job's repository fields; raise RepositoryInvalid (400) or RepositoryNotAllowed (403).

    `allowed_roots=None` means no fence; an empty list allows nothing. `base_branch` is only checked (and
    resolved to `base_sha`) when the run gets its own worktree.
    """
    repo, _ = await validate_with_refs(repo_path, base_branch, create_worktree, allowed_roots)
    return repo
