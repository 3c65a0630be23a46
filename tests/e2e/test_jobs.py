"""One-time jobs through a running server: the real claude CLI against a scripted fake API, real git."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from coral_server.webhooks.verify import verify_webhook
from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until
from tests.fakes.anthropic import FakeAnthropic, Hold, bash
from tests.jobs.clis import agent_repo, claude_binary, git

__all__ = ["agent_repo"]  # a fixture, imported so pytest finds it

KEY = "sk-ant-test-0123456789abcdefghijklmnop"
SECRET = "whsec-jobs-test-secret-0123456789"
ACTIVE = ("pending", "running", "waiting_input")


@pytest.fixture
def claude_bin() -> Path:
    return claude_binary()


async def server(
    tmp_path: Path, fake: FakeAnthropic, claude_bin: Path, **overrides: Any
) -> AsyncIterator[Coral]:
    async for coral in start_coral(
        tmp_path,
        claude_bin=str(claude_bin),
        anthropic_base_url=fake.base_url,
        anthropic_api_key=KEY,
        **overrides,
    ):
        yield coral


async def run_until(
    coral: Coral, run_id: int, statuses: tuple[str, ...], timeout: float = 90
) -> dict[str, Any]:
    run: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        nonlocal run
        status, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
        assert status == 200, run
        return run if run["status"] in statuses else None

    return await wait_until(
        reached,
        timeout,
        interval=0.1,
        what=lambda: f"run {run_id} is {run.get('status')}, not {statuses}: {run}",
    )


def job(repo: Path, **extra: Any) -> dict[str, Any]:
    return {"prompt": "add hello.txt and commit it", "repo_path": str(repo), **extra}


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").split()


def worktrees(repo: Path) -> list[str]:
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line for line in lines if line.startswith("worktree ")]


COMMIT = bash("echo hello > hello.txt && git add hello.txt && git commit -qm 'Add hello.txt'", "Commit")


async def test_a_headless_job_commits_on_its_branch_and_cleans_its_worktree(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    script = [COMMIT, bash("echo draft > notes.txt", "Leave a draft"), "Done: committed hello.txt"]
    async with FakeAnthropic(script) as fake:
        async for coral in server(tmp_path, fake, claude_bin):
            body = job(agent_repo, flags="--dangerously-skip-permissions", display_name="Hello")
            status, out = await coral.request("POST", "/api/tasks/run", body)
            assert (status, out["status"]) == (200, "pending"), out
            run_id = out["run_id"]
            run = await run_until(coral, run_id, ("completed", "failed", "killed"))
    assert run["status"] == "completed", run
    assert (run["exit_reason"], run["trigger_type"], run["display_name"]) == ("agent_done", "api", "Hello")
    assert run["worktree_path"] == f"{agent_repo}_task_run_{run_id}"
    assert run["branch"] == f"coral/run-{run_id}"
    result = run["result"]
    assert result["mode"] == "headless"
    assert result["agent"]["text"] == "Done: committed hello.txt"
    assert result["agent"]["costUsd"] > 0
    # Its commit and the draft it left uncommitted are both on its branch; the worktree is gone.
    assert result["auto_committed"] is True and result["commit_count"] == 2
    assert sorted(f["path"] for f in result["files_changed"]) == ["hello.txt", "notes.txt"]
    assert git(agent_repo, "show", f"coral/run-{run_id}:hello.txt") == "hello\n"
    assert git(agent_repo, "show", f"coral/run-{run_id}:notes.txt") == "draft\n"
    assert not Path(run["worktree_path"]).exists()
    assert worktrees(agent_repo) == [f"worktree {agent_repo}"]
    assert not (agent_repo / "hello.txt").exists()  # the repository itself is untouched
    assert run["started_at"] and run["finished_at"] and run["duration_s"] >= 0
    assert '"type":"result"' in run["output"].replace(" ", "")  # the CLI's output is kept


async def test_auto_accept_answers_up_to_its_cap_then_waits_for_input(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    script = [
        bash("echo one > one.txt", "First"),
        bash("echo two > two.txt", "Second"),
        "Done: two files",
    ]
    async with FakeAnthropic(script) as fake:
        async for coral in server(tmp_path, fake, claude_bin):
            body = job(agent_repo, auto_accept=True, max_auto_accepts=1)
            status, out = await coral.request("POST", "/api/tasks/run", body)
            assert status == 200, out
            run_id = out["run_id"]
            run = await run_until(coral, run_id, ("waiting_input", "completed", "failed", "killed"))
            assert run["status"] == "waiting_input", run
            assert [a["question"] for a in run["auto_accepts"]] == ["Bash: echo one > one.txt"]
            assert "echo two > two.txt" in run["waiting_for"]
            status, out = await coral.request("POST", f"/api/tasks/runs/{run_id}/input", {"text": "yes"})
            assert (status, out) == (200, {"ok": True})
            run = await run_until(coral, run_id, ("completed", "failed", "killed"))
            # A second answer to a run that no longer waits is refused.
            status, out = await coral.request("POST", f"/api/tasks/runs/{run_id}/input", {"text": "yes"})
            assert status == 409, out
    assert run["status"] == "completed", run
    assert run["result"]["mode"] == "interactive"
    assert len(run["auto_accepts"]) == 1
    files = sorted(f["path"] for f in run["result"]["files_changed"])
    assert files == ["one.txt", "two.txt"]


async def test_kill_and_timeout_end_the_run_and_keep_its_work(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    script = [bash("echo wip > wip.txt", "Start"), Hold()]
    async with FakeAnthropic(script) as fake:
        async for coral in server(tmp_path, fake, claude_bin):
            flags = "--dangerously-skip-permissions"
            status, out = await coral.request("POST", "/api/tasks/run", job(agent_repo, flags=flags))
            killed_id = out["run_id"]
            await fake.wait_for_hold()
            status, out = await coral.request("POST", f"/api/tasks/runs/{killed_id}/kill")
            assert (status, out) == (200, {"ok": True})
            killed = await run_until(coral, killed_id, ("completed", "failed", "killed"))
            status, out = await coral.request("POST", f"/api/tasks/runs/{killed_id}/kill")
            assert status == 404 and out["error"] == "Run not found or not active", out
            # The same script again, this time left to run out of time.
            body = job(agent_repo, flags="--dangerously-skip-permissions", max_duration_s=10)
            status, out = await coral.request("POST", "/api/tasks/run", body)
            # Its uncommitted file is there before the time runs out (a slow machine starts the CLI late).
            draft = Path(f"{agent_repo}_task_run_{out['run_id']}") / "wip.txt"
            await wait_until(draft.exists, timeout=10, what="the second run's draft")
            late = await run_until(coral, out["run_id"], ("completed", "failed", "killed"))
    assert (killed["status"], killed["exit_reason"]) == ("killed", "user_cancelled")
    assert git(agent_repo, "show", f"coral/run-{killed_id}:wip.txt") == "wip\n"
    assert not Path(killed["worktree_path"]).exists()
    assert (late["status"], late["exit_reason"]) == ("killed", "timeout"), late
    assert late["error_msg"] == "the job ran longer than 10 s"
    assert git(agent_repo, "show", f"coral/run-{late['id']}:wip.txt") == "wip\n"
    assert worktrees(agent_repo) == [f"worktree {agent_repo}"]


async def test_the_cap_refuses_with_429_and_a_queue_never_overshoots(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    async with FakeAnthropic([Hold()]) as fake:
        async for coral in server(tmp_path, fake, claude_bin, max_concurrent_jobs=1):
            flags = "--dangerously-skip-permissions"
            status, first = await coral.request("POST", "/api/tasks/run", job(agent_repo, flags=flags))
            assert status == 200
            async with coral.http.post(
                coral.base_url + "/api/tasks/run", json=job(agent_repo, flags=flags)
            ) as resp:
                body = await resp.json()
                assert resp.status == 429, body
                assert resp.headers["Retry-After"].isdigit()
                assert body["error"] == "Concurrent task limit reached (max: 1). Try again later."
            status, out = await coral.request("POST", f"/api/tasks/runs/{first['run_id']}/kill")
            assert (status, out) == (200, {"ok": True})
            await run_until(coral, first["run_id"], ("killed",))
            status, second = await coral.request("POST", "/api/tasks/run", job(agent_repo, flags=flags))
            assert status == 200, second
            await coral.request("POST", f"/api/tasks/runs/{second['run_id']}/kill")
            status, page = await coral.request("GET", "/api/tasks/runs?limit=1")
            assert status == 200 and [r["id"] for r in page["runs"]] == [second["run_id"]]
            path = f"/api/tasks/runs?limit=1&before={page['next_before']}"
            status, page2 = await coral.request("GET", path)
            assert [r["id"] for r in page2["runs"]] == [first["run_id"]]
            status, killed = await coral.request("GET", "/api/tasks/runs?status=killed")
            assert {r["id"] for r in killed["runs"]} <= {first["run_id"], second["run_id"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repo_path": "/tmp"}, "prompt"),
        ({"prompt": "x"}, "repo_path"),
        ({"prompt": "x", "repo_path": "relative/path"}, "repo_path"),
        ({"prompt": "x", "repo_path": "/no/such/dir"}, "repo_path"),
        ({"prompt": "x", "agent_type": "cobol"}, "agent_type"),
        ({"prompt": "x", "base_branch": "nope"}, "base_branch"),
        ({"prompt": "x", "max_duration_s": 0}, "max_duration_s"),
        ({"prompt": "x", "max_auto_accepts": -1}, "max_auto_accepts"),
        ({"prompt": "x", "flags": "--say 'unbalanced"}, "flags"),
        ({"prompt": "x", "auto_accept": "yes"}, "auto_accept"),
        ({"prompt": "x", "webhook_url": "ftp://x"}, "webhook_url"),
    ],
)
async def test_bad_job_requests_get_a_400_naming_the_field(
    tmp_path: Path, agent_repo: Path, claude_bin: Path, body: dict[str, Any], field: str
) -> None:
    if "repo_path" not in body and field != "repo_path":
        body = {"repo_path": str(agent_repo), **body}
    async with FakeAnthropic([]) as fake:
        async for coral in server(tmp_path, fake, claude_bin):
            status, out = await coral.request("POST", "/api/tasks/run", body)
            assert status == 400, out
            assert out["errors"][0]["field"] == field, out
            assert out["error"]
            if field == "prompt":
                assert out["error"] == "'prompt' is required"
            status, out = await coral.request("GET", "/api/tasks/runs")
            assert out["runs"] == []  # nothing was admitted


async def test_repositories_outside_the_job_roots_are_403_and_unknown_runs_404(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    fence = tmp_path / "fence"
    fence.mkdir()
    async with FakeAnthropic([]) as fake:
        async for coral in server(tmp_path, fake, claude_bin, job_roots=(fence,)):
            status, out = await coral.request("POST", "/api/tasks/run", job(agent_repo))
            assert status == 403, out
            assert "not under a directory that jobs may use" in out["error"]
            for method, path in (
                ("GET", "/api/tasks/runs/999"),
                ("POST", "/api/tasks/runs/999/kill"),
                ("POST", "/api/tasks/runs/999/input"),
                ("GET", "/api/tasks/runs/abc"),
            ):
                status, out = await coral.request(method, path, {"text": "x"} if "input" in path else None)
                assert status == 404, (path, out)
            status, out = await coral.request("GET", "/api/tasks/runs?status=bogus&limit=500")
            assert status == 400 and {e["field"] for e in out["errors"]} == {"status", "limit"}


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.raw: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append(raw)
        self.headers.append(dict(request.headers))
        self.bodies.append(await request.json())
        return web.json_response({"ok": True})


async def test_status_webhooks_arrive_signed_and_in_order_and_output_streams_live(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with FakeAnthropic([COMMIT, "Done"]) as fake:
            async for coral in server(tmp_path, fake, claude_bin, webhook_secrets=(SECRET,)):
                hook = f"http://127.0.0.1:{port}/hook"
                body = job(agent_repo, flags="--dangerously-skip-permissions", webhook_url=hook)
                _, out = await coral.request("POST", "/api/tasks/run", body)
                run_id = out["run_id"]
                seen: list[dict[str, Any]] = []
                async with (
                    aiohttp.ClientSession() as http,
                    http.ws_connect(f"{coral.base_url}/ws/v1/runs/{run_id}/events") as ws,
                ):
                    async for msg in ws:
                        event = msg.json()
                        seen.append(event)
                        final = event.get("status") in ("completed", "failed", "killed")
                        if event["type"] == "run_status" and final:
                            break
                await run_until(coral, run_id, ("completed",))
                await wait_until(lambda: len(receiver.bodies) >= 2, what="the two status webhooks")
    finally:
        await runner.cleanup()
    statuses = [(b["previous_status"], b["status"]) for b in receiver.bodies]
    assert statuses == [("pending", "running"), ("running", "completed")]
    last = receiver.bodies[-1]
    assert (last["run_id"], last["exit_reason"], last["source"]) == (run_id, "agent_done", "coral")
    assert last["duration_s"] is not None and last["result"]["commit_count"] == 1
    for raw, headers in zip(receiver.raw, receiver.headers, strict=True):
        verify_webhook(headers, raw, [SECRET])  # raises unless signed with the server's secret
    types = [e["type"] for e in seen]
    assert types[0] == "snapshot"
    assert "run_output" in types
    assert [e["status"] for e in seen if e["type"] == "run_status"] == ["running", "completed"]
    assert [e["seq"] for e in seen[1:]] == list(range(seen[1]["seq"], seen[1]["seq"] + len(seen) - 1))


def test_git_is_here() -> None:
    assert subprocess.run(["git", "--version"], capture_output=True, check=True).returncode == 0


async def test_a_coral_job_runs_a_session_whose_agents_work_in_the_worktree(
    tmp_path: Path, agent_repo: Path, claude_bin: Path
) -> None:
    options = {
        "PID_FILE": {"type": "string", "value": "pid.txt"},  # relative: written where the agent works
        "EXIT_AFTER_S": 0.2,
        "IGNORE_TERM": False,
    }
    session = session_body([agent_spec("worker", "sleeper", options=options)], namespace="jobs")
    async with FakeAnthropic([]) as fake:
        async for coral in server(tmp_path, fake, claude_bin):
            bad = job(agent_repo, agent_type="coral")
            status, out = await coral.request("POST", "/api/tasks/run", bad)
            assert (status, out["errors"][0]["field"]) == (400, "session"), out
            unknown = session_body([agent_spec("x", "no-such-agent")], namespace="jobs")
            wrong = job(agent_repo, agent_type="coral", session=unknown)
            status, out = await coral.request("POST", "/api/tasks/run", wrong)
            assert status == 400, out
            assert out["errors"][0]["field"].startswith("session.agentGraphRequest.agents[0]"), out
            right = job(agent_repo, agent_type="coral", session=session)
            status, out = await coral.request("POST", "/api/tasks/run", right)
            assert status == 200, out
            run = await run_until(coral, out["run_id"], ("completed", "failed", "killed"))
    assert (run["status"], run["exit_reason"]) == ("completed", "agent_done"), run
    ran = run["result"]["session"]
    assert ran["closeReason"] == "all_agents_exited"
    assert [(a["name"], a["status"], a["exitCode"]) for a in ran["agents"]] == [("worker", "exited", 7)]
    # The agent worked in the worktree: its file is on the run's branch, committed for it.
    assert run["result"]["auto_committed"] is True
    pid_line = git(agent_repo, "show", f"coral/run-{run['id']}:pid.txt")
    assert len(pid_line.split()) == 2
    assert not Path(run["worktree_path"]).exists()
