"""A server started with a CRONS.json (`--task-file`): its entries are tasks over HTTP (source "file",
read-only: 409), a restart with the file changed updates them in place, and a bad file fails the
start, naming file, entry and field, leaving the data dir usable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coral_server.tasks.files import TaskFileInvalid, creator_of
from tests.conftest import Coral, start_coral
from tests.jobs.conftest import init_git_repo


def write(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"jobs": entries}))


def settings(tmp_path: Path, crons: Path, repo: Path) -> dict[str, Any]:
    claude = tmp_path / "bin" / "claude"  # the agent type must be runnable for an agent entry to load
    claude.parent.mkdir(exist_ok=True)
    claude.write_text("#!/usr/bin/env bash\nexit 0\n")
    claude.chmod(0o755)
    return {
        "auth_keys": ("k",),
        "claude_bin": str(claude),
        "task_files": (crons,),
        "task_files_repo": repo,
        "webhook_private_destinations": "allow",  # the entries call loopback URLs
    }


async def file_tasks(coral: Coral, crons: Path) -> dict[str, dict[str, Any]]:
    status, page = await coral.request("GET", f"/tasks?created_by={creator_of(crons)}")
    assert status == 200, page
    return {t["title"]: t for t in page["items"]}


REPORT = {
    "name": "daily-report",
    "schedule": "0 9 * * *",
    "type": "agent",
    "job": "Summarize ${today}'s logs",
}
PING = {
    "name": "ping",
    "schedule": "*/5 * * * *",
    "type": "webhook",
    "url": "http://127.0.0.1:9/p",
    "vars": {"a": 1},
}
OFF = {
    "name": "off",
    "schedule": "0 0 * * *",
    "type": "webhook",
    "url": "http://127.0.0.1:9/o",
    "enabled": False,
}


async def test_a_crons_file_is_served_as_read_only_tasks(tmp_path: Path) -> None:
    crons = tmp_path / "config" / "CRONS.json"
    crons.parent.mkdir()
    write(crons, [REPORT, PING, OFF])
    options = settings(tmp_path, crons, init_git_repo(tmp_path / "repo").path)
    async for coral in start_coral(tmp_path, **options):
        tasks = await file_tasks(coral, crons)
        assert {n: (t["source"], t["status"]) for n, t in tasks.items()} == {
            "daily-report": ("file", "active"),
            "ping": ("file", "active"),
            "off": ("file", "paused"),
        }
        step = tasks["daily-report"]["payload"]["pipeline"][0]
        assert (step["uses"], step["with"]["prompt"]) == ("job", "Summarize $${today}'s logs")
        assert step["with"]["repo_path"] == str((tmp_path / "repo").resolve())
        assert len(tasks["ping"]["next_fire_at"]) > 0
        task_id = tasks["ping"]["id"]
        status, body = await coral.request("PUT", f"/tasks/{task_id}", {"priority": 1})
        assert status == 409 and "comes from a file" in body["error"], body
        for action in ("pause", "cancel"):
            status, body = await coral.request("POST", f"/tasks/{task_id}/{action}")
            assert status == 409, (action, body)
        status, shown = await coral.request("GET", f"/tasks/{task_id}")
        assert (shown["status"], shown["priority"]) == ("active", 5)

    # Restarted with the file changed: the same tasks, changed in place; a removed entry cancelled.
    write(crons, [REPORT, {**PING, "schedule": "0 * * * *"}])
    async for coral in start_coral(tmp_path, **options):
        again = await file_tasks(coral, crons)
        assert {n: t["id"] for n, t in again.items()} == {n: t["id"] for n, t in tasks.items()}
        assert again["ping"]["schedule_expr"] == "0 * * * *"
        assert (again["off"]["status"], again["daily-report"]["updated_at"]) == (
            "canceled",
            tasks["daily-report"]["updated_at"],
        )

    # A bad entry fails the start, naming it; the data dir stays usable.
    write(crons, [REPORT, {**PING, "schedule": "0 * * *"}])
    with pytest.raises(TaskFileInvalid) as raised:
        async for _ in start_coral(tmp_path, **options):
            raise AssertionError("started with a bad tasks file")
    assert str(raised.value).startswith(f"tasks file {crons}: entry 'ping' (#1): field 'schedule': ")
    write(crons, [REPORT])
    async for coral in start_coral(tmp_path, **options):
        assert set(await file_tasks(coral, crons)) == {"daily-report", "ping", "off"}
        assert (await file_tasks(coral, crons))["ping"]["status"] == "canceled"
