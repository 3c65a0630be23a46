"""HTTP routes of runs: submit a one-time job, read, list, kill, answer (`/api/tasks/run[s]`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from coral_server.api.body import read_json
from coral_server.api.errors import BadRequest, json_response
from coral_server.api.keys import RUNS
from coral_server.runs.model import RUN_STATUSES, TRIGGERS, Run
from coral_server.runs.service import RunNotActive, RunNotWaiting, iso
from coral_server.store.runs import RunFilter, RunLimitReached, RunNotFound

MAX_LIMIT = 200


def run_view(run: Run, *, output: bool = True) -> dict[str, Any]:
    """A run as the API shows it: the original system's fields, then ours."""
    view: dict[str, Any] = {
        "id": run.id,
        "run_id": run.id,
        "status": run.status,
        "trigger_type": run.trigger,
        "kind": run.kind,
        "display_name": run.display_name,
        "agent_type": run.spec.get("agent_type"),
        "worktree_path": run.worktree_path,
        "branch": run.branch,
        "session_id": f"run-{run.id}",
        "scheduled_at": iso(run.created_at),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": run.duration_s,
        "exit_reason": run.exit_reason,
        "error_msg": run.error,
        "result": run.result,
        "waiting_for": run.waiting_for,
        "auto_accepts": list(run.auto_accepts),
        "task_id": run.task_id,
        "attempt": run.attempt,
        "priority": run.priority,
        "prompt": run.spec.get("prompt"),
        "repo_path": run.spec.get("repo_path"),
    }
    if output:
        view["output"] = run.output
    return view


def run_id_of(request: web.Request) -> int:
    """The run id of the path; an id that is not a number is an unknown run (404)."""
    raw = request.match_info["run_id"]
    try:
        return int(raw)
    except ValueError:
        raise RunNotFound(raw) from None


def _not_found(message: str = "Run not found") -> web.Response:
    return json_response({"error": message, "message": message}, 404)


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
        response = json_response({"error": message, "message": message}, 429)
        response.headers["Retry-After"] = "5"
        return response
    return json_response({"run_id": run.id, "status": run.status})


async def get_run(request: web.Request) -> web.Response:
    try:
        run = await request.app[RUNS].get(run_id_of(request))
    except RunNotFound:
        return _not_found()
    return json_response(run_view(run))


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
        except ValueError:
            problems.append(("before", "expected a run id (integer)"))
    status = query.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        problems.append(("status", f"expected one of {', '.join(RUN_STATUSES)}"))
    trigger = query.get("trigger") or None
    if trigger is not None and trigger not in TRIGGERS:
        problems.append(("trigger", f"expected one of {', '.join(TRIGGERS)}"))
    if problems:
        raise BadRequest("invalid run listing parameters", problems)
    where = RunFilter(status=status, trigger=trigger, before=before, limit=limit)  # type: ignore[arg-type]
    runs = await request.app[RUNS].listing(where)
    items = [run_view(r, output=False) for r in runs]
    page: dict[str, Any] = {"runs": items, "next_before": runs[-1].id if len(runs) == limit else None}
    return json_response(page)


async def kill(request: web.Request) -> web.Response:
    try:
        await request.app[RUNS].kill(run_id_of(request))
    except (RunNotActive, RunNotFound) as exc:
        detail = f"Run not found or not active ({exc})"
        return json_response({"error": "Run not found or not active", "message": detail}, 404)
    return json_response({"ok": True})


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
        return json_response({"error": message, "message": message}, 409)
    return json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/tasks/run", submit)
    app.router.add_get("/api/tasks/runs", list_runs)
    app.router.add_get("/api/tasks/runs/{run_id}", get_run)
    app.router.add_post("/api/tasks/runs/{run_id}/kill", kill)
    app.router.add_post("/api/tasks/runs/{run_id}/input", answer)
