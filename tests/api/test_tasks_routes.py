"""The tasks routes over HTTP: a task's runs paged and filtered (also in /api/tasks/runs?task_id=),
PUT re-planning what GET shows, bad listing parameters named, and bearer auth on /tasks and /events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Coral, start_coral, wait_until
from tests.tasks.conftest import body as task_body

FINAL = ("completed", "failed", "killed")
# Nothing listens on port 9: each run's webhook step fails (retryable), fast.
STEP = {"id": "s", "uses": "webhook", "with": {"url": "http://127.0.0.1:9/x"}}


def body(**fields: Any) -> dict[str, Any]:
    """A task `t` that runs `STEP` once (no retries), with `fields` replacing its own."""
    return task_body(**{"title": "t", "max_retries": 0, "payload": {"pipeline": [STEP]}, **fields})


async def ended(coral: Coral, run_id: int) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        _, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
        return run if run["status"] in FINAL else None

    run: dict[str, Any] = await wait_until(final, 20, interval=0.05, what=f"run {run_id}")  # type: ignore[arg-type]
    return run


async def test_a_tasks_runs_are_paged_filtered_and_listed_with_every_run(coral: Coral) -> None:
    status, task = await coral.request("POST", "/tasks", body())
    assert status == 201, task
    status, other = await coral.request("POST", "/tasks", body(title="other"))
    ids = []
    for _ in range(3):
        status, started = await coral.request("POST", f"/tasks/{task['id']}/run_now")
        assert status == 202, started
        ids.append(started["run"]["run_id"])
        await ended(coral, ids[-1])
    _, theirs = await coral.request("POST", f"/tasks/{other['id']}/run_now")
    await ended(coral, theirs["run"]["run_id"])

    status, page = await coral.request("GET", f"/tasks/{task['id']}/runs?limit=2")
    assert status == 200, page
    assert [r["run_id"] for r in page["items"]] == [ids[2], ids[1]]
    assert (page["total"], page["next_before"]) == (3, ids[1])
    _, rest = await coral.request("GET", f"/tasks/{task['id']}/runs?limit=2&before={page['next_before']}")
    assert [r["run_id"] for r in rest["items"]] == [ids[0]] and rest["next_before"] is None
    run = rest["items"][0]
    assert (run["status"], run["trigger_type"], run["task_id"], run["attempt"]) == (
        "failed",
        "manual",
        task["id"],
        1,
    )
    assert run["error_msg"].startswith("step 's' (webhook): webhook failed: ClientConnectorError")
    _, failed = await coral.request("GET", f"/tasks/{task['id']}/runs?status=failed")
    _, done = await coral.request("GET", f"/tasks/{task['id']}/runs?status=completed")
    assert (failed["total"], len(failed["items"]), done["total"], done["items"]) == (3, 3, 0, [])
    _, listed = await coral.request("GET", f"/api/tasks/runs?task_id={task['id']}&trigger=manual")
    assert [r["run_id"] for r in listed["runs"]] == list(reversed(ids))
    _, detail = await coral.request("GET", f"/tasks/{task['id']}")
    assert (detail["runs_total"], detail["run_counts"], detail["last_run"]["run_id"]) == (
        3,
        {"failed": 3},
        ids[2],
    )
    assert (detail["fire_count"], detail["last_run_id"]) == (3, ids[2])

    for query, field in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("before=x", "before"),
        ("before=6956170140609761196900352", "before"),  # beyond a SQLite integer (a 500 once)
        ("status=odd", "status"),
    ]:
        status, out = await coral.request("GET", f"/tasks/{task['id']}/runs?{query}")
        assert status == 400 and out["errors"][0]["field"] == field, (query, out)


async def test_put_re_plans_what_get_shows_and_keeps_what_it_does_not_name(coral: Coral) -> None:
    _, task = await coral.request("POST", "/tasks", body(timezone="UTC", priority=7, concurrency_key="k"))
    assert all(t.endswith("T09:00:00.000Z") for t in task["next_fire_times"])
    status, changed = await coral.request(
        "PUT", f"/tasks/{task['id']}", {"schedule_expr": "0 9 * * *", "timezone": "Asia/Kolkata"}
    )
    assert status == 200, changed
    assert all(t.endswith("T03:30:00.000Z") for t in changed["next_fire_times"])  # 09:00 in Kolkata
    assert (changed["priority"], changed["concurrency_key"], changed["title"]) == (7, "k", "t")
    assert changed["next_fire_at"] == changed["next_fire_times"][0]
    status, out = await coral.request("PUT", f"/tasks/{task['id']}", {"schedule_expr": "0 25 * * *"})
    assert status == 400 and out["errors"][0]["field"] == "schedule_expr", out
    status, out = await coral.request("PUT", f"/tasks/{task['id']}", {"payload": {"pipeline": []}})
    assert status == 400 and out["errors"][0]["field"] == "payload.pipeline", out
    _, still = await coral.request("GET", f"/tasks/{task['id']}")
    assert still["timezone"] == "Asia/Kolkata" and still["payload"]["pipeline"] == [STEP]


async def test_bad_listing_parameters_are_named(coral: Coral) -> None:
    for query, field in [
        ("status=sleeping", "status"),
        ("schedule_kind=weekly", "schedule_kind"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=99999999999999999999", "offset"),
    ]:
        status, out = await coral.request("GET", f"/tasks?{query}")
        assert status == 400, (query, out)
        assert out["errors"][0]["field"] == field, (query, out)


async def test_tasks_and_events_need_the_bearer_key(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=("k",)):
        coral.headers = {}
        for method, path in [
            ("GET", "/tasks"),
            ("POST", "/tasks"),
            ("POST", "/tasks/preview"),
            ("GET", "/tasks/x"),
            ("POST", "/tasks/x/cancel"),
            ("POST", "/events"),
        ]:
            status, out = await coral.request(method, path, {})
            assert status == 401, (method, path, out)
        coral.headers = {"Authorization": "Bearer k"}
        status, out = await coral.request("GET", "/tasks")
        assert (status, out["total"], out["items"]) == (200, 0, [])
