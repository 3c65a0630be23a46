"""Scheduled tasks through a running server: a pipeline of a real claude job then a signed webhook,
event fan-out, run_now, a cron task with seconds firing for real, and every 400/404/409 over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coral_server.webhooks.verify import verify_webhook
from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until
from tests.fakes.anthropic import FakeAnthropic, bash
from tests.jobs.clis import agent_repo, claude_binary, git

__all__ = ["agent_repo"]  # a fixture, imported so pytest finds it

KEY = "sk-ant-test-0123456789abcdefghijklmnop"
SECRET = "whsec-tasks-test-secret-0123456789"
FINAL = ("completed", "failed", "killed")
AGENT = str(uuid.uuid4())
COMMIT = bash("echo hello > hello.txt && git add hello.txt && git commit -qm 'Add hello.txt'", "Commit")


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps what it got."""

    bodies: list[Any] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append((dict(request.headers), body))
        self.bodies.append(json.loads(body))
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hooks.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield hooks
    finally:
        await runner.cleanup()


@pytest.fixture
async def coral(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, webhook_secrets=(SECRET,)):
        yield server


def task(kind: str, expr: str | None, pipeline: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": f"{kind} task",
        "description": "a test task",
        "schedule_kind": kind,
        "created_by": AGENT,
        "payload": {"params": extra.pop("params", {}), "pipeline": pipeline},
        **extra,
    }
    if expr is not None:
        body["schedule_expr"] = expr
    return body


def webhook(step_id: str, url: str, body: Any) -> dict[str, Any]:
    return {"id": step_id, "uses": "webhook", "with": {"url": url, "body": body}}


async def create(coral: Coral, body: dict[str, Any]) -> dict[str, Any]:
    status, out = await coral.request("POST", "/tasks", body)
    assert status == 201, out
    return out  # type: ignore[no-any-return]


async def run_ended(coral: Coral, run_id: int, timeout: float = 30) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        status, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
        assert status == 200, run
        return run if run["status"] in FINAL else None

    run: dict[str, Any] = await wait_until(ended, timeout, interval=0.1, what=f"run {run_id} to end")  # type: ignore[arg-type]
    return run


async def test_a_job_step_then_a_webhook_step_that_reads_its_output(
    tmp_path: Path, agent_repo: Path, receiver: Receiver
) -> None:
    pipeline = [
        {
            "id": "code",
            "uses": "job",
            "with": {
                "prompt": "add hello.txt and commit it",
                "repo_path": "${params.repo}",
                "flags": "--dangerously-skip-permissions",
            },
            "timeout_seconds": 120,
        },
        webhook(
            "tell",
            receiver.url,
            {
                "branch": "${steps.code.branch}",
                "commits": "${steps.code.commit_count}",
                "summary": "${steps.code.agent.text}",
                "line": "run ${run.id} (${run.trigger}) made ${steps.code.commit_count} commit",
            },
        ),
    ]
    body = task("once", "2099-01-01T00:00:00Z", pipeline, params={"repo": str(agent_repo)})
    async with FakeAnthropic([COMMIT, "Done: committed hello.txt"]) as fake:
        async for coral in start_coral(
            tmp_path,
            claude_bin=str(claude_binary()),
            anthropic_base_url=fake.base_url,
            anthropic_api_key=KEY,
            webhook_secrets=(SECRET,),
        ):
            made = await create(coral, body)
            assert made["next_fire_times"] == ["2099-01-01T00:00:00.000Z"]
            status, started = await coral.request("POST", f"/tasks/{made['id']}/run_now")
            assert status == 202, started
            run_id = started["run"]["run_id"]
            assert (started["task_id"], started["run"]["trigger_type"]) == (made["id"], "manual")
            run = await run_ended(coral, run_id, timeout=120)
            status, listed = await coral.request("GET", f"/tasks/{made['id']}/runs")
            assert status == 200, listed
            status, everywhere = await coral.request("GET", f"/api/tasks/runs?task_id={made['id']}")
            status, detail = await coral.request("GET", f"/tasks/{made['id']}")
    assert run["status"] == "completed", run
    assert (run["kind"], run["task_id"], run["attempt"]) == ("pipeline", made["id"], 1)
    code = run["result"]["steps"]["code"]
    assert (code["status"], code["commit_count"], code["branch"]) == ("completed", 1, f"coral/run-{run_id}")
    assert git(agent_repo, "show", f"coral/run-{run_id}:hello.txt") == "hello\n"
    assert run["result"]["steps"]["tell"]["status"] == "delivered"
    assert [b for b in receiver.bodies] == [
        {
            "branch": f"coral/run-{run_id}",
            "commits": 1,
            "summary": "Done: committed hello.txt",
            "line": f"run {run_id} (manual) made 1 commit",
        }
    ]
    headers, raw = receiver.raw[0]
    verify_webhook(headers, raw, [SECRET])  # raises unless signed with the server's secret
    assert [r["run_id"] for r in listed["items"]] == [run_id] and listed["total"] == 1
    assert [r["run_id"] for r in everywhere["runs"]] == [run_id]
    assert detail["last_run"]["run_id"] == run_id and detail["run_counts"] == {"completed": 1}


