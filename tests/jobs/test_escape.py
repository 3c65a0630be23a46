"""No process a job's CLI started survives its run, even one that left its process group (setsid,
double fork), whatever way the run ends, nor the server (kill -9, then the restart's recovery); and
no process another server (or instance) marked is ever touched.

The CLI is a stand-in executable at the process boundary (where the real one would call its model
API): it double-forks a `setsid` daemon that sleeps forever, as the codex CLI does with its
`codex app-server --managed-daemon`, writes the daemon's pid to a file, then ends or works on."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coral_server.supervision import Mark, process_start
from coral_server.supervision.marks import marks_of
from tests.conftest import WAIT_S, Coral, start_coral, wait_until
from tests.e2e.test_crash import Server
from tests.jobs.conftest import init_git_repo
from tests.processes import Started, alive, carrying, kill_alive

FLAGS = "--dangerously-skip-permissions"  # headless: no permission prompt to answer
INSTANCE = f"escape-test-{uuid.uuid4().hex[:8]}"  # its reap touches no other test run
# argv: claude -p --output-format json FLAGS -- "<mode>:<tag>"; the daemon's pid goes to pids/<tag>.
# Mode "core": the daemon keeps only HOME and PATH of its environment, as a sandbox may.
FAKE_CLI = """#!{python}
import json, os, sys, time
from pathlib import Path

SLEEPER = (
    "import os, sys, time\\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\\n"
    "while True: time.sleep(3600)\\n"
)
mode, tag = sys.argv[-1].split(":")
pids = Path(__file__).resolve().parent / "pids"
(pids / (tag + ".cli")).write_text(str(os.getpid()))
if os.fork() == 0:
    os.setsid()  # out of the CLI's process group and session
    if os.fork() == 0:  # the daemon: re-parented to init, no tie to the CLI left
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        env = dict(os.environ)
        if mode == "core":
            env = {{"HOME": env["HOME"], "PATH": env.get("PATH", "/usr/bin:/bin")}}
        os.execve(sys.executable, [sys.executable, "-c", SLEEPER, str(pids / tag)], env)
    os._exit(0)
os.wait()
while not (pids / tag).exists():
    time.sleep(0.01)
if mode == "done":
    print(json.dumps({{"type": "result", "subtype": "success", "result": "done", "is_error": False}}))
    sys.exit(0)
while True:
    time.sleep(3600)
