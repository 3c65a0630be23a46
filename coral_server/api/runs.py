"""HTTP routes of runs: submit a one-time job, read, list, kill, answer (`/api/tasks/run[s]`)."""

from __future__ import annotations

from aiohttp import web

from coral_server.api import views
from coral_server.api.body import read_json
from coral_server.api.errors import BadRequest, json_response
from coral_server.api.keys import RUNS
from coral_server.runs.model import RUN_STATUSES, TRIGGERS
from coral_server.runs.service import RETRY_AFTER_MAX_S, CapReached, RunNotActive, RunNotWaiting
from coral_server.store.runs import RunFilter, RunLimitReached, RunNotFound

MAX_LIMIT = 200


# Run ids are SQLite integers: nothing above this can name one.
MAX_RUN_ID = 2**63 - 1


def run_id_of(request: web.Request) -> int:
    """The run id of the path; an id that is not a number is an unknown run (404)."""
    raw = request.match_info["run_id"]
    try:
        run_id = int(raw)
    except ValueError:
        raise RunNotFound(raw) from None
    if not 1 <= run_id <= MAX_RUN_ID:  # beyond what the store can hold: no such run either
        raise RunNotFound(raw)
    return run_id


def _not_found() -> web.Response:
    return json_response(views.error_body("Run not found"), 404)


async def submit(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", [("(body)", "expected an object")])
    runs = request.app[RUNS]
    try:
        run = await runs.submit(
            "job",
            body,
            trigger="api",
            display_name=body.get("display_name") if isinstance(body.get("display_name"), str) else None,
            webhook_url=body.get("webhook_url") if isinstance(body.get("webhook_url"), str) else None,
        )
    except RunLimitReached as exc:
        message = f"Concurrent task limit reached (max: {exc.cap}). Try again later."
        response = json_response(views.error_body(message), 429)
        wait = exc.retry_after_s if isinstance(exc, CapReached) else RETRY_AFTER_MAX_S
        response.headers["Retry-After"] = str(wait)
        return response
    return json_response(views.run_submitted(run))


async def get_run(request: web.Request) -> web.Response:
    try:
        run = await request.app[RUNS].get(run_id_of(request))
    except RunNotFound:
        return _not_found()
    return json_response(views.run_detail(run))


async def list_runs(request: web.Request) -> web.Response:
    query = request.query
    problems: list[tuple[str, str]] = []
    limit = 50
    before: int | None = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            problems.append(("limit", f"expected an integer from 1 to {MAX_LIMIT}"))
    if "before" in query:
        try:
            before = int(query["before"])
            if not 1 <= before <= MAX_RUN_ID:
                raise ValueError
        except ValueError:
            problems.append(("before", f"expected a run id (an integer from 1 to {MAX_RUN_ID})"))
    status = query.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        problems.append(("status", f"expected one of {', '.join(RUN_STATUSES)}"))
    trigger = query.get("trigger") or None
    if trigger is not None and trigger not in TRIGGERS:
        problems.append(("trigger", f"expected one of {', '.join(TRIGGERS)}"))
    if problems:
        raise BadRequest("invalid run listing parameters", problems)
    task_id = query.get("task_id") or None
    where = RunFilter(status=status, trigger=trigger, task_id=task_id, before=before, limit=limit)  # type: ignore[arg-type]
    runs = await request.app[RUNS].listing(where)
    return json_response(views.run_page(runs, runs[-1].id if len(runs) == limit else None))


async def kill(request: web.Request) -> web.Response:
    try:
        await request.app[RUNS].kill(run_id_of(request))
    except (RunNotActive, RunNotFound) as exc:
        detail = f"Run not found or not active ({exc})"
        return json_response(views.error_body("Run not found or not active", detail=detail), 404)
    return json_response(views.ok())


async def answer(request: web.Request) -> web.Response:
    body = await read_json(request)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise BadRequest("'text' is required", [("text", "expected a string")])
    try:
        await request.app[RUNS].answer(run_id_of(request), text)
    except RunNotFound:
        return _not_found()
    except RunNotWaiting as exc:
        message = f"Run {exc.run_id} is not waiting for input (status: {exc.status})"
        return json_response(views.error_body(message), 409)
    return json_response(views.ok())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/tasks/run", submit)
    app.router.add_get("/api/tasks/runs", list_runs)
    app.router.add_get("/api/tasks/runs/{run_id}", get_run)
    app.router.add_post("/api/tasks/runs/{run_id}/kill", kill)
    app.router.add_post("/api/tasks/runs/{run_id}/input", answer)
