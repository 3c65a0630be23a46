"""The real codex CLI starts a detached `codex app-server --managed-daemon` (its own session, re-parented
to init) from the run's HOME: once its run has ended, none of that run's survives.

Skipped without the CLI (scripts/install-clis.sh), failed instead under CORAL_TEST_CLIS=1."""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import Any

from coral_server.supervision import process_start
from tests.conftest import Coral, start_coral, wait_until
from tests.fakes.openai_responses import FakeResponses
from tests.jobs.clis import cli_binary
from tests.processes import Started, alive, kill_alive

FINAL = ("completed", "failed", "killed")


def app_servers(under: Path) -> set[Started]:
    """Live `codex app-server` processes started from under `under` (pid, start time)."""
    found: set[Started] = set()
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


async def ended(coral: Coral, run_id: int, under: Path, seen: set[Started]) -> dict[str, Any] | None:
    """Run `run_id` once it has ended; each look also adds the daemons running now to `seen`."""
    seen.update(await asyncio.to_thread(app_servers, under))
    _, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
    return run if run["status"] in FINAL else None


async def test_no_codex_app_server_daemon_of_a_run_survives_it(tmp_path: Path, agent_repo: Path) -> None:
    binary = cli_binary("codex")
    seen: set[Started] = set()

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
            try:
                status, out = await coral.request("POST", "/api/tasks/run", body)
                assert status == 200, out
                look = functools.partial(ended, coral, out["run_id"], tmp_path, seen)
                run: dict[str, Any] = await wait_until(look, 180, interval=0.05, what="the run's end")  # type: ignore[arg-type]
                assert run["result"]["mode"] == "interactive", run
                assert seen, "this codex started no app-server daemon: the test checks nothing"
                assert not [pid for pid, start in seen if alive(pid, start)]
                assert not app_servers(tmp_path)
            finally:  # a failure leaves none behind either
                kill_alive(list(seen | app_servers(tmp_path)))