"""


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    binary = tmp_path / "bin" / "claude"
    (binary.parent / "pids").mkdir(parents=True)
    binary.write_text(FAKE_CLI.format(python=sys.executable))
    binary.chmod(0o755)
    return binary


@pytest.fixture
async def coral(tmp_path: Path, fake_cli: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, claude_bin=str(fake_cli), instance_id=INSTANCE):
        yield server


@pytest.fixture(autouse=True)
def no_leak() -> Iterator[None]:
    """A failing test does not leave its daemon sleeping forever."""
    yield
    kill_alive(started)


started: list[Started] = []


async def daemon_of(fake_cli: Path, tag: str) -> Started:
    """The pid and start time of the daemon the run tagged `tag` started (once it has started)."""
    pid_file = fake_cli.parent / "pids" / tag
    await wait_until(pid_file.exists, WAIT_S, what=f"the daemon of {tag}")
    pid = int(pid_file.read_text())
    started.append((pid, process_start(pid)))
    return started[-1]


async def status_of(coral: Coral, run_id: int) -> dict[str, Any]:
    status, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
    assert status == 200, run
    return dict(run)


async def ended(coral: Coral, run_id: int) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        run = await status_of(coral, run_id)
        return run if run["status"] in ("completed", "failed", "killed") else None

    return await wait_until(final, 60, interval=0.05, what=f"run {run_id} ended")


async def submit(coral: Coral, repo: Path, prompt: str, **extra: Any) -> int:
    body = {"prompt": prompt, "repo_path": str(repo), "flags": FLAGS, **extra}
    status, out = await coral.request("POST", "/api/tasks/run", body)
    assert status == 200, out
    return int(out["run_id"])


async def test_a_daemon_the_cli_left_is_gone_once_its_run_completed(
    coral: Coral, fake_cli: Path, tmp_path: Path
) -> None:
    repo = init_git_repo(tmp_path / "repo").path
    me = os.getpid()  # the in-process server's pid: decoys name it too, with another nonce
    others = (
        Mark("another-instance", me, process_start(me) or 0, "n0", "run", "1", "cli"),
        Mark(INSTANCE, me, process_start(me) or 0, "another-server", "run", "1", "cli"),
    )
    with carrying(*others) as procs:
        run_id = await submit(coral, repo, "done:done")
        assert run_id == 1  # the decoys name the same owner and unit
        run = await ended(coral, run_id)
        assert (run["status"], run["exit_reason"]) == ("completed", "agent_done"), run
        pid, start = await daemon_of(fake_cli, "done")
        assert not alive(pid, start)  # gone before the run was reported ended
        assert all(proc.poll() is None for proc in procs)  # another server's marks: untouched


@pytest.mark.parametrize(("ending", "mode"), [("kill", "wait"), ("timeout", "wait"), ("kill", "core")])
async def test_a_daemon_the_cli_left_is_gone_once_its_run_was_killed_or_timed_out(
    coral: Coral, fake_cli: Path, tmp_path: Path, ending: str, mode: str
) -> None:
    """Mode "core": the daemon dropped the mark with every variable but HOME and PATH."""
    repo = init_git_repo(tmp_path / "repo").path
    limit = {"max_duration_s": 3} if ending == "timeout" else {}
    run_id = await submit(coral, repo, f"{mode}:{ending}", **limit)
    pid, start = await daemon_of(fake_cli, ending)
    assert alive(pid, start)
    assert bool(marks_of(pid)) == (mode != "core")
    assert (await status_of(coral, run_id))["status"] == "running"
    cli_pid = int((fake_cli.parent / "pids" / f"{ending}.cli").read_text())
    assert cli_pid not in (os.getsid(pid), os.getpgid(pid))  # it left the CLI's session and group
    if ending == "kill":
        status, out = await coral.request("POST", f"/api/tasks/runs/{run_id}/kill")
        assert status == 200, out
    run = await ended(coral, run_id)
    expected = ("killed", "user_cancelled") if ending == "kill" else ("killed", "timeout")
    assert (run["status"], run["exit_reason"]) == expected, run
    assert not alive(pid, start)


@pytest.mark.parametrize("mode", ["wait", "core"])
async def test_after_a_kill_9_the_restart_kills_the_daemon_and_spares_other_servers_marks(
    tmp_path: Path, fake_cli: Path, mode: str
) -> None:
    """Mode "core": found by its HOME, in the run's work directory, when the run is recovered."""
    repo = init_git_repo(tmp_path / "repo").path
    extra = ["--claude-bin", str(fake_cli), "--instance-id", INSTANCE]
    server = Server(tmp_path / "data", f"escape-{uuid.uuid4().hex}", extra, {})
    body = {"prompt": f"{mode}:crash", "repo_path": str(repo), "flags": FLAGS}
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:

            async def call(method: str, path: str, json: Any = None) -> tuple[int, Any]:
                async with http.request(method, server.base + path, json=json) as resp:
                    return resp.status, await resp.json(content_type=None)

            code, out = await call("POST", "/api/tasks/run", body)
            assert code == 200, out
            run_id = out["run_id"]
            pid, start = await daemon_of(fake_cli, "crash")
            assert server.proc is not None
            dead = server.proc.pid
            dead_start = process_start(dead) or 0
            server.kill9()
            assert alive(pid, start)  # the server's death alone leaves it running
            me = os.getpid()
            others = (
                # Another instance's, its server dead too: that instance's restart reaps it, not ours.
                Mark("another-instance", dead, dead_start, "n0", "run", str(run_id), "cli"),
                # This instance's, but its server lives (a second server on the same data dir).
                Mark(INSTANCE, me, process_start(me) or 0, "n1", "run", str(run_id), "cli"),
            )
            with carrying(*others) as procs:
                await server.start()
                code, run = await call("GET", f"/api/tasks/runs/{run_id}")
                assert code == 200 and run["exit_reason"] == "server_restart", run
                assert not alive(pid, start)
                assert all(proc.poll() is None for proc in procs)
    finally:
        await server.stop()
