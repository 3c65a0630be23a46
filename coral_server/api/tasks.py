"""HTTP routes of scheduled tasks (`/tasks`, the reference's Tasks API), their runs (`/runs`) and events."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from coral_server.api import models as m
from coral_server.api import views
from coral_server.api.body import read_json
from coral_server.api.errors import BadRequest, json_response
from coral_server.api.keys import TASKS
from coral_server.api.runs import MAX_LIMIT, MAX_RUN_ID, run_id_of
from coral_server.runs.model import RUN_STATUSES
from coral_server.scheduler import TaskFieldInvalid, preview
from coral_server.store.runs import RunNotFound, RunStatus, TaskRunQuery
from coral_server.store.tasks import Task
from coral_server.tasks import Tasks

MAX_OFFSET = 10**9  # a page this far in is a mistake, not a listing

DEFAULT_LIMIT = 50
BOOLEANS = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}
# An unescaped `+` of a UTC offset arrives as a space in a query string: `...T09:00:00 02:00`.
_OFFSET_AS_SPACE = re.compile(r"(T[^ ]*) (\d{2}(:?\d{2})?)$")


def _tasks(request: web.Request) -> Tasks:
    return request.app[TASKS]


async def _object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", [("(body)", "expected an object")])
    return body


async def _detail(tasks: Tasks, task: Task) -> m.TaskDetail:
    counts = await tasks.run_counts(task.id)
    return views.task_detail(task, tasks.ended(task), tasks.next_fires(task, 5), counts)


def _integer(
    query: Any, name: str, default: int, low: int, high: int, problems: list[tuple[str, str]]
) -> int:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        problems.append((name, f"expected an integer from {low} to {high}"))
    return value


# -- tasks ----------------------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    made = await tasks.create(await _object(request))
    detail = await _detail(tasks, made.task)
    return json_response(views.task_created(detail, made.deduplicated), 200 if made.deduplicated else 201)


async def listing(request: web.Request) -> web.Response:
    query = request.query
    problems: list[tuple[str, str]] = []
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
    offset = _integer(query, "offset", 0, 0, MAX_OFFSET, problems)
    if problems:
        raise BadRequest("invalid task listing parameters", problems)
    filters = {
        "status": query.get("status") or None,
        "created_by": query.get("created_by") or None,
        "schedule_kind": query.get("schedule_kind") or None,
    }
    tasks = _tasks(request)
    found = await tasks.listing(**filters, limit=limit, offset=offset)
    total = await tasks.count(**filters)
    page = views.task_page([(t, tasks.ended(t)) for t in found], total, limit, offset)
    return json_response(page)


async def get_task(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    task = await tasks.get(request.match_info["task_id"])
    return json_response(await _detail(tasks, task))


async def update(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    task = await tasks.update(request.match_info["task_id"], await _object(request))
    return json_response(await _detail(tasks, task))


async def run_now(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    run = await _tasks(request).run_now(task_id)
    return json_response(views.task_run_started(task_id, run), 202)


async def snooze(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    body = await _object(request)
    task = await tasks.snooze(request.match_info["task_id"], body.get("delay_seconds"), body.get("reason"))
    return json_response(await _detail(tasks, task))


async def pause(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    return json_response(await _detail(tasks, await tasks.pause(request.match_info["task_id"])))


async def resume(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    return json_response(await _detail(tasks, await tasks.resume(request.match_info["task_id"])))


async def cancel(request: web.Request) -> web.Response:
    tasks = _tasks(request)
    return json_response(await _detail(tasks, await tasks.cancel(request.match_info["task_id"])))


async def task_runs(request: web.Request) -> web.Response:
    query = request.query
    problems: list[tuple[str, str]] = []
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
    before = _integer(query, "before", 0, 1, MAX_RUN_ID, problems) if "before" in query else None
    status = query.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        problems.append(("status", f"expected one of {', '.join(RUN_STATUSES)}"))
    if problems:
        raise BadRequest("invalid run listing parameters", problems)
    tasks = _tasks(request)
    task_id = request.match_info["task_id"]
    typed: RunStatus | None = status  # type: ignore[assignment]
    runs = await tasks.runs(task_id, status=typed, before=before, limit=limit)
    counts = await tasks.run_counts(task_id)
    total = counts.total if typed is None else counts.by_status.get(typed, 0)
    return json_response(views.task_run_page(runs, total, runs[-1].id if len(runs) == limit else None))


def _boolean(query: Any, name: str, problems: list[tuple[str, str]]) -> bool | None:
    if not query.get(name):
        return None
    value = BOOLEANS.get(query[name].lower())
    if value is None:
        problems.append((name, "expected a boolean: true or false"))
    return value


def _time(query: Any, name: str, problems: list[tuple[str, str]]) -> float | None:
    """An ISO 8601 time of the query as Unix seconds (without an offset: UTC)."""
    raw = query.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(_OFFSET_AS_SPACE.sub(r"\1+\2", raw.upper()))
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):  # not ISO 8601, or beyond what a date holds once in UTC
        problems.append((name, f"expected an ISO 8601 time such as 2026-01-31T09:00:00Z, not {raw!r}"))
        return None


async def all_runs(request: web.Request) -> web.Response:
    """`GET /runs`: every task's runs, as the public tasks system lists them."""
    query = request.query
    problems: list[tuple[str, str]] = []
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, problems)
    offset = _integer(query, "offset", 0, 0, MAX_OFFSET, problems)
    task_id = query.get("task_id") or None
    if task_id is not None:
        try:
            task_id = str(uuid.UUID(task_id))
        except ValueError:
            problems.append(("task_id", f"expected a task id (a UUID), not {task_id!r}"))
    success = _boolean(query, "success", problems)
    errors = _boolean(query, "include_errors", problems)
    start, end = _time(query, "start_time", problems), _time(query, "end_time", problems)
    if start is not None and end is not None and end < start:
        problems.append(("end_time", "is before start_time"))
    if problems:
        raise BadRequest("invalid run listing parameters", problems)
    # Compared to the millisecond, as times are shown: a run's own created_at finds it either way.
    start_ms = None if start is None else math.floor(start * 1000)
    end_ms = None if end is None else math.floor(end * 1000) + 1
    where = TaskRunQuery(
        task_id,
        success,
        None if start_ms is None else start_ms / 1000,
        None if end_ms is None else end_ms / 1000,
        limit,
        offset,
    )
    runs, total = await _tasks(request).all_runs(where)
    return json_response(views.task_run_list(runs, total, limit, offset, errors=bool(errors)))


