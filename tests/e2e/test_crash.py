"""kill -9 of the server, then a restart on the same data dir: no orphan survives (processes, containers,
job CLIs), every live session's end report goes out exactly once, every running job ends `server_restart`
with its work kept on its branch."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import FIXTURE_REGISTRY, agent_spec, docker_engine, session_body, wait_until
from tests.fakes.anthropic import FakeAnthropic, Hold, bash
from tests.jobs.clis import agent_repo, claude_binary, git
from tests.processes import marked

__all__ = ["agent_repo"]  # a fixture, imported so pytest finds it

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
KEY = "sk-ant-crash-test-0123456789abcdefghij"


class Receiver:
    """Where session-end reports go; counts them per session."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.reports.append(await request.json())
        return web.json_response({"ok": True})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/end", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"http://127.0.0.1:{port}/end"
        finally:
            await runner.cleanup()


class Server:
    """`coral-server` as a separate process (so it can be killed -9), its log in a file."""

    def __init__(self, data: Path, marker: str, extra: list[str], env: dict[str, str]) -> None:
        self.data, self.marker, self.extra, self.env = data, marker, extra, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        log = self.data / f"server-{uuid.uuid4().hex[:6]}.log"
        env = {**os.environ, **self.env, "CORAL_CRASH_MARKER": self.marker}
        cmd = [sys.executable, "-m", "coral_server", "--port", "0", "--data-dir", str(self.data)]
        with open(log, "wb") as out:
            argv = [*cmd, *self.extra]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: ASYNC220
        port = await wait_until(
            lambda: (m := LISTENING.search(log.read_text())) and m.group(1), what="the server listening"
        )
        self.base = f"http://127.0.0.1:{port}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 30)