async def test_a_session_step_waits_for_the_session_and_passes_on_its_end_report(
    coral: Coral, receiver: Receiver, tmp_path: Path
) -> None:
    def sleeper(name: str, exit_after_s: float) -> dict[str, Any]:
        options = {"PID_FILE": {"type": "string", "value": str(tmp_path / f"{name}.pid")}}
        return agent_spec(name, "sleeper", options={**options, "EXIT_AFTER_S": exit_after_s})

    pipeline = [
        {"id": "talk", "uses": "session", "with": session_body([sleeper("quick", 0.05)], namespace="steps")},
        webhook(
            "tell", receiver.url, {"why": "${steps.talk.reason}", "code": "${steps.talk.agents.0.exitCode}"}
        ),
        {
            "id": "stuck",
            "uses": "session",
            "with": session_body([sleeper("forever", -1)], namespace="steps"),
            "timeout_seconds": 1,
        },
    ]
    made = await create(coral, task("once", "2099-01-01T00:00:00Z", pipeline))
    _, started = await coral.request("POST", f"/tasks/{made['id']}/run_now")
    run = await run_ended(coral, started["run"]["run_id"])
    assert receiver.bodies == [{"why": "all_agents_exited", "code": 7}]
    assert (run["status"], run["exit_reason"]) == ("failed", "timeout"), run
    assert run["error_msg"] == "step 'stuck' (session): the session did not end within 1 s"
    steps = run["result"]["steps"]
    assert steps["talk"]["reason"] == "all_agents_exited"
    assert steps["stuck"]["reason"] == "ttl" and steps["stuck"]["agents"][0]["name"] == "forever"
    assert [t["status"] for t in run["result"]["trace"]] == ["completed", "completed", "failed"]
    status, sessions = await coral.request("GET", "/api/v1/session/steps")
    assert status == 404 or all(s["closing"] for s in sessions), sessions  # none left running


async def retried(coral: Coral, task_id: str) -> dict[str, Any]:
    """The task's second attempt, once it has ended."""

    async def ended() -> dict[str, Any] | None:
        _, runs = await coral.request("GET", f"/tasks/{task_id}/runs")
        done = [r for r in runs["items"] if r["attempt"] == 2 and r["status"] in FINAL]
        return done[0] if done else None

    retry: dict[str, Any] = await wait_until(ended, 20, interval=0.1, what="the retry")  # type: ignore[arg-type]
    return retry


