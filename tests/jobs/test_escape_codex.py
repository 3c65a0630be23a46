"""The real codex CLI starts a detached `codex app-server --managed-daemon` (its own session, re-parented
to init) from the run's HOME: once its run has ended, none of that run's survives.

Skipped without the CLI (scripts/install-clis.sh), failed instead under CORAL_TEST_CLIS=1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from coral_server.supervision import process_start
from tests.conftest import start_coral
from tests.fakes.openai_responses import FakeResponses
from tests.jobs.clis import cli_binary
from tests.jobs.test_escape import alive

FINAL = ("completed", "failed", "killed")


def app_servers(under: Path) -> set[tuple[int, int | None]]:
    """Live `codex app-server` processes started from under `under` (pid, start time)."""
    found: set[tuple[int, int | None]] = set()
    needle = str(under).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"app-server" in argv and any(needle in arg for arg in argv):
            pid = int(entry)
            if alive(pid, start := process_start(pid)):
                found.add((pid, start))
    return found


async def test_no_codex_app_server_daemon_of_a_run_survives_it(tmp_path: Path, agent_repo: Path) -> None:
    binary = cli_binary("codex")
    seen: set[tuple[int, int | None]] = set()

    async def watch() -> None:
        while True:
            seen.update(await asyncio.to_thread(app_servers, tmp_path))
            await asyncio.sleep(0.05)

    async with FakeResponses(["Done: nothing to change"]) as fake:
        async for coral in start_coral(
            tmp_path,
            codex_bin=str(binary),
            openai_base_url=fake.base_url,
            openai_api_key="test-key-0123456789abcdefghij",
        ):
            body = {
                "prompt": "say done",
                "repo_path": str(agent_repo),
                "agent_type": "codex",
                "auto_accept": True,
            }
            watcher = asyncio.ensure_future(watch())
            try:
                status, out = await coral.request("POST", "/api/tasks/run", body)
                assert status == 200, out
                async with asyncio.timeout(180):
                    while True:
                        status, run = await coral.request("GET", f"/api/tasks/runs/{out['run_id']}")
                        if run["status"] in FINAL:
                            break
                        await asyncio.sleep(0.2)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            try:
                assert run["result"]["mode"] == "interactive", run
                assert seen, "this codex started no app-server daemon: the test checks nothing"
                assert not [pid for pid, start in seen if alive(pid, start)]
                assert not app_servers(tmp_path)
            finally:  # a failure leaves none behind either
                for pid, start in seen | app_servers(tmp_path):
                    if alive(pid, start):
                        os.kill(pid, signal.SIGKILL)