async def get_run(request: web.Request) -> web.Response:
    """`GET /runs/{run_id}`: one task's run (404 for a job's)."""
    try:
        run = await _tasks(request).run(run_id_of(request))
    except RunNotFound:
        message = f"Task run {request.match_info['run_id']} not found"
        return json_response(views.error_body(message), 404)
    return json_response(views.task_run(run))


async def preview_schedule(request: web.Request) -> web.Response:
    """The next fire times of a schedule, as `POST /tasks` would plan it; or its 400."""
    body = await _object(request)
    problems: list[tuple[str, str]] = []
    count = body.get("count", 5)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        problems.append(("count", "expected an integer from 1 to 100"))
    for name in ("schedule_kind", "schedule_expr", "timezone"):
        if body.get(name) is not None and not isinstance(body[name], str):
            problems.append((name, "expected a string"))
    if problems:
        raise TaskFieldInvalid(problems)
    now = datetime.fromtimestamp(_tasks(request).clock.time(), UTC)
    found = preview(body.get("schedule_kind"), body.get("schedule_expr"), body.get("timezone"), now, count)
    return json_response(views.schedule_preview(found))


# -- events ---------------------------------------------------------------------------------------


async def post_event(request: web.Request) -> web.Response:
    body = await _object(request)
    problems: list[tuple[str, str]] = []
    topic = body.get("topic")
    if not isinstance(topic, str) or not topic.strip() or len(topic) > 200:
        problems.append(("topic", "required: a non-empty string of at most 200 characters"))
    source = body.get("source_agent_id")
    if source is not None and not isinstance(source, str):
        problems.append(("source_agent_id", "expected a string"))
    if problems:
        raise TaskFieldInvalid(problems)
    assert isinstance(topic, str)
    runs = await _tasks(request).fire_event(topic, body.get("payload"), source)
    return json_response(views.event_accepted(topic, runs), 202)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/tasks", create)
    app.router.add_get("/tasks", listing)
    app.router.add_post("/tasks/preview", preview_schedule)
    app.router.add_get("/tasks/{task_id}", get_task)
    app.router.add_put("/tasks/{task_id}", update)
    app.router.add_get("/tasks/{task_id}/runs", task_runs)
    app.router.add_post("/tasks/{task_id}/run_now", run_now)
    app.router.add_post("/tasks/{task_id}/snooze", snooze)
    app.router.add_post("/tasks/{task_id}/pause", pause)
    app.router.add_post("/tasks/{task_id}/resume", resume)
    app.router.add_post("/tasks/{task_id}/cancel", cancel)
    app.router.add_get("/runs", all_runs)
    app.router.add_get("/runs/{run_id}", get_run)
    app.router.add_post("/events", post_event)