async def test_a_retryable_failure_is_retried_with_backoff_and_a_4xx_answer_is_not(tmp_path: Path) -> None:
    hits: dict[str, int] = {"gone": 0, "busy": 0}

    async def answer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits[name] += 1
        return web.Response(status=404 if name == "gone" else 503)

    app = web.Application()
    app.router.add_post("/{name}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async for coral in start_coral(tmp_path, task_retry_base_s=0.2, task_retry_cap_s=0.5):
            gone = await create(
                coral, task("event", "never", [webhook("w", f"{base}/gone", {})], max_retries=3)
            )
            busy = await create(
                coral,
                task(
                    "event",
                    "never",
                    [webhook("w", f"{base}/busy", {})],
                    max_retries=1,
                    backoff_strategy="fixed",
                ),
            )
            # The loop decides retries in run order: once busy's retry has run, gone's was decided too.
            _, first = await coral.request("POST", f"/tasks/{gone['id']}/run_now")
            refused = await run_ended(coral, first["run"]["run_id"])
            _, second = await coral.request("POST", f"/tasks/{busy['id']}/run_now")
            failed = await run_ended(coral, second["run"]["run_id"])

            retry = await retried(coral, busy["id"])
            _, gone_runs = await coral.request("GET", f"/tasks/{gone['id']}/runs")
            _, busy_runs = await coral.request("GET", f"/tasks/{busy['id']}/runs")
    finally:
        await runner.cleanup()
    assert (refused["status"], refused["retryable"]) == ("failed", False), refused
    assert refused["error_msg"] == "step 'w' (webhook): webhook failed: HTTP 404"
    assert gone_runs["total"] == 1 and hits["gone"] == 1  # max_retries 3, yet no retry: a 4xx is final
    assert (failed["status"], failed["retryable"]) == ("failed", True), failed
    assert (retry["retry_of"], retry["trigger_type"], retry["status"]) == (
        failed["run_id"],
        "manual",
        "failed",
    )
    assert retry["not_before"] is not None and retry["not_before"] >= failed["finished_at"]
    assert busy_runs["total"] == 2 and hits["busy"] == 2  # max_retries 1: one retry, then no more


async def test_an_event_fires_every_active_task_of_its_topic(coral: Coral, receiver: Receiver) -> None:
    def on(topic: str, name: str) -> dict[str, Any]:
        steps = [webhook("tell", receiver.url, {"task": name, "ref": "${event.ref}", "by": "${run.source}"})]
        return task("event", topic, steps, title=name)

    first = await create(coral, on("repo.push", "first"))
    second = await create(coral, on("repo.push", "second"))
    await create(coral, on("repo.tag", "other"))
    paused = await create(coral, on("repo.push", "paused"))
    status, _ = await coral.request("POST", f"/tasks/{paused['id']}/pause")
    assert status == 200
    event = {"topic": "repo.push", "payload": {"ref": "main"}, "source_agent_id": AGENT}
    status, out = await coral.request("POST", "/events", event)
    assert status == 202, out
    assert out["topic"] == "repo.push"
    assert sorted(out["triggered_tasks"]) == sorted([first["id"], second["id"]])
    assert {r["trigger_type"] for r in out["runs"]} == {"event"}
    runs = [await run_ended(coral, r["run_id"]) for r in out["runs"]]
    assert [r["status"] for r in runs] == ["completed", "completed"], runs
    assert sorted(receiver.bodies, key=lambda b: b["task"]) == [
        {"task": "first", "ref": "main", "by": AGENT},
        {"task": "second", "ref": "main", "by": AGENT},
    ]
    status, none = await coral.request("POST", "/events", {"topic": "nobody.listens"})
    assert (status, none["runs"], none["triggered_tasks"]) == (202, [], [])


async def test_a_cron_task_with_a_seconds_field_fires_for_real(coral: Coral, receiver: Receiver) -> None:
    steps = [webhook("tick", receiver.url, {"at": "${now}", "run": "${run.id}"})]
    made = await create(coral, task("cron", "* * * * * *", steps))  # every second
    assert len(made["next_fire_times"]) == 5
    run = await wait_until(
        lambda: receiver.bodies[0] if receiver.bodies else None, 15, what="the cron task's first webhook"
    )
    status, _ = await coral.request("POST", f"/tasks/{made['id']}/pause")
    assert status == 200
    ended = await run_ended(coral, int(run["run"]))
    assert (ended["status"], ended["trigger_type"], ended["task_id"]) == ("completed", "cron", made["id"])
    status, detail = await coral.request("GET", f"/tasks/{made['id']}")
    assert detail["status"] == "paused" and detail["next_fire_times"] == [] and detail["fire_count"] >= 1


async def test_listing_preview_dedupe_snooze_and_put(coral: Coral, receiver: Receiver) -> None:
    steps = [webhook("a", receiver.url, {})]
    one = await create(coral, task("cron", "0 9 * * *", steps, timezone="Europe/Berlin", dedupe_key="k"))
    status, again = await coral.request(
        "POST", "/tasks", task("cron", "0 9 * * *", steps, timezone="Europe/Berlin", dedupe_key="k")
    )
    assert (status, again["id"], again["deduplicated"]) == (200, one["id"], True)
    await create(coral, task("event", "t", steps))
    status, page = await coral.request("GET", "/tasks?schedule_kind=cron")
    assert (status, page["total"], [t["id"] for t in page["items"]]) == (200, 1, [one["id"]])
    status, page = await coral.request("GET", "/tasks?limit=1")
    assert (page["total"], len(page["items"]), page["has_more"]) == (2, 1, True)
    status, page = await coral.request("GET", f"/tasks?created_by={AGENT}&offset=1")
    assert (page["total"], len(page["items"]), page["has_more"]) == (2, 1, False)
    status, shown = await coral.request(
        "POST",
        "/tasks/preview",
        {"schedule_kind": "cron", "schedule_expr": "0 9 * * *", "timezone": "Asia/Tokyo"},
    )
    assert status == 200 and len(shown["fire_times"]) == 5
    assert all(t.endswith("T00:00:00.000Z") for t in shown["fire_times"])  # 09:00 in Tokyo
    assert all(t.endswith("T09:00:00+09:00") for t in shown["local_fire_times"])
    status, snoozed = await coral.request(
        "POST", f"/tasks/{one['id']}/snooze", {"delay_seconds": 3600, "reason": "r"}
    )
    assert status == 200 and snoozed["snooze_reason"] == "r" and snoozed["snoozed_until"] is not None
    status, changed = await coral.request(
        "PUT", f"/tasks/{one['id']}", {"schedule_expr": "0 10 * * *", "priority": 1}
    )
    assert status == 200, changed
    assert (changed["schedule_expr"], changed["priority"], changed["title"]) == ("0 10 * * *", 1, "cron task")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schedule_expr": "61 * * * *"}, "schedule_expr"),
        ({"schedule_kind": "rrule", "schedule_expr": "FREQ=SOMETIMES"}, "schedule_expr"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"schedule_expr": None}, "schedule_expr"),
        ({"priority": 0}, "priority"),
        ({"priority": 10}, "priority"),
        ({"schedule_kind": "once", "schedule_expr": "2001-01-01T00:00:00Z"}, "schedule_expr"),
        ({"schedule_kind": "weekly"}, "schedule_kind"),
        ({"backoff_strategy": "random"}, "backoff_strategy"),
        ({"payload": {"pipeline": [{"id": "a", "uses": "carrier-pigeon"}]}}, "payload.pipeline[0].uses"),
        (
            {
                "payload": {
                    "pipeline": [{"id": "a", "uses": "webhook", "with": {"url": "http://h/${steps.b.x}"}}]
                }
            },
            "payload.pipeline[0].with.url",
        ),
        ({"title": ""}, "title"),
    ],
)
async def test_bad_tasks_get_a_400_naming_the_field(coral: Coral, change: dict[str, Any], field: str) -> None:
    body = {**task("cron", "0 9 * * *", [webhook("a", "http://127.0.0.1:9/x", {})]), **change}
    if change.get("schedule_expr", "") is None:
        del body["schedule_expr"]
    status, out = await coral.request("POST", "/tasks", body)
    assert status == 400, out
    assert field in [e["field"] for e in out["errors"]], out
    assert out["error"]


