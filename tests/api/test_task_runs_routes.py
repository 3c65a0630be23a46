"""`GET /runs` and `GET /runs/{id}` over HTTP: every task's runs with the public tasks system's fields
(success, error, output, lease_owner, leased_until), its filters and paging, bad filters named, a job's
run and unknown ids 404, bearer auth; the same fields in `/tasks/{id}/runs`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import WAIT_S, Coral, start_coral, wait_until
from tests.jobs.conftest import init_git_repo
from tests.tasks.conftest import body

FINAL = ("completed", "failed", "killed")
HIDDEN = "[Error details hidden - use include_errors=true]"
CLAUDE_RESULT = {"type": "result", "subtype": "success", "is_error": False, "result": "done", "num_turns": 1}


class Receiver:
    """A webhook destination on loopback that answers 200, each request once `gate` is open."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.received: list[Any] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        await self.gate.wait()
        return web.json_response({"ok": True})

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gate.set()
        assert self._runner is not None
        await self._runner.cleanup()


def task(title: str, url: str) -> dict[str, Any]:
    """A task that runs a webhook step to `url` once (no retries)."""
    step = {"id": "s", "uses": "webhook", "with": {"url": url, "body": {"run": "${run.id}"}}}
    return body(title=title, max_retries=0, payload={"pipeline": [step]})


@pytest.fixture
async def coral(tmp_path: Path) -> AsyncIterator[Coral]:
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text(f"#!/usr/bin/env bash\necho '{json.dumps(CLAUDE_RESULT)}'\n")
    claude.chmod(0o755)
    settings = {
        "auth_keys": ("k",),
        "webhook_private_destinations": "allow",  # the receiver is on loopback
        "webhook_max_attempts": 1,
        "claude_bin": str(claude),
    }
    async for server in start_coral(tmp_path, **settings):
        yield server


async def ended(coral: Coral, run_id: int) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        status, run = await coral.request("GET", f"/runs/{run_id}")
        assert status == 200, run
        return run if run["status"] in FINAL else None

    return await wait_until(final, WAIT_S, interval=0.05, what=f"run {run_id} ends")  # type: ignore[no-any-return]


async def run_now(coral: Coral, task_id: str) -> int:
    status, started = await coral.request("POST", f"/tasks/{task_id}/run_now")
    assert status == 202, started
    assert started["run"]["success"] is None and started["run"]["leased_until"] is None
    return int(started["run"]["run_id"])


async def listing(coral: Coral, query: str) -> dict[str, Any]:
    status, page = await coral.request("GET", "/runs?" + query)
    assert status == 200, (query, page)
    return page  # type: ignore[no-any-return]


def before(iso: str, ms: int) -> str:
    moment = datetime.fromisoformat(iso) - timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds")


