"""Tasks from files: a job branch's `CRONS.json`, each entry kept as a read-only task (source "file").

A file is `{"jobs": [entry, ...]}` (as the job-branches system documents it) or a bare list of
entries. An entry: `name` (unique in its file), `schedule` (cron), `type` (`agent`, the default,
`webhook` or `command`), `enabled` (default true), optional `timezone` (IANA, default UTC), and by
type:

* `agent`: `job` (the prompt), optional `llm_provider` (anthropic → claude, google/gemini → gemini,
  openai → codex; default claude), `llm_model` (passed as `--model`), `repo_path` (relative to the
  file's folder; else the `[tasks] filesRepo` setting): a pipeline of one `job` step;
* `webhook`: `url`, optional `method` (POST only: our webhook steps POST a signed JSON body) and
  `vars` (that body; default `{}`); `headers` are refused (a delivery carries only its signature
  headers): a pipeline of one `webhook` step;
* `command`: refused. A shell command from a file is what a job's agent does in a worktree, under
  its permissions; this server has no step that runs one bare (use an `agent` entry).

Entries are strings as written: `${` in a prompt or in `vars` is no template here.

`sync_task_files` reads every file first (one bad entry fails it all: `TaskFileInvalid` names file,
entry and field, and nothing is changed), then makes the tasks match: an entry is a task keyed by its
file (`created_by`: a UUID derived from the file's path) and its `name` (the task's title); a new
entry creates one, a changed entry updates it (its schedule planned anew only if that changed), a
disabled one is paused (resumed when enabled again), and the task of an entry no longer in any file
is cancelled. Running it again with the same files changes nothing.
"""

from __future__ import annotations

import json
import logging
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coral_server.scheduler import TaskFieldInvalid
from coral_server.store.tasks import Task, TaskFilter, TaskStatus
from coral_server.tasks.service import Tasks

log = logging.getLogger("coral_server.tasks")

ENTRY_TYPES = ("agent", "webhook", "command")
PROVIDERS = {
    "anthropic": "claude",
    "claude": "claude",
    "google": "gemini",
    "gemini": "gemini",
    "openai": "codex",
    "codex": "codex",
}
# The fields each type reads; others (the source system has more, e.g. `scope`) are logged and ignored.
COMMON_FIELDS = frozenset({"name", "schedule", "type", "enabled", "timezone"})
TYPE_FIELDS = {
    "agent": frozenset({"job", "llm_provider", "llm_model", "repo_path"}),
    "webhook": frozenset({"url", "method", "vars", "headers"}),
    "command": frozenset({"command"}),
}
STEP_ID = "cron"
_PAGE = 200


