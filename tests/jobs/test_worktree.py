"""Run worktrees against real git repositories: validation, creation, preserving work, cleanup, recovery."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from coral_server.jobs.recovery import recover_worktree, recover_worktrees
from coral_server.jobs.worktree import (
    ChangedFile,
    GitAuthor,
    RepositoryBusy,
    RepositoryInvalid,
    RepositoryNotAllowed,
    Worktree,
    cleanup_worktree,
    create_worktree,
    finish_worktree,
    list_worktrees,
    use_repository_in_place,
    validate_repository,
)
from tests.conftest import wait_until
from tests.jobs.conftest import GitRepo

MakeRepo = Callable[..., GitRepo]
AUTHOR = GitAuthor("Coral Bot", "bot@coral.test")


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("value", [None, ""])
async def test_repo_path_is_required(value: str | None) -> None:
    with pytest.raises(RepositoryInvalid) as err:
        await validate_repository(value)
    assert (err.value.field, err.value.message) == ("repo_path", "is required")


async def test_repo_path_must_be_absolute() -> None:
    with pytest.raises(RepositoryInvalid, match="absolute") as err:
        await validate_repository("some/repo")
    assert err.value.field == "repo_path"


async def test_repo_path_must_exist_and_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RepositoryInvalid, match="does not exist") as err:
        await validate_repository(str(tmp_path / "nowhere"))
    assert err.value.field == "repo_path"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryInvalid, match="not a directory") as err:
        await validate_repository(str(tmp_path / "file"))
    assert err.value.field == "repo_path"


async def test_repo_path_must_be_a_git_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryInvalid, match="not a git repository") as err:
        await validate_repository(str(tmp_path / "plain"))
    assert err.value.field == "repo_path"


async def test_repo_path_must_be_the_top_level(git_repo: GitRepo) -> None:
    with pytest.raises(RepositoryInvalid, match="not the top level") as err:
        await validate_repository(str(git_repo.path / "src"))
    assert err.value.field == "repo_path"
    assert str(git_repo.path) in err.value.message
    with pytest.raises(RepositoryInvalid, match=r"\.git directory") as err:
        await validate_repository(str(git_repo.path / ".git"))
    assert err.value.field == "repo_path"


async def test_a_valid_repository_resolves_its_base(git_repo: GitRepo) -> None:
    repo = await validate_repository(str(git_repo.path) + "/", base_branch="main")
    assert repo.path == git_repo.path
    assert repo.base_sha == git_repo.sha("main")
    assert not repo.bare and repo.common_dir == git_repo.path / ".git"


async def test_base_branch_must_exist_locally(git_repo: GitRepo) -> None:
    with pytest.raises(RepositoryInvalid, match="'develop' does not exist") as err:
        await validate_repository(str(git_repo.path), base_branch="develop")
    assert err.value.field == "base_branch"
    # A remote-tracking branch of that name does not count, but the message says it is there.
    git_repo.git("update-ref", "refs/remotes/origin/develop", "HEAD")
    with pytest.raises(RepositoryInvalid, match="only origin/develop exists") as err:
        await validate_repository(str(git_repo.path), base_branch="develop")
    assert err.value.field == "base_branch"
    with pytest.raises(RepositoryInvalid, match="remote-tracking") as err:
        await validate_repository(str(git_repo.path), base_branch="origin/develop")
    with pytest.raises(RepositoryInvalid, match="is required") as err:
        await validate_repository(str(git_repo.path), base_branch="")
    assert err.value.field == "base_branch"


async def test_base_branch_is_not_checked_for_a_run_in_place(git_repo: GitRepo) -> None:
    repo = await validate_repository(str(git_repo.path), base_branch="nope", create_worktree=False)
    assert repo.base_sha is None


async def test_allowed_roots_fence_repo_path(tmp_path: Path, make_git_repo: MakeRepo) -> None:
    inside = make_git_repo("jobs/inside")
    outside = make_git_repo("elsewhere/outside")
    roots = [tmp_path / "jobs"]
    assert (await validate_repository(str(inside.path), allowed_roots=roots)).path == inside.path
    with pytest.raises(RepositoryNotAllowed) as err:
        await validate_repository(str(outside.path), allowed_roots=roots)
    assert err.value.field == "repo_path"
    # Symlinks are resolved: a link inside the fence to a repository outside it is refused...
    (tmp_path / "jobs" / "link").symlink_to(outside.path)
    with pytest.raises(RepositoryNotAllowed):
        await validate_repository(str(tmp_path / "jobs" / "link"), allowed_roots=roots)
    # ...and a link outside to a repository inside is fine.
    (tmp_path / "elsewhere" / "to-inside").symlink_to(inside.path)
    await validate_repository(str(tmp_path / "elsewhere" / "to-inside"), allowed_roots=roots)
    # Paths outside the fence are refused before they are looked at: existence does not leak.
    with pytest.raises(RepositoryNotAllowed):
        await validate_repository(str(tmp_path / "elsewhere" / "missing"), allowed_roots=roots)
    with pytest.raises(RepositoryNotAllowed):
        await validate_repository(str(inside.path), allowed_roots=[])


async def test_bare_repository_only_with_a_worktree(make_git_repo: MakeRepo) -> None:
    bare = make_git_repo("origin", bare=True)
    with pytest.raises(RepositoryInvalid, match="bare") as err:
        await validate_repository(str(bare.path), create_worktree=False)
    assert err.value.field == "repo_path"
    wt = await create_worktree(str(bare.path), 3)
    assert wt.path == Path(f"{bare.path}_task_run_3")
    assert (wt.path / "README.md").read_text() == "# demo\n"
    (wt.path / "new.txt").write_text("from a bare repo\n")
    result = await cleanup_worktree(wt, author=AUTHOR)
    assert result.auto_committed and result.files_changed == (ChangedFile("new.txt", "A"),)
    assert bare.show("coral/run-3", "new.txt") == "from a bare repo\n"
    bare.assert_clean_state()


async def test_a_linked_worktree_is_a_valid_repository(git_repo: GitRepo, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git_repo.git("worktree", "add", "-q", "-b", "feature", str(linked), "main")
    wt = await create_worktree(str(linked), 8, base_branch="feature")
    assert wt.path == tmp_path / "linked_task_run_8"
    await cleanup_worktree(wt)
    assert git_repo.worktree_paths() == [str(git_repo.path), str(linked)]


# ------------------------------------------------------------------------------------------ creation


async def test_create_makes_a_locked_worktree_on_its_own_branch(git_repo: GitRepo) -> None:
    base = git_repo.sha("main")
    wt = await create_worktree(str(git_repo.path), 42, base_branch="main", owner="inst1")
    assert wt.path == git_repo.path.parent / "repo_task_run_42"
    assert (wt.branch, wt.base_sha, wt.base_branch, wt.isolated) == ("coral/run-42", base, "main", True)
    assert git_repo.git("symbolic-ref", "--short", "HEAD", cwd=wt.path).strip() == "coral/run-42"
    assert (wt.path / "src" / "app.py").read_text() == "print('hi')\n"
    assert git_repo.git("status", "--porcelain", cwd=wt.path) == ""
    [entry] = [e for e in await list_worktrees(git_repo.path) if e.run_id is not None]
    assert (entry.run_id, entry.owner, entry.base_sha, entry.branch) == (42, "inst1", base, "coral/run-42")
    assert entry.path == wt.path
    # The main checkout is untouched.
    assert git_repo.git("symbolic-ref", "--short", "HEAD").strip() == "main"
    assert Worktree.from_json(wt.to_json()) == wt


async def test_two_runs_on_one_repository_at_once(git_repo: GitRepo) -> None:
    ids = [1, 2, 3, 4, 5, 6]
    made = await asyncio.gather(*(create_worktree(str(git_repo.path), i) for i in ids))
    assert len({wt.path for wt in made}) == len(ids)
    working, idle = made[:4], made[4:]
    for wt in working:
        git_repo.write(f"run{wt.run_id}.txt", f"run {wt.run_id}\n", cwd=wt.path)
    # Packed branches: deleting the idle runs' empty branches now contends for packed-refs.lock.
    git_repo.git("pack-refs", "--all")
    results = await asyncio.gather(*(cleanup_worktree(wt, author=AUTHOR) for wt in made))
    for wt, result in zip(made, results, strict=True):
        assert not wt.path.exists() and result.worktree_removed
        if wt in idle:
            assert result.branch_deleted and f"coral/run-{wt.run_id}" not in git_repo.branches()
            continue
        assert result.files_changed == (ChangedFile(f"run{wt.run_id}.txt", "A"),)
        assert git_repo.show(f"coral/run-{wt.run_id}", f"run{wt.run_id}.txt") == f"run {wt.run_id}\n"
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_runs_start_while_others_are_cleaned_up(git_repo: GitRepo) -> None:
    repo = str(git_repo.path)
    first = await asyncio.gather(*(create_worktree(repo, i) for i in range(1, 5)))
    for wt in first:
        git_repo.write("work.txt", f"{wt.run_id}\n", cwd=wt.path)
    # Removing, unlocking and pruning worktrees while others are being added (git lists worktrees
    # for both, and meets half-written ones).
    outcome = await asyncio.gather(
        *(cleanup_worktree(wt) for wt in first), *(create_worktree(repo, i) for i in range(5, 9))
    )
    second = [wt for wt in outcome if isinstance(wt, Worktree)]
    assert all(r.worktree_removed and r.auto_committed for r in outcome[:4])
    assert sorted(git_repo.worktree_paths()) == sorted([repo, *(str(wt.path) for wt in second)])
    await asyncio.gather(*(cleanup_worktree(wt) for wt in second))
    assert git_repo.worktree_paths() == [repo]
    assert {b for b in git_repo.branches() if b.startswith("coral/")} == {
        f"coral/run-{i}" for i in range(1, 5)
    }
    git_repo.assert_clean_state()


async def test_busy_branch_fails_clearly_and_leaves_the_repository_intact(git_repo: GitRepo) -> None:
    git_repo.git("branch", "coral/run-7", "main")
    before = (git_repo.worktree_paths(), git_repo.branches(), git_repo.sha("coral/run-7"))
    with pytest.raises(RepositoryBusy, match="coral/run-7") as err:
        await create_worktree(str(git_repo.path), 7)
    assert err.value.reason == "branch_exists"
    assert (git_repo.worktree_paths(), git_repo.branches(), git_repo.sha("coral/run-7")) == before
    assert not (git_repo.path.parent / "repo_task_run_7").exists()
    git_repo.assert_clean_state()


async def test_busy_path_fails_clearly_and_touches_nothing(git_repo: GitRepo) -> None:
    squatter = git_repo.path.parent / "repo_task_run_9"
    squatter.mkdir()
    (squatter / "keep.txt").write_text("mine")
    with pytest.raises(RepositoryBusy) as err:
        await create_worktree(str(git_repo.path), 9)
    assert err.value.reason == "path_exists"
    assert (squatter / "keep.txt").read_text() == "mine"
    assert "coral/run-9" not in git_repo.branches()
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_a_held_lock_fails_after_a_short_wait(git_repo: GitRepo) -> None:
    lock = git_repo.path / ".git" / "refs" / "heads" / "coral" / "run-5.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    with pytest.raises(RepositoryBusy, match=r"run-5\.lock") as err:
        await create_worktree(str(git_repo.path), 5, lock_wait_s=0.3)
    assert err.value.reason == "locked"
    assert lock.exists()  # never ours to remove
    lock.unlink()
    assert "coral/run-5" not in git_repo.branches()
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_create_retries_while_a_lock_is_held(
    git_repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coral_server.jobs.worktree")
    lock = git_repo.path / ".git" / "refs" / "heads" / "coral" / "run-6.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    task = asyncio.create_task(create_worktree(str(git_repo.path), 6, lock_wait_s=30))
    await wait_until(
        lambda: any("worktree.add_retry" in r.getMessage() for r in caplog.records), interval=0.002
    )
    assert not task.done()
    lock.unlink()  # the other git process is done
    wt = await asyncio.wait_for(task, 30)
    assert wt.branch == "coral/run-6" and wt.path.is_dir()
    await cleanup_worktree(wt)
    git_repo.assert_clean_state()


async def test_cancelled_create_leaves_nothing_behind(make_git_repo: MakeRepo) -> None:
    repo = make_git_repo("big")
    repo.commit_many_files(2_000)  # a checkout long enough to be caught in the middle
    private = repo.path / ".git" / "worktrees" / "big_task_run_1"
    task = asyncio.create_task(create_worktree(str(repo.path), 1))
    await wait_until(private.exists, interval=0.002)  # git is at work: it made the worktree's admin dir first
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert repo.worktree_paths() == [str(repo.path)]
    assert "coral/run-1" not in repo.branches()
    assert not (repo.path.parent / "big_task_run_1").exists()
    repo.assert_clean_state()


# -------------------------------------------------------------------------------- preserving the work


def agent_work(repo: GitRepo, wt: Worktree) -> str:
    """What an agent might leave: one commit (edit + rename), then uncommitted, untracked, ignored files."""
    repo.write("README.md", "# demo, edited and committed\n", cwd=wt.path)
    repo.git("mv", "src/app.py", "src/main.py", cwd=wt.path)
    committed = repo.commit_all("agent: rename app", cwd=wt.path)
    with (wt.path / "src" / "main.py").open("a") as f:
        f.write("print('changed but not committed')\n")
    repo.write("notes/todo.md", "untracked\n", cwd=wt.path)
    repo.write(".env", "SECRET=1\n", cwd=wt.path)
    repo.write("build/out.bin", "artefact\n", cwd=wt.path)
    return committed


async def test_committed_uncommitted_and_untracked_work_survive_cleanup(git_repo: GitRepo) -> None:
    git_repo.write("gone.txt", "to delete\n")
    git_repo.write("src/app.py", "".join(f"print({i})\n" for i in range(20)))
    base = git_repo.commit_all("add gone.txt, a longer app.py")
    wt = await create_worktree(str(git_repo.path), 11)
    assert wt.base_sha == base
    agent_commit = agent_work(git_repo, wt)
    (wt.path / "gone.txt").unlink()
    result = await cleanup_worktree(wt, author=AUTHOR)

    assert result.worktree_removed and not wt.path.exists()
    assert (result.branch, result.base_sha, result.commit_count) == ("coral/run-11", base, 2)
    assert result.auto_committed and result.auto_commit_sha == git_repo.sha("coral/run-11")
    assert result.head_sha == result.auto_commit_sha
    assert git_repo.sha("coral/run-11^") == agent_commit
    assert set(result.files_changed) == {
        ChangedFile("README.md", "M"),
        ChangedFile("src/main.py", "R", "src/app.py"),
        ChangedFile("notes/todo.md", "A"),
        ChangedFile("gone.txt", "D"),
    }
    assert git_repo.show("coral/run-11", "src/main.py").endswith(
        "print(19)\nprint('changed but not committed')\n"
    )
    assert git_repo.show("coral/run-11", "notes/todo.md") == "untracked\n"
    tree = git_repo.git("ls-tree", "-r", "--name-only", "coral/run-11").split()
    assert ".env" not in tree and "build/out.bin" not in tree  # .gitignore is respected
    log = git_repo.git("log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "coral/run-11").strip()
    assert log == "Coral Bot <bot@coral.test>|Coral Bot <bot@coral.test>|coral: uncommitted work of run 11"
    assert result.to_json()["files_changed"]
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_cleanup_after_a_failed_agent(git_repo: GitRepo) -> None:
    wt = await create_worktree(str(git_repo.path), 12)
    # A real agent process that writes files and a half-done git command, then dies of SIGKILL.
    script = (
        "import os, pathlib, signal\n"
        "pathlib.Path('half.txt').write_text('half done\\n')\n"
        "pathlib.Path('README.md').write_text('edited before crashing\\n')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=wt.path)
    assert await proc.wait() == -9
    # ...leaving the worktree's index.lock, as a git command killed midway does.
    private = git_repo.path / ".git" / "worktrees" / wt.path.name
    (private / "index.lock").write_text("")
    result = await cleanup_worktree(wt, author=AUTHOR, lock_wait_s=0.2)
    assert result.auto_committed and result.commit_count == 1
    assert {f.path for f in result.files_changed} == {"half.txt", "README.md"}
    assert git_repo.show("coral/run-12", "half.txt") == "half done\n"
    assert result.worktree_removed and git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_a_run_that_changed_nothing_loses_its_empty_branch(git_repo: GitRepo) -> None:
    wt = await create_worktree(str(git_repo.path), 13)
    result = await cleanup_worktree(wt)
    assert (result.branch, result.branch_deleted, result.commit_count, result.auto_committed) == (
        None,
        True,
        0,
        False,
    )
    assert result.files_changed == () and result.head_sha == wt.base_sha
    assert "coral/run-13" not in git_repo.branches()
    git_repo.assert_clean_state()


async def test_finish_keeps_the_worktree_unlocked_and_is_idempotent(git_repo: GitRepo) -> None:
    wt = await create_worktree(str(git_repo.path), 14)
    git_repo.write("a.txt", "a\n", cwd=wt.path)
    first = await finish_worktree(wt)
    assert first.auto_committed and first.commit_count == 1 and not first.worktree_removed
    again = await finish_worktree(wt)
    assert not again.auto_committed and again.head_sha == first.head_sha
    [entry] = [e for e in await list_worktrees(git_repo.path) if e.path == wt.path]
    assert entry.locked is None  # the run is over: the user may remove it the usual way
    git_repo.git("worktree", "remove", str(wt.path))
    assert git_repo.show("coral/run-14", "a.txt") == "a\n"


async def test_commits_on_a_detached_head_are_kept(git_repo: GitRepo) -> None:
    wt = await create_worktree(str(git_repo.path), 15)
    git_repo.git("checkout", "-q", "--detach", cwd=wt.path)
    git_repo.write("detached.txt", "x\n", cwd=wt.path)
    sha = git_repo.commit_all("on a detached head", cwd=wt.path)
    result = await cleanup_worktree(wt)
    assert (result.branch, result.head_sha, result.commit_count) == ("coral/run-15-detached", sha, 1)
    assert git_repo.sha("coral/run-15-detached") == sha
    assert result.branch_deleted  # coral/run-15 itself never moved
    git_repo.assert_clean_state()


# --------------------------------------------------------------------------------------------- recovery


async def test_recover_a_worktree_left_by_a_crash(git_repo: GitRepo) -> None:
    wt = await create_worktree(str(git_repo.path), 21)
    git_repo.write("src/app.py", "print('committed')\n", cwd=wt.path)
    git_repo.commit_all("agent commit", cwd=wt.path)
    git_repo.write("wip.txt", "uncommitted when the server died\n", cwd=wt.path)
    # The server "crashes": nothing finishes the run. Recovery knows only the repository and the run id.
    result = await recover_worktree(str(git_repo.path), 21, author=AUTHOR)
    assert result is not None
    assert (result.base_sha, result.commit_count, result.auto_committed) == (wt.base_sha, 2, True)
    assert result.worktree_removed and not wt.path.exists()
    assert git_repo.show("coral/run-21", "wip.txt") == "uncommitted when the server died\n"
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_recover_a_worktree_whose_directory_is_gone(git_repo: GitRepo) -> None:
    wt = await create_worktree(str(git_repo.path), 22)
    git_repo.write("kept.txt", "committed\n", cwd=wt.path)
    git_repo.commit_all("agent commit", cwd=wt.path)
    await asyncio.to_thread(shutil.rmtree, wt.path)
    # Locked, so git's own prune keeps the stale entry; recovery clears it and keeps the commits.
    assert str(wt.path) in git_repo.worktree_paths()
    result = await recover_worktree(str(git_repo.path), 22)
    assert result is not None and result.commit_count == 1 and not result.auto_committed
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    assert git_repo.show("coral/run-22", "kept.txt") == "committed\n"
    git_repo.assert_clean_state()
    assert await recover_worktree(str(git_repo.path), 99) is None


async def test_recover_a_worktree_whose_creation_was_cut_short(git_repo: GitRepo) -> None:
    # The state a crash leaves in the middle of `git worktree add`: registered, locked with our reason,
    # branch made, nothing checked out yet (no index).
    base = git_repo.sha("main")
    path = git_repo.path.parent / "repo_task_run_23"
    reason = f"coral run 23 (base {base})"
    git_repo.git(
        "worktree",
        "add",
        "-q",
        "--no-checkout",
        "--lock",
        "--reason",
        reason,
        "-b",
        "coral/run-23",
        str(path),
        base,
    )
    result = await recover_worktree(str(git_repo.path), 23)
    assert result is not None
    assert (result.auto_committed, result.commit_count, result.worktree_removed) == (False, 0, True)
    assert result.branch_deleted and "coral/run-23" not in git_repo.branches()
    assert git_repo.worktree_paths() == [str(git_repo.path)]
    git_repo.assert_clean_state()


async def test_recover_worktrees_touches_only_dead_runs_of_its_owner(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    repo = str(git_repo.path)
    alive = await create_worktree(repo, 31, owner="me")
    dead = await create_worktree(repo, 32, owner="me")
    kept = await create_worktree(repo, 33, owner="me")
    other = await create_worktree(repo, 34, owner="someone-else")
    git_repo.git("worktree", "add", "-q", "-b", "mine", str(tmp_path / "users-own"), "main")
    git_repo.write("dead.txt", "work of a dead run\n", cwd=dead.path)
    await finish_worktree(kept)  # ended with cleanup_worktree=false: the user keeps it
    results = await recover_worktrees(repo, active_run_ids={31}, owner="me", author=AUTHOR)
    assert list(results) == [32]
    assert results[32].auto_committed and git_repo.show("coral/run-32", "dead.txt") == "work of a dead run\n"
    assert not dead.path.exists()
    paths = git_repo.worktree_paths()
    assert paths == [repo, str(alive.path), str(kept.path), str(other.path), str(tmp_path / "users-own")]
    for wt in (alive, kept, other):
        await cleanup_worktree(wt)
    git_repo.assert_clean_state()


# ----------------------------------------------------------------------------------------- run in place


async def test_a_run_in_place_uses_the_repository_itself(git_repo: GitRepo) -> None:
    wt = await use_repository_in_place(str(git_repo.path), 41)
    assert (wt.path, wt.branch, wt.isolated, wt.base_sha) == (git_repo.path, "main", False, git_repo.sha())
    git_repo.write("committed.txt", "c\n")
    git_repo.commit_all("agent commit")
    git_repo.write("README.md", "dirty\n")
    git_repo.write("new.txt", "n\n")
    result = await cleanup_worktree(wt)
    assert (result.branch, result.commit_count, result.auto_committed) == ("main", 1, False)
    assert result.files_changed == (ChangedFile("committed.txt", "A"),)
    assert set(result.uncommitted) == {ChangedFile("README.md", "M"), ChangedFile("new.txt", "?")}
    assert not result.worktree_removed and git_repo.path.is_dir()
    assert (git_repo.path / "README.md").read_text() == "dirty\n"  # nothing committed for the user
    assert "coral/run-41" not in git_repo.branches()


async def test_a_run_in_place_needs_a_commit(tmp_path: Path) -> None:
    empty = GitRepo(tmp_path / "empty")
    empty.path.mkdir()
    empty.git("init", "-q")
    with pytest.raises(RepositoryInvalid, match="no commits") as err:
        await use_repository_in_place(str(empty.path), 1)
    assert err.value.field == "repo_path"


# -------------------------------------------------------------------------------- copying ignored files


async def test_ignored_files_are_copied_on_request(git_repo: GitRepo) -> None:
    git_repo.write(".env", "TOKEN=abc\n")
    git_repo.write(".env.local", "LOCAL=1\n")
    git_repo.write("build/cache/x.bin", "cache\n")
    git_repo.write("untracked.txt", "not ignored\n")
    git_repo.write("README.md", "# locally modified\n")
    patterns = [".env*", "build", "untracked.txt", "README.md", "missing.cfg"]
    wt = await create_worktree(str(git_repo.path), 51, copy_ignored=patterns)
    assert set(wt.copied) == {".env", ".env.local", "build"}
    assert (wt.path / ".env").read_text() == "TOKEN=abc\n"
    assert (wt.path / "build" / "cache" / "x.bin").read_text() == "cache\n"
    assert not (wt.path / "untracked.txt").exists()
    assert (wt.path / "README.md").read_text() == "# demo\n"  # the base commit's, not the local edit
    result = await cleanup_worktree(wt)
    assert result.branch_deleted and not result.auto_committed  # copies are ignored: never committed


@pytest.mark.parametrize(
    ("patterns", "field"),
    [
        (["/etc/passwd"], "copy_ignored[0]"),
        ([".env", "../outside"], "copy_ignored[1]"),
        ([".git/config"], "copy_ignored[0]"),
        ([""], "copy_ignored[0]"),
        (".env", "copy_ignored"),
    ],
)
async def test_bad_copy_patterns_are_refused_before_anything_is_made(
    git_repo: GitRepo, patterns: list[str], field: str
) -> None:
    with pytest.raises(RepositoryInvalid) as err:
        await create_worktree(str(git_repo.path), 52, copy_ignored=patterns)
    assert err.value.field == field
    assert git_repo.worktree_paths() == [str(git_repo.path)]


async def test_copy_does_not_follow_a_symlinked_directory_out_of_the_repository(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / ".env").write_text("NOT FOR THE AGENT\n")
    os.symlink(secret_dir, git_repo.path / "build")  # build/ is ignored
    wt = await create_worktree(str(git_repo.path), 53, copy_ignored=["build/.env"])
    assert wt.copied == ()
    assert not (wt.path / "build").exists()
    await cleanup_worktree(wt)


@pytest.mark.parametrize(
    ("work", "expected"),
    [
        # Nothing changed: status, HEAD, remove, and the empty branch deleted.
        ("none", ["status", "rev-parse", "worktree remove", "update-ref"]),
        # Commits only: no add/commit, no branch deletion attempted (it holds them), no prune.
        ("commit", ["status", "rev-parse", "diff", "rev-list", "worktree remove"]),
        # Commits and a draft: the draft is committed; its sha is the HEAD read anyway.
        ("both", ["status", "add", "commit", "rev-parse", "diff", "rev-list", "worktree remove"]),
    ],
)
async def test_finishing_a_run_runs_only_the_git_commands_it_needs(
    git_repo: GitRepo, monkeypatch: pytest.MonkeyPatch, work: str, expected: list[str]
) -> None:
    import coral_server.jobs.git as git_module

    wt = await create_worktree(str(git_repo.path), 40)
    if work in ("commit", "both"):
        git_repo.write("a.txt", "a\n", cwd=wt.path)
        git_repo.commit_all("a", cwd=wt.path)
    if work == "both":
        git_repo.write("draft.txt", "d\n", cwd=wt.path)
    ran: list[str] = []
    real = git_module._run_once

    async def counted(cwd: Path | str, args: tuple[str, ...], *rest: object, **kw: object) -> object:
        words = [a for a in args if not a.startswith("-") and "=" not in a]
        ran.append(" ".join(words[:2]) if words[0] == "worktree" else words[0])
        return await real(cwd, args, *rest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(git_module, "_run_once", counted)
    result = await cleanup_worktree(wt, author=AUTHOR)
    assert ran == expected
    assert result.worktree_removed and not wt.path.exists()
    assert result.branch_deleted is (work == "none")
    assert result.auto_committed is (work == "both")
    git_repo.assert_clean_state()
    assert git_repo.worktree_paths() == [str(git_repo.path)]
