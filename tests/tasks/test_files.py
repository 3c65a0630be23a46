"""Tasks from files (`coral_server.tasks.files`): CRONS.json entries read from real temp files, turned
into tasks in a real SQLite store, kept in step with the file (created, updated, paused, resumed,
cancelled; idempotent), read-only through the service, and every bad file refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coral_server.store.tasks import Task, TaskFilter
from coral_server.tasks import TaskReadOnly
from coral_server.tasks.files import TaskFileInvalid, creator_of, read_task_file, sync_task_files
from coral_server.tasks.payload import parse_pipeline
from coral_server.tasks.templates import render
from tests.tasks.conftest import World

HOOK = "http://127.0.0.1:9/hook"


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def agent(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "schedule": "0 9 * * *", "type": "agent", "job": f"do {name}", **fields}


def hook(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "schedule": "*/5 * * * *", "type": "webhook", "url": HOOK, **fields}


async def file_tasks(world: World) -> dict[str, Task]:
    """Every task from a file (any status), by title."""
    tasks = await world.store.tasks.listing(TaskFilter(limit=200))
    return {t.title: t for t in tasks if t.source == "file"}


def test_entries_become_task_bodies(tmp_path: Path) -> None:
    repo = tmp_path / "work"
    path = write(
        tmp_path / "config" / "CRONS.json",
        {
            "jobs": [
                agent("daily-report", enabled=True),
                agent("tuned", repo_path="../other", llm_provider="OpenAI", llm_model="gpt 5", scope="x"),
                {"name": "defaults", "schedule": "0 1 * * *", "job": "say hi"},  # type: agent
                hook(
                    "ping",
                    method="post",
                    vars={"a": 1, "text": "${not a template}"},
                    timezone="Europe/Berlin",
                ),
                hook("off", enabled=False),
            ]
        },
    )
    entries = read_task_file(path, repo=repo)
    assert [(e.name, e.enabled) for e in entries] == [
        ("daily-report", True),
        ("tuned", True),
        ("defaults", True),
        ("ping", True),
        ("off", False),
    ]
    report, tuned, defaults, ping, _ = (e.body for e in entries)
    creator = creator_of(path)
    assert creator == creator_of(tmp_path / "config" / ".." / "config" / "CRONS.json")  # by absolute path
    assert creator != creator_of(tmp_path / "CRONS.json")
    assert {k: report[k] for k in ("title", "schedule_kind", "schedule_expr", "timezone", "created_by")} == {
        "title": "daily-report",
        "schedule_kind": "cron",
        "schedule_expr": "0 9 * * *",
        "timezone": "UTC",
        "created_by": creator,
    }
    assert report["payload"] == {
        "params": {},
        "pipeline": [
            {
                "id": "cron",
                "uses": "job",
                "with": {"prompt": "do daily-report", "repo_path": str(repo.resolve())},
            }
        ],
    }
    assert tuned["payload"]["pipeline"][0]["with"] == {
        "prompt": "do tuned",
        "repo_path": str((tmp_path / "other").resolve()),  # relative to the file's folder
        "agent_type": "codex",
        "flags": "--model 'gpt 5'",
    }
    assert defaults["payload"]["pipeline"][0]["uses"] == "job"
    step = ping["payload"]["pipeline"][0]
    assert (ping["timezone"], step["uses"], step["with"]["url"]) == ("Europe/Berlin", "webhook", HOOK)
    # Written as they are: `${` is escaped, so the pipeline's templates leave it alone.
    pipeline = parse_pipeline(ping["payload"])
    assert render(pipeline.steps[0].args, {})["body"] == {"a": 1, "text": "${not a template}"}


def test_a_bare_list_is_a_file_too(tmp_path: Path) -> None:
    path = write(tmp_path / "CRONS.json", [hook("a"), hook("b")])
    assert [e.name for e in read_task_file(path)] == ["a", "b"]


BAD_FILES: list[tuple[Any, str | None, str | None, str]] = [
    ('{"jobs": [', None, None, "is not valid JSON"),
    ({"crons": []}, None, None, 'expected {"jobs": [entries]}'),
    ([7], "#0", None, "expected an object"),
    ([{"schedule": "* * * * *"}], "#0", "name", "required"),
    ([hook("a"), hook("a")], "'a' (#1)", "name", "duplicate name (also entry #0)"),
    ([hook("a", type="cronjob")], "'a' (#0)", "type", "unknown type 'cronjob'"),
    (
        [{"name": "sh", "schedule": "* * * * *", "type": "command", "command": "ls"}],
        "'sh' (#0)",
        "type",
        "command",
    ),
    ([hook("a", schedule=None)], "'a' (#0)", "schedule", "required: a cron expression"),
    ([hook("a", enabled="yes")], "'a' (#0)", "enabled", "expected true or false"),
    ([hook("a", timezone=3)], "'a' (#0)", "timezone", "IANA"),
    ([agent("a", job=" ")], "'a' (#0)", "job", "required"),
    ([agent("a")], "'a' (#0)", "repo_path", "filesRepo"),  # neither the entry nor the setting
    ([agent("a", repo_path="r", llm_provider="acme")], "'a' (#0)", "llm_provider", "unknown provider 'acme'"),
    ([agent("a", repo_path="r", llm_model=5)], "'a' (#0)", "llm_model", "expected a model name"),
    ([hook("a", url="")], "'a' (#0)", "url", "required"),
    ([hook("a", method="GET")], "'a' (#0)", "method", "only POST"),
    ([hook("a", headers={"X-Key": "s"})], "'a' (#0)", "headers", "not supported"),
    ([hook("a", vars=[1])], "'a' (#0)", "vars", "expected an object"),
]


@pytest.mark.parametrize(("data", "entry", "field", "message"), BAD_FILES)
def test_a_bad_file_is_refused_naming_file_entry_and_field(
    tmp_path: Path, data: Any, entry: str | None, field: str | None, message: str
) -> None:
    path = write(tmp_path / "CRONS.json", data)
    with pytest.raises(TaskFileInvalid) as raised:
        read_task_file(path)
    error = raised.value
    assert (error.path, error.entry, error.field) == (path, entry, field)
    assert message in error.message
    assert str(error).startswith(f"tasks file {path}" + (f": entry {entry}" if entry else ""))
    if field is not None:
        assert f"field {field!r}" in str(error)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskFileInvalid, match="cannot be read: No such file"):
        read_task_file(tmp_path / "nope.json")


async def test_a_file_is_kept_in_step_with_its_tasks(world: World, tmp_path: Path) -> None:
    path = write(tmp_path / "CRONS.json", {"jobs": [hook("a"), hook("b", enabled=False), hook("c")]})
    done = await sync_task_files(world.tasks, [path])
    assert (done.created, done.paused) == (["a", "b", "c"], ["b"])
    tasks = await file_tasks(world)
    assert {n: t.status for n, t in tasks.items()} == {"a": "active", "b": "paused", "c": "active"}
    assert {t.created_by for t in tasks.values()} == {creator_of(path)}
    assert tasks["a"].next_fire_at == world.clock.time() + 300  # */5 from 08:00

    # The same file again (named twice, once by another spelling): nothing moves (no re-planning, no write).
    world.clock.advance(60)
    again = await sync_task_files(world.tasks, [path, tmp_path / "." / "CRONS.json"])
    assert (again.unchanged, again.created, again.updated, again.canceled) == (["a", "b", "c"], [], [], [])
    assert await file_tasks(world) == tasks

    # Changed: a's schedule, b enabled, c gone, d new.
    write(path, {"jobs": [hook("a", schedule="0 * * * *"), hook("b"), hook("d", vars={"k": "v"})]})
    changed = await sync_task_files(world.tasks, [path])
    assert (changed.updated, changed.resumed, changed.canceled, changed.created) == (
        ["a"],
        ["b"],
        ["c"],
        ["d"],
    )
    now = await file_tasks(world)
    assert now["a"].id == tasks["a"].id and now["a"].schedule_expr == "0 * * * *"
    assert now["a"].next_fire_at == world.clock.time() - 60 + 3600  # planned anew: 09:00
    assert (now["b"].status, now["c"].status, now["d"].status) == ("active", "canceled", "active")
    assert now["d"].payload["pipeline"][0]["with"]["body"] == {"k": "v"}

    # Disabled while it changes: updated and paused; its entry back after a cancel: a new task.
    write(
        path, {"jobs": [hook("a", schedule="0 * * * *"), hook("b", url=HOOK + "2", enabled=False), hook("c")]}
    )
    last = await sync_task_files(world.tasks, [path])
    assert (last.updated, last.paused, last.created, last.canceled) == (["b"], ["b"], ["c"], ["d"])
    final = await file_tasks(world)
    assert final["b"].status == "paused" and final["c"].id != tasks["c"].id

    # A file no longer listed: its tasks are cancelled.
    gone = await sync_task_files(world.tasks, [])
    assert sorted(gone.canceled) == ["a", "b", "c"]
    assert {t.status for t in (await file_tasks(world)).values()} == {"canceled"}


async def test_file_tasks_are_read_only_through_the_service(world: World, tmp_path: Path) -> None:
    path = write(tmp_path / "CRONS.json", [hook("a")])
    await sync_task_files(world.tasks, [path])
    task = (await file_tasks(world))["a"]
    for action in (
        world.tasks.update(task.id, {"priority": 1}),
        world.tasks.pause(task.id),
        world.tasks.resume(task.id),
        world.tasks.cancel(task.id),
    ):
        with pytest.raises(TaskReadOnly):
            await action
    run = await world.tasks.run_now(task.id)  # running it is no change to it
    assert run.task_id == task.id


async def test_a_bad_schedule_fails_the_whole_load_and_changes_nothing(world: World, tmp_path: Path) -> None:
    good = write(tmp_path / "a" / "CRONS.json", [hook("a")])
    await sync_task_files(world.tasks, [good])
    before = await file_tasks(world)
    bad = write(tmp_path / "b" / "CRONS.json", [hook("fine"), hook("broken", schedule="0 25 * * *")])
    write(good, [hook("a", schedule="0 * * * *"), hook("new")])
    with pytest.raises(TaskFileInvalid) as raised:
        await sync_task_files(world.tasks, [good, bad])
    assert (raised.value.path, raised.value.entry, raised.value.field) == (bad, "'broken' (#1)", "schedule")
    assert "25" in raised.value.message
    zone = write(tmp_path / "c" / "CRONS.json", [hook("z", timezone="Mars/Olympus")])
    with pytest.raises(TaskFileInvalid) as raised:
        await sync_task_files(world.tasks, [good, zone])
    assert (raised.value.entry, raised.value.field) == ("'z' (#0)", "timezone")
    assert await file_tasks(world) == before
