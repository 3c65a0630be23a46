"""Real git repositories in temp dirs for the jobs tests (`git_repo`, `make_git_repo`) and a git helper.

Other test folders can reuse them: `from tests.jobs.conftest import GitRepo, init_git_repo`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

NAME, EMAIL = "Test Dev", "dev@example.test"
GITIGNORE = ".env\n.env.*\nbuild/\n*.log\n"


def _env() -> dict[str, str]:
    # Not the developer's ~/.gitconfig (signing, hooks, templates): tests see git's defaults only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    return env


@dataclass
class GitRepo:
    """A repository on disk, with blocking helpers to set up and check tests (never for code under test)."""

    path: Path

    def git(self, *args: str, cwd: Path | None = None, check: bool = True, input: str | None = None) -> str:
        done = subprocess.run(
            ["git", "-C", str(cwd or self.path), *args],
            input=input,
            capture_output=True,
            text=True,
            env=_env(),
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def write(self, rel: str, text: str, cwd: Path | None = None) -> Path:
        target = (cwd or self.path) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def commit_all(self, message: str, cwd: Path | None = None) -> str:
        self.git("add", "--all", cwd=cwd)
        self.git("commit", "-q", "-m", message, cwd=cwd)
        return self.sha("HEAD", cwd=cwd)

    def commit_many_files(self, count: int, message: str = "many files") -> str:
        """Commit `count` files under `many/` without writing them (one shared blob): a big checkout, fast.

        The main working tree does not get them (it shows them as deleted); worktrees do.
        """
        blob = self.git("hash-object", "-w", "--stdin", input="the same content\n").strip()
        info = "".join(f"100644 {blob}\tmany/d{i // 500}/f{i}.txt\n" for i in range(count))
        self.git("update-index", "--index-info", input=info)
        self.git("commit", "-q", "-m", message)
        return self.sha()

    def sha(self, ref: str = "HEAD", cwd: Path | None = None) -> str:
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=cwd).strip()

    def has_ref(self, ref: str) -> bool:
        return self.git("rev-parse", "--verify", "-q", ref, check=False).strip() != ""

    def branches(self) -> set[str]:
        return set(self.git("for-each-ref", "--format=%(refname:short)", "refs/heads").split())

    def worktree_paths(self) -> list[str]:
        out = self.git("worktree", "list", "--porcelain")
        return [line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")]

    def show(self, ref: str, rel: str) -> str:
        return self.git("show", f"{ref}:{rel}")

    def assert_clean_state(self) -> None:
        """fsck finds nothing wrong, and no worktree entry is stale or left behind."""
        fsck = subprocess.run(
            ["git", "-C", str(self.path), "fsck", "--strict", "--no-dangling"],
            capture_output=True,
            text=True,
            env=_env(),
            check=False,
        )
        assert fsck.returncode == 0 and not fsck.stderr.strip(), fsck.stderr
        assert self.git("worktree", "prune", "--dry-run", "--verbose").strip() == ""


def init_git_repo(path: Path, files: dict[str, str] | None = None, *, bare: bool = False) -> GitRepo:
    """A repository on branch `main` with one commit (a .gitignore and `files`), identity configured."""
    path.mkdir(parents=True, exist_ok=True)
    repo = GitRepo(path)
    repo.git("init", "-q", "-b", "main")
    repo.git("config", "user.name", NAME)
    repo.git("config", "user.email", EMAIL)
    repo.write(".gitignore", GITIGNORE)
    for rel, text in (files or {"README.md": "# demo\n", "src/app.py": "print('hi')\n"}).items():
        repo.write(rel, text)
    repo.commit_all("initial")
    if bare:
        bare_path = path.with_name(path.name + ".git")
        subprocess.run(["git", "clone", "-q", "--bare", str(path), str(bare_path)], env=_env(), check=True)
        return GitRepo(bare_path)
    return repo


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    """A fresh repository at `<tmp>/repo` (so run worktrees land at `<tmp>/repo_task_run_<id>`)."""
    return init_git_repo(tmp_path / "repo")


@pytest.fixture
def make_git_repo(tmp_path: Path) -> Callable[..., GitRepo]:
    """`make_git_repo("name", files={...}, bare=False)`: more repositories under the test's temp dir."""

    def make(name: str, files: dict[str, str] | None = None, *, bare: bool = False) -> GitRepo:
        return init_git_repo(tmp_path / name, files, bare=bare)

    return make


# The CLI tests' repository (a plain path, with an identity an agent commits with).
from tests.jobs.clis import agent_repo  # noqa: E402, F401