class TaskFileInvalid(ValueError):
    """A tasks file that cannot be loaded: the message names the file, the entry and the field."""

    def __init__(self, path: Path, message: str, entry: str | None = None, field: str | None = None) -> None:
        where = str(path)
        if entry is not None:
            where += f": entry {entry}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"tasks file {where}: {message}")
        self.path, self.entry, self.field, self.message = path, entry, field, message


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a tasks file, as the `POST /tasks` body of its task."""

    path: Path
    label: str  # how messages name it: `"daily-report" (#1)`
    name: str
    enabled: bool
    body: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return str(self.body["created_by"]), self.name


@dataclass(slots=True)
class FileSync:
    """What `sync_task_files` did, by entry name."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def creator_of(path: Path) -> str:
    """The `created_by` of a file's tasks: a UUID derived from its absolute path."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, path.resolve().as_uri()))


def read_task_file(path: Path, *, repo: Path | None = None) -> list[FileEntry]:
    """The entries of one tasks file, each checked for its format (the schedule and the steps are
    checked by `sync_task_files`); raises `TaskFileInvalid`."""
    path = path.resolve()
    problem = None  # raised outside the except clauses: the message says it all, without a chain
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror or exc}"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"is not valid JSON: {exc}"
    if problem is not None:
        raise TaskFileInvalid(path, problem)
    raw = data.get("jobs") if isinstance(data, Mapping) else data
    if not isinstance(raw, list):
        raise TaskFileInvalid(path, 'expected {"jobs": [entries]} or a list of entries')
    entries: list[FileEntry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        entry = _entry(path, index, item, repo)
        if entry.name in seen:
            raise TaskFileInvalid(
                path, f"duplicate name (also entry #{seen[entry.name]})", entry.label, "name"
            )
        seen[entry.name] = index
        entries.append(entry)
    return entries


async def sync_task_files(tasks: Tasks, paths: Sequence[Path], *, repo: Path | None = None) -> FileSync:
    """Make the file tasks match the entries of `paths` (see the module's docstring)."""
    files = list(dict.fromkeys(path.resolve() for path in paths))  # a file named twice is read once
    entries = [entry for path in files for entry in read_task_file(path, repo=repo)]
    wanted: list[dict[str, Any]] = []  # each entry's fields as its task stores them
    for entry in entries:
        invalid: TaskFieldInvalid | None = None
        try:
            spec, payload = await tasks.check(entry.body)
        except TaskFieldInvalid as exc:
            invalid = exc
        if invalid is not None:
            raise TaskFileInvalid(entry.path, invalid.message, entry.label, _file_field(invalid.field))
        schedule = spec.schedule
        wanted.append(
            {
                "description": spec.description,
                "schedule_kind": schedule.kind,
                "schedule_expr": schedule.expr,
                "timezone": schedule.timezone,
                "payload": payload,
            }
        )
    existing: dict[tuple[str, str], Task] = {}
    stale: list[Task] = []
    for task in await _file_tasks(tasks):
        if (task.created_by, task.title) in existing:
            stale.append(task)  # two for one entry (a crash between writes): keep the older
        else:
            existing[(task.created_by, task.title)] = task
    done = FileSync()
    for entry, fields in zip(entries, wanted, strict=True):
        found = existing.pop(entry.key, None)
        if found is None:
            task = (await tasks.create(entry.body, source="file")).task
            done.created.append(entry.name)
        else:
            task = found
            changes = {k: entry.body[k] for k, v in fields.items() if getattr(task, k) != v}
            if changes:
                task = await tasks.update(task.id, changes, source="file")
                done.updated.append(entry.name)
            elif task.status == ("active" if entry.enabled else "paused"):
                done.unchanged.append(entry.name)
        if not entry.enabled and task.status == "active":
            await tasks.pause(task.id, source="file")
            done.paused.append(entry.name)
        elif entry.enabled and task.status == "paused":
            await tasks.resume(task.id, source="file")
            done.resumed.append(entry.name)
    for task in [*existing.values(), *stale]:
        await tasks.cancel(task.id, source="file")
        done.canceled.append(task.title)
    log.info(
        "tasks.files files=%s created=%s updated=%s paused=%s resumed=%s canceled=%s unchanged=%s",
        len(files),
        len(done.created),
        len(done.updated),
        len(done.paused),
        len(done.resumed),
        len(done.canceled),
        len(done.unchanged),
    )
    return done


# -- entries ----------------------------------------------------------------------------------------


def _entry(path: Path, index: int, item: Any, repo: Path | None) -> FileEntry:
    label = f"#{index}"
    if not isinstance(item, Mapping):
        raise TaskFileInvalid(path, "expected an object {name, schedule, type, ...}", label)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise TaskFileInvalid(path, "required: a non-blank string of at most 200 characters", label, "name")
    label = f"{name!r} (#{index})"
    kind = item.get("type", "agent")
    if kind not in ENTRY_TYPES:
        raise TaskFileInvalid(
            path, f"unknown type {kind!r}; expected one of {', '.join(ENTRY_TYPES)}", label, "type"
        )
    if kind == "command":
        raise TaskFileInvalid(
            path,
            "type 'command' is not supported: this server runs no bare shell command on a schedule "
            "(no step kind does that safely); make it an 'agent' entry whose job says what to run",
            label,
            "type",
        )
    schedule = item.get("schedule")
    if not isinstance(schedule, str) or not schedule.strip():
        raise TaskFileInvalid(path, "required: a cron expression such as '0 9 * * *'", label, "schedule")
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        raise TaskFileInvalid(path, "expected true or false", label, "enabled")
    zone = item.get("timezone", "UTC")
    if not isinstance(zone, str):
        raise TaskFileInvalid(
            path, "expected an IANA time zone name such as 'Europe/Berlin'", label, "timezone"
        )
    unknown = sorted(set(item) - COMMON_FIELDS - TYPE_FIELDS[kind])
    if unknown:
        log.warning("tasks.file_fields_ignored file=%s entry=%s fields=%s", path, name, ",".join(unknown))
    step = _agent_step(path, label, item, repo) if kind == "agent" else _webhook_step(path, label, item)
    body = {
        "title": name,
        "description": f"{kind} entry {name!r} of {path}",
        "schedule_kind": "cron",
        "schedule_expr": schedule,
        "timezone": zone,
        "payload": {"params": {}, "pipeline": [step]},
        "created_by": creator_of(path),
    }
    return FileEntry(path, label, name, enabled, body)


def _agent_step(path: Path, label: str, item: Mapping[str, Any], repo: Path | None) -> dict[str, Any]:
    prompt = item.get("job")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskFileInvalid(
            path, "required: the prompt of the agent's job (a non-blank string)", label, "job"
        )
    where = item.get("repo_path")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise TaskFileInvalid(path, "expected a path to a git repository", label, "repo_path")
    if where is None and repo is None:
        raise TaskFileInvalid(
            path,
            "required: the repository the job works in (or set [tasks] filesRepo / --task-files-repo)",
            label,
            "repo_path",
        )
    repository = path.parent / where if where is not None else repo
    assert repository is not None
    args: dict[str, Any] = {"prompt": _literal(prompt), "repo_path": str(repository.resolve())}
    provider = item.get("llm_provider")
    if provider is not None:
        agent = PROVIDERS.get(provider.lower()) if isinstance(provider, str) else None
        if agent is None:
            known = ", ".join(sorted(PROVIDERS))
            raise TaskFileInvalid(
                path, f"unknown provider {provider!r}; known: {known}", label, "llm_provider"
            )
        args["agent_type"] = agent
    model = item.get("llm_model")
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise TaskFileInvalid(path, "expected a model name", label, "llm_model")
        args["flags"] = _literal(f"--model {shlex.quote(model)}")
    return {"id": STEP_ID, "uses": "job", "with": args}


def _webhook_step(path: Path, label: str, item: Mapping[str, Any]) -> dict[str, Any]:
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        raise TaskFileInvalid(path, "required: the URL to call", label, "url")
    method = item.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        raise TaskFileInvalid(
            path,
            f"only POST is supported (a webhook step POSTs a signed JSON body), not {method!r}",
            label,
            "method",
        )
    if item.get("headers"):
        raise TaskFileInvalid(
            path,
            "headers are not supported: a webhook step's delivery carries its signature headers only "
            "(the receiver checks the signature instead of a header secret)",
            label,
            "headers",
        )
    variables = item.get("vars", {})
    if not isinstance(variables, Mapping):
        raise TaskFileInvalid(path, "expected an object (the JSON body sent)", label, "vars")
    return {
        "id": STEP_ID,
        "uses": "webhook",
        "with": {"url": _literal(url), "body": _literal(dict(variables))},
    }


def _literal(value: Any) -> Any:
    """`value` with every `${` escaped: a file's strings are sent as written, never templated."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, Mapping):
        return {str(k): _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


# -- tasks --------------------------------------------------------------------------------------------


async def _file_tasks(tasks: Tasks) -> list[Task]:
    """Every active or paused task that comes from a file."""
    found: list[Task] = []
    statuses: tuple[TaskStatus, ...] = ("active", "paused")
    for status in statuses:
        offset = 0
        while True:
            page = await tasks.store.listing(TaskFilter(status, limit=_PAGE, offset=offset))
            found += [t for t in page if t.source == "file"]
            if len(page) < _PAGE:
                break
            offset += _PAGE
    return found


_FILE_FIELDS = {"schedule_expr": "schedule", "timezone": "timezone", "title": "name"}


def _file_field(task_field: str) -> str:
    """The file's name for a task field a check refused (`payload.pipeline[0].with.repo_path` →
    `repo_path`)."""
    if task_field in _FILE_FIELDS:
        return _FILE_FIELDS[task_field]
    if task_field.startswith("payload.pipeline[0].with."):
        name = task_field.removeprefix("payload.pipeline[0].with.").split(".")[0]
        return {"prompt": "job", "body": "vars", "agent_type": "llm_provider", "flags": "llm_model"}.get(
            name, name
        )
    return task_field
