"""The cap on active runs: a refusal costs no git process and advises a Retry-After from the runs' limits.

A real server with a real store and real git; the agent is a stand-in executable that works until it is
stopped (at the process boundary, where the real CLI would call its model API)."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import coral_server.jobs.git as git_module
from coral_server.runs.service import RETRY_AFTER_MAX_S, retry_after_s
from coral_server.store.runs import ActiveSlot
from tests.conftest import WAIT_S, Coral, start_coral, wait_until
from tests.e2e.test_crash import Server
from tests.jobs.conftest import init_git_repo

BUSY_CLAUDE = "#!/bin/sh\nexec sleep 600\n"
FLAGS = "--dangerously-skip-permissions"  # headless: no permission prompt to answer


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Coral]:
    binary = tmp_path / "bin" / "claude"
    binary.parent.mkdir()
    binary.write_text(BUSY_CLAUDE)
    binary.chmod(0o755)
    async for server in start_coral(tmp_path, claude_bin=str(binary), max_concurrent_jobs=2):
        yield server


async def status_of(coral: Coral, run_id: int) -> str:
    _, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
    return str(run["status"])


async def test_at_the_cap_a_submission_is_refused_before_any_git_with_a_derived_retry_after(
    capped: Coral, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = init_git_repo(tmp_path / "repo").path
    ids = []
    for limit in (40, 3600):
        body = {"prompt": "work", "repo_path": str(repo), "flags": FLAGS, "max_duration_s": limit}
        status, out = await capped.request("POST", "/api/tasks/run", body)
        assert status == 200, out
        ids.append(out["run_id"])
    for run_id in ids:
        await wait_until(lambda r=run_id: _is(capped, r, "running"), WAIT_S, what=f"run {run_id} running")

    ran: list[tuple[str, ...]] = []
    real = git_module._run_once

    async def counted(cwd: Path | str, args: tuple[str, ...], *rest: Any, **kw: Any) -> Any:
        ran.append(args)
        return await real(cwd, args, *rest, **kw)

    monkeypatch.setattr(git_module, "_run_once", counted)
    body = {"prompt": "one too many", "repo_path": str(repo), "flags": FLAGS}
    async with capped.http.post(capped.base_url + "/api/tasks/run", json=body) as resp:
        out = await resp.json()
        assert resp.status == 429, out
        retry_after = int(resp.headers["Retry-After"])
    assert out["error"] == "Concurrent task limit reached (max: 2). Try again later."
    assert ran == []  # refused on the store's count, before validation ran git
    # The first run reaches its 40 s limit first: that is when a slot is sure to free.
    assert 30 <= retry_after <= 40, retry_after

    monkeypatch.setattr(git_module, "_run_once", real)
    status, _ = await capped.request("POST", f"/api/tasks/runs/{ids[0]}/kill")
    assert status == 200
    await wait_until(lambda: _is(capped, ids[0], "killed"), WAIT_S, what="the first run killed")
    status, out = await capped.request("POST", "/api/tasks/run", body)
    assert status == 200, out  # a slot is free again
    for run_id in (ids[1], out["run_id"]):
        await capped.request("POST", f"/api/tasks/runs/{run_id}/kill")
    for run_id in (ids[1], out["run_id"]):
        await wait_until(lambda r=run_id: _is(capped, r, "killed"), WAIT_S, what=f"run {run_id} killed")


async def _is(coral: Coral, run_id: int, status: str) -> bool:
    return await status_of(coral, run_id) == status


def test_retry_after_is_the_time_to_the_first_runs_limit_within_bounds() -> None:
    now = 1000.0
    slots = [
        ActiveSlot("running", now - 10, 40.0),  # 30 s left
        ActiveSlot("running", now - 5, 3600.0),
        ActiveSlot("pending", None, 20.0),  # not started: its limit has not begun
    ]
    assert retry_after_s(slots, now) == 30
    assert retry_after_s([ActiveSlot("running", now - 100, 3600.0)], now) == RETRY_AFTER_MAX_S
    assert retry_after_s([ActiveSlot("waiting_input", now - 50, 50.2)], now) == 1  # overdue: now
    assert retry_after_s([ActiveSlot("pending", None, None)], now) == RETRY_AFTER_MAX_S


async def test_two_servers_on_one_data_dir_share_the_cap_across_restarts(tmp_path: Path) -> None:
    """The count is the store's: a second server process, and the same one restarted, see the first
    server's running run (and leave it running: its server is alive)."""
    binary = tmp_path / "bin" / "claude"
    binary.parent.mkdir()
    binary.write_text(BUSY_CLAUDE)
    binary.chmod(0o755)
    repo = init_git_repo(tmp_path / "repo").path
    extra = ["--claude-bin", str(binary), "--max-concurrent-jobs", "1"]
    marker = f"cap-{uuid.uuid4().hex}"
    first = Server(tmp_path / "data", marker, extra, {})
    second = Server(tmp_path / "data", marker, extra, {})
    body = {"prompt": "work", "repo_path": str(repo), "flags": FLAGS}
    try:
        await first.start()
        await second.start()
        async with aiohttp.ClientSession() as http:

            async def call(server: Server, method: str, path: str, json: Any = None) -> tuple[int, Any]:
                async with http.request(method, server.base + path, json=json) as resp:
                    return resp.status, await resp.json(content_type=None)

            async def status(server: Server, run_id: int) -> str:
                return str((await call(server, "GET", f"/api/tasks/runs/{run_id}"))[1]["status"])

            code, out = await call(first, "POST", "/api/tasks/run", body)
            assert code == 200, out
            run_id = out["run_id"]
            await wait_until(
                lambda: _eq(status(first, run_id), "running"), WAIT_S, what="running on the first"
            )
            code, out = await call(second, "POST", "/api/tasks/run", body)
            assert code == 429, out
            await second.stop()
            await second.start()  # a restart: the count is still the store's
            code, out = await call(second, "POST", "/api/tasks/run", body)
            assert code == 429, out
            assert await status(second, run_id) == "running"  # its server lives: not recovered
            code, _ = await call(first, "POST", f"/api/tasks/runs/{run_id}/kill")
            assert code == 200
            await wait_until(lambda: _eq(status(first, run_id), "killed"), WAIT_S, what="killed")
            code, out = await call(second, "POST", "/api/tasks/run", body)
            assert code == 200, out  # the slot is free for either server
            # Either server's dispatcher may take it. Killed through the other one, it is killed by
            # the one that executes it (before: a 404, "running on another server").
            await wait_until(lambda: _eq(status(second, out["run_id"]), "running"), WAIT_S, what="running")
            owner = executing_server(tmp_path / "data", out["run_id"])
            other = second if first.proc is not None and f":{first.proc.pid}:" in owner else first
            code, _ = await call(other, "POST", f"/api/tasks/runs/{out['run_id']}/kill")
            assert code == 200
            await wait_until(lambda: _eq(status(other, out["run_id"]), "killed"), WAIT_S, what="killed there")
            _, killed = await call(other, "GET", f"/api/tasks/runs/{out['run_id']}")
            assert killed["exit_reason"] == "user_cancelled", killed
    finally:
        for server in (first, second):
            await server.stop()


def executing_server(data: Path, run_id: int) -> str:
    """Who holds run `run_id`, as the store says (`instance:pid:start`)."""
    with contextlib.closing(sqlite3.connect(data / "coral.db")) as conn:
        (owner,) = conn.execute("SELECT owner FROM runs WHERE id = ?", (run_id,)).fetchone()
    return str(owner)


async def _eq(value: Any, expected: str) -> bool:
    return await value == expected