async def test_unknown_tasks_are_404_and_canceled_ones_409(coral: Coral) -> None:
    missing = str(uuid.uuid4())
    for method, path, body in [
        ("GET", f"/tasks/{missing}", None),
        ("PUT", f"/tasks/{missing}", {"title": "x"}),
        ("GET", f"/tasks/{missing}/runs", None),
        ("POST", f"/tasks/{missing}/run_now", None),
        ("POST", f"/tasks/{missing}/snooze", {"delay_seconds": 5}),
        ("POST", f"/tasks/{missing}/pause", None),
        ("POST", f"/tasks/{missing}/resume", None),
        ("POST", f"/tasks/{missing}/cancel", None),
        ("GET", "/tasks/not-a-uuid", None),
    ]:
        status, out = await coral.request(method, path, body)
        assert status == 404, (method, path, out)
        assert out["error"]
    made = await create(coral, task("cron", "0 9 * * *", [webhook("a", "http://127.0.0.1:9/x", {})]))
    status, over = await coral.request(
        "POST", f"/tasks/{made['id']}/snooze", {"delay_seconds": 7 * 86400 + 1}
    )
    assert status == 400 and over["errors"][0]["field"] == "delay_seconds", over
    status, canceled = await coral.request("POST", f"/tasks/{made['id']}/cancel")
    assert (status, canceled["status"], canceled["next_fire_times"]) == (200, "canceled", [])
    for method, path, body in [
        ("PUT", f"/tasks/{made['id']}", {"title": "x"}),
        ("POST", f"/tasks/{made['id']}/run_now", None),
        ("POST", f"/tasks/{made['id']}/snooze", {"delay_seconds": 5}),
        ("POST", f"/tasks/{made['id']}/pause", None),
        ("POST", f"/tasks/{made['id']}/resume", None),
        ("POST", f"/tasks/{made['id']}/cancel", None),
    ]:
        status, out = await coral.request(method, path, body)
        assert status == 409, (method, path, out)
        assert "canceled" in out["error"]
    status, still = await coral.request("GET", f"/tasks/{made['id']}")
    assert (status, still["status"]) == (200, "canceled")


async def test_bad_previews_and_events_are_400(coral: Coral) -> None:
    status, out = await coral.request(
        "POST", "/tasks/preview", {"schedule_kind": "cron", "schedule_expr": "* * *"}
    )
    assert status == 400 and out["errors"][0]["field"] == "schedule_expr", out
    status, out = await coral.request(
        "POST", "/tasks/preview", {"schedule_kind": "cron", "schedule_expr": "* * * * *", "count": 0}
    )
    assert status == 400 and out["errors"][0]["field"] == "count", out
    status, out = await coral.request("POST", "/events", {"payload": {}})
    assert status == 400 and out["errors"][0]["field"] == "topic", out
    status, out = await coral.request("POST", "/tasks", [1])
    assert status == 400, out