def working_in(path: Path) -> set[int]:
    """Live processes whose working directory is `path` (a job's CLI gets none of our environment)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == str(path):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def orphans(marker: str, server: Server, worktree: Path) -> set[int]:
    """Processes started under the marked server (agents, job CLIs), the server itself excepted."""
    own = {server.proc.pid} if server.proc is not None and server.proc.poll() is None else set()
    return (marked(marker) | working_in(worktree)) - own - {os.getpid()}


def journal_rows(data: Path) -> int:
    conn = sqlite3.connect(data / "coral.db")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM session_messages").fetchone()[0])
    finally:
        conn.close()


async def test_kill_9_then_restart_kills_every_orphan_and_reports_every_session_once(
    tmp_path: Path, agent_repo: Path
) -> None:
    engine = docker_engine()
    claude = claude_binary()
    marker = f"crash-{uuid.uuid4().hex}"
    receiver = Receiver()
    async with (
        receiver.running() as hook,
        FakeAnthropic([bash("echo wip > wip.txt", "Start"), Hold()]) as fake,
    ):
        extra = [
            "--python-agents", "exec",  # agents started directly: they outlive a killed server
            "--docker-network", "host",
            "--registry", str(FIXTURE_REGISTRY),
            "--registry", str(Path(__file__).resolve().parents[2] / "registry"),
            "--claude-bin", str(claude),
            "--anthropic-base-url", fake.base_url,
        ]  # fmt: skip
        server = Server(tmp_path / "data", marker, extra, {"CORAL_SERVER_ANTHROPIC_API_KEY": KEY})
        worktree = Path(f"{agent_repo}_task_run_1")
        try:
            await server.start()
            async with aiohttp.ClientSession() as http:

                async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                    async with http.request(method, server.base + path, json=body) as resp:
                        return resp.status, await resp.json(content_type=None)

                end = {"webhooks": {"sessionEnd": {"url": hook}}, "ttl": 600_000}
                local = session_body(
                    [agent_spec("a"), agent_spec("b"), agent_spec("human", runtime="external")],
                    namespace="crash",
                    **end,
                )
                docker = session_body([agent_spec("d", runtime="docker")], namespace="crash", **end)
                sessions = []
                for body in (local, docker):
                    status, out = await call("POST", "/api/v1/local/session", body)
                    assert status == 200, out
                    sessions.append(out["sessionId"])

                async def connected(sid: str, names: set[str]) -> bool:
                    _, state = await call("GET", f"/api/v1/local/session/crash/{sid}")
                    return {a["name"] for a in state["agents"] if a["isConnected"]} >= names

                await wait_until(lambda: connected(sessions[0], {"a", "b"}), what="local agents")
                await wait_until(lambda: connected(sessions[1], {"d"}), what="docker agent")
                puppet = f"/api/v1/puppet/crash/{sessions[0]}/human"
                opened = {"threadName": "t", "participantNames": ["a"]}
                status, thread = await call("POST", f"{puppet}/thread", opened)
                assert status == 200, thread
                said = {"threadId": thread["thread"]["id"], "content": "before the crash", "mentions": ["a"]}
                status, out = await call("POST", f"{puppet}/thread/message", said)
                assert status == 200, out
                flags = "--dangerously-skip-permissions"
                job = {"prompt": "work", "repo_path": str(agent_repo), "flags": flags}
                status, out = await call("POST", "/api/tasks/run", job)
                assert status == 200, out
                run_id = out["run_id"]
                await fake.wait_for_hold()
                await wait_until(lambda: journal_rows(server.data) >= 2, what="the journal written")

            containers = engine.containers.list(filters={"label": f"coral.session={sessions[1]}"})
            assert len(containers) == 1
            server.kill9()
            # The crash left them all running: two echo agents, the job's CLI, the container.
            survivors = orphans(marker, server, worktree)
            assert len(survivors) >= 3, survivors
            assert working_in(worktree), "the job's CLI"
            assert engine.containers.get(containers[0].id).status == "running"

            await server.start()
            await wait_until(lambda: not orphans(marker, server, worktree), what="every orphan killed")
            label = {"label": f"coral.session={sessions[1]}"}
            await wait_until(
                lambda: not engine.containers.list(all=True, filters=label),
                what="the orphan container removed",
            )
            await wait_until(lambda: len(receiver.reports) >= 2, what="both end reports")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.base}/api/tasks/runs/{run_id}") as resp:
                    run = await resp.json()
                async with http.get(f"{server.base}/api/v1/webhooks/deliveries") as resp:
                    deliveries = await resp.json()
            await server.stop()  # a clean stop now sends nothing more for those sessions
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.kill9()
            for pid in orphans(marker, server, worktree):
                os.kill(pid, signal.SIGKILL)
        engine.close()

    by_session = {r["sessionId"]: r for r in receiver.reports}
    assert sorted(r["sessionId"] for r in receiver.reports) == sorted(sessions)  # once each
    for report in by_session.values():
        assert (report["reason"], report["namespace"]) == ("server_restart", "crash")
    local_report = by_session[sessions[0]]
    assert {a["name"] for a in local_report["agents"]} == {"a", "b", "human"}
    (kept,) = local_report["threads"]
    # What was said up to the crash (the echo agent's answer too, when it came in time).
    assert [m["text"] for m in kept["messages"]][:1] == ["before the crash"]
    assert sorted(d["status"] for d in deliveries) == ["delivered", "delivered"]
    # The job ended with the server; its work is on its branch and its worktree gone.
    assert (run["status"], run["exit_reason"]) == ("failed", "server_restart"), run
    assert git(agent_repo, "show", f"coral/run-{run_id}:wip.txt") == "wip\n"
    assert not Path(run["worktree_path"]).exists()
    assert git(agent_repo, "worktree", "prune", "--dry-run") == ""


async def test_a_job_whose_server_died_ends_server_restart_with_its_cli_killed_and_work_kept(
    tmp_path: Path, agent_repo: Path
) -> None:
    """No Docker needed: only a job. Its CLI (on a pipe, the old server's) cannot be taken over by the
    next server: it is killed, the run's uncommitted work committed to its branch, the worktree removed."""
    claude = claude_binary()
    marker = f"crash-{uuid.uuid4().hex}"
    async with FakeAnthropic([bash("echo wip > wip.txt", "Start"), Hold()]) as fake:
        extra = ["--claude-bin", str(claude), "--anthropic-base-url", fake.base_url]
        server = Server(tmp_path / "data", marker, extra, {"CORAL_SERVER_ANTHROPIC_API_KEY": KEY})
        worktree = Path(f"{agent_repo}_task_run_1")
        try:
            await server.start()
            async with aiohttp.ClientSession() as http:
                job = {
                    "prompt": "work",
                    "repo_path": str(agent_repo),
                    "flags": "--dangerously-skip-permissions",
                }
                async with http.post(server.base + "/api/tasks/run", json=job) as resp:
                    assert resp.status == 200, await resp.text()
                    run_id = (await resp.json())["run_id"]
                await fake.wait_for_hold()
            assert (worktree / "wip.txt").exists()
            server.kill9()
            assert working_in(worktree), "the job's CLI outlived its server"
            await server.start()
            await wait_until(lambda: not orphans(marker, server, worktree), what="the orphaned CLI killed")
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{server.base}/api/tasks/runs/{run_id}") as resp,
            ):
                run = await resp.json()
            await server.stop()
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.kill9()
            for pid in orphans(marker, server, worktree):
                os.kill(pid, signal.SIGKILL)
    assert (run["status"], run["exit_reason"]) == ("failed", "server_restart"), run
    # The result has the same fields as after any other ending.
    result = run["result"]
    assert (result["branch"], result["auto_committed"], result["commit_count"]) == (
        f"coral/run-{run_id}",
        True,
        1,
    ), result
    assert [f["path"] for f in result["files_changed"]] == ["wip.txt"]
    assert result["worktree"]["worktree_removed"] is True
    assert git(agent_repo, "show", f"coral/run-{run_id}:wip.txt") == "wip\n"
    assert not worktree.exists()
    assert git(agent_repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(agent_repo, "worktree", "prune", "--dry-run") == ""


async def test_a_job_whose_server_died_is_ended_by_the_other_server_on_its_data_dir(
    tmp_path: Path, agent_repo: Path
) -> None:
    """Two servers on one data dir: when the one executing a job dies, the other (still running, not
    restarted) ends the job as a restart would: CLI killed, work committed, the cap's slot free again.
    Before, the run stayed `running` (holding the slot) until the dead server started again."""
    claude = claude_binary()
    marker = f"crash-{uuid.uuid4().hex}"
    async with FakeAnthropic([bash("echo wip > wip.txt", "Start"), Hold()]) as fake:
        extra = [
            "--claude-bin",
            str(claude),
            "--anthropic-base-url",
            fake.base_url,
            "--max-concurrent-jobs",
            "1",
        ]
        env = {"CORAL_SERVER_ANTHROPIC_API_KEY": KEY}
        first = Server(tmp_path / "data", marker, extra, env)
        second = Server(tmp_path / "data", marker, extra, env)
        worktree = Path(f"{agent_repo}_task_run_1")
        job = {"prompt": "work", "repo_path": str(agent_repo), "flags": "--dangerously-skip-permissions"}
        try:
            await first.start()
            async with aiohttp.ClientSession() as http:
                async with http.post(first.base + "/api/tasks/run", json=job) as resp:
                    assert resp.status == 200, await resp.text()
                    run_id = (await resp.json())["run_id"]
                await fake.wait_for_hold()
                await second.start()  # after the claim: the run is the first server's
                async with http.post(second.base + "/api/tasks/run", json=job) as resp:
                    assert resp.status == 429  # the cap's one slot is the first server's run
                first.kill9()

                async def ended() -> dict[str, Any] | None:
                    async with http.get(f"{second.base}/api/tasks/runs/{run_id}") as resp:
                        run = await resp.json()
                    return run if run["status"] not in ("pending", "running", "waiting_input") else None

                run = await wait_until(ended, what="the dead server's run ended by the other")
                await wait_until(
                    lambda: not orphans(marker, second, worktree), what="the orphaned CLI killed"
                )
                async with http.post(second.base + "/api/tasks/run", json=job) as resp:
                    assert resp.status == 200, await resp.text()  # the slot is free again
                    again = (await resp.json())["run_id"]
                async with http.post(f"{second.base}/api/tasks/runs/{again}/kill") as resp:
                    assert resp.status in (200, 404)
            await second.stop()
        finally:
            for server in (first, second):
                if server.proc is not None and server.proc.poll() is None:
                    server.kill9()
            for pid in orphans(marker, second, worktree):
                os.kill(pid, signal.SIGKILL)
    assert (run["status"], run["exit_reason"]) == ("failed", "server_restart"), run
    assert run["result"]["auto_committed"] is True, run
    assert git(agent_repo, "show", f"coral/run-{run_id}:wip.txt") == "wip\n"