async def test_runs_lists_every_tasks_runs_with_the_public_systems_fields(
    coral: Coral, tmp_path: Path
) -> None:
    async with Receiver() as receiver:
        _, good = await coral.request("POST", "/tasks", task("good", receiver.url))
        _, bad = await coral.request("POST", "/tasks", task("bad", "http://127.0.0.1:9/x"))  # nobody listens

        # -- a run while its webhook step waits for the answer: active, so success is null
        first = await run_now(coral, good["id"])
        await wait_until(lambda: receiver.received, what="the webhook step's request")
        status, active = await coral.request("GET", f"/runs/{first}")
        assert status == 200, active
        assert (active["status"], active["success"], active["error"], active["finished_at"]) == (
            "running",
            None,
            None,
            None,
        )
        receiver.gate.set()
        ok = await ended(coral, first)
    assert (ok["status"], ok["success"], ok["error"], ok["task_id"], ok["attempt"]) == (
        "completed",
        True,
        None,
        good["id"],
        1,
    )
    assert ok["output"] == ok["result"] and ok["output"]["steps"]["s"]["status"] == "delivered"
    assert ok["lease_owner"].split(":")[1] == str(os.getpid())  # this (in-process) server claimed it
    assert ok["leased_until"] is None and ok["id"] == ok["run_id"] == first

    failed = [await run_now(coral, bad["id"]) for _ in range(2)]
    for run_id in failed:
        run = await ended(coral, run_id)
        assert (run["status"], run["success"]) == ("failed", False)
        assert run["error"] == run["error_msg"] and run["error"].startswith(
            "step 's' (webhook): webhook failed"
        )

    # -- every run, newest first; errors hidden unless asked for (error_msg keeps them)
    page = await listing(coral, "")
    assert [r["id"] for r in page["items"]] == [failed[1], failed[0], first]
    assert (page["total"], page["limit"], page["offset"], page["has_more"]) == (3, 50, 0, False)
    assert [r["error"] for r in page["items"]] == [HIDDEN, HIDDEN, None]
    assert page["items"][0]["error_msg"].startswith("step 's' (webhook)")
    shown = await listing(coral, "include_errors=true")
    assert shown["items"][0]["error"].startswith("step 's' (webhook)")

    # -- filters and paging
    assert [r["id"] for r in (await listing(coral, "success=true"))["items"]] == [first]
    assert [r["id"] for r in (await listing(coral, "success=False"))["items"]] == [failed[1], failed[0]]
    mine = await listing(coral, f"task_id={bad['id']}&limit=1&offset=1")
    assert ([r["id"] for r in mine["items"]], mine["total"], mine["has_more"]) == ([failed[0]], 2, False)
    first_page = await listing(coral, "limit=2")
    assert (len(first_page["items"]), first_page["has_more"]) == (2, True)
    _, other = await coral.request("POST", "/tasks", task("unrun", receiver.url))
    assert (await listing(coral, f"task_id={other['id']}"))["items"] == []
    created = {r["id"]: r["created_at"] for r in page["items"]}
    assert created[first] < created[failed[0]]
    since = created[failed[0]].replace("Z", "+00:00")  # an unescaped `+`: a space in the query
    assert [r["id"] for r in (await listing(coral, f"start_time={since}"))["items"]] == failed[::-1]
    until = before(created[failed[0]], 1)  # before the first failure, after the first run (no offset: UTC)
    assert [r["id"] for r in (await listing(coral, f"end_time={until.removesuffix('+00:00')}"))["items"]] == [
        first
    ]
    window = await listing(coral, f"start_time={created[failed[1]]}&end_time={created[failed[1]]}")
    assert [r["id"] for r in window["items"]] == [failed[1]]

    # -- the same fields on a task's own runs, its detail and run_now's answer
    _, theirs = await coral.request("GET", f"/tasks/{bad['id']}/runs")
    assert [(r["id"], r["success"], r["error"]) for r in theirs["items"]] == [
        (failed[1], False, shown["items"][0]["error"]),
        (failed[0], False, shown["items"][1]["error"]),
    ]
    _, detail = await coral.request("GET", f"/tasks/{good['id']}")
    assert (detail["last_run"]["id"], detail["last_run"]["success"]) == (first, True)

    # -- a one-time job's run is no task's: 404 here, as an unknown id is
    repo = init_git_repo(tmp_path / "repo").path
    job = {"prompt": "say done", "repo_path": str(repo), "flags": "--dangerously-skip-permissions"}
    status, submitted = await coral.request("POST", "/api/tasks/run", job)
    assert status == 200, submitted
    job_id = submitted["run_id"]

    async def job_ended() -> bool:
        _, run = await coral.request("GET", f"/api/tasks/runs/{job_id}")
        return bool(run["status"] in FINAL)

    await wait_until(job_ended, WAIT_S, interval=0.05, what="the job ends")
    for path in (f"/runs/{job_id}", "/runs/999999", "/runs/abc", "/runs/99999999999999999999999"):
        status, body = await coral.request("GET", path)
        assert status == 404 and "not found" in body["error"], (path, body)
    assert (await listing(coral, ""))["total"] == 3  # the job's run is not listed either


async def test_bad_filters_are_named_and_the_bearer_key_is_needed(coral: Coral) -> None:
    for query, field in [
        ("task_id=nope", "task_id"),
        ("success=maybe", "success"),
        ("include_errors=2", "include_errors"),
        ("start_time=yesterday", "start_time"),
        ("end_time=2026-13-01T00:00:00Z", "end_time"),
        ("start_time=2026-02-01T00:00:00Z&end_time=2026-01-01T00:00:00Z", "end_time"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
    ]:
        status, body = await coral.request("GET", "/runs?" + query)
        assert status == 400, (query, body)
        assert [e["field"] for e in body["errors"]] == [field], (query, body)
    status, body = await coral.request("GET", "/runs?success=yes&include_errors=0&limit=200&offset=0")
    assert (status, body["items"], body["limit"]) == (200, [], 200)
    for path in ("/runs", "/runs/1"):
        status, body = await coral.request("GET", path, headers={"Authorization": "Bearer wrong"})
        assert status == 401, (path, body)
