"""The real Gemini and Codex CLIs on a terminal, run by the server against loopback fakes of their APIs:
the first permission prompt auto-accepted, the second (over max_auto_accepts) put to a human through
`waiting_input` and answered with `/input`, the work committed on the run's branch, the CLI ended.

Skipped without the CLIs (scripts/install-clis.sh), failed instead under CORAL_TEST_CLIS=1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Coral, start_coral, wait_until
from tests.fakes.gemini import FakeGemini
from tests.fakes.gemini import call as gemini_call
from tests.fakes.openai_responses import FakeResponses
from tests.fakes.openai_responses import call as codex_call
from tests.jobs.clis import cli_binary, git

FINAL = ("completed", "failed", "killed")


def gemini_fake() -> AbstractAsyncContextManager[Any]:
    return FakeGemini(
        [
            gemini_call("run_shell_command", command="echo one > one.txt", description="first"),
            gemini_call(
                "run_shell_command",
                command="echo two > two.txt && git add -A && git commit -qm 'Add files'",
                description="second",
            ),
            "Done: committed both files",
        ]
    )


def codex_fake() -> AbstractAsyncContextManager[Any]:
    # Codex asks only for a command that wants to leave its sandbox (its default `on-request` policy).
    def escalated(cmd: str) -> Any:
        return codex_call(
            "exec_command", cmd=cmd, sandbox_permissions="require_escalated", justification="ok?"
        )

    return FakeResponses(
        [
            escalated("echo one > one.txt"),
            escalated("echo two > two.txt && git add -A && git commit -qm 'Add files'"),
            "Done: committed both files",
        ]
    )


CASES = {  # agent type: (its fake, the settings naming the fake, what its first prompt asks)
    "gemini": (gemini_fake, "gemini", "Shell: echo one > one.txt"),
    "codex": (codex_fake, "openai", "Bash: echo one > one.txt"),
}


async def server(tmp_path: Path, agent_type: str, base_url: str) -> AsyncIterator[Coral]:
    prefix = CASES[agent_type][1]
    settings = {
        f"{agent_type}_bin": str(cli_binary(agent_type)),
        f"{prefix}_base_url": base_url,
        f"{prefix}_api_key": "test-key-0123456789abcdefghij",
    }
    async for coral in start_coral(tmp_path, **settings):
        yield coral


async def run_until(coral: Coral, run_id: int, statuses: tuple[str, ...], timeout: float = 90) -> Any:
    """The run once in one of `statuses`; fails (before the test's own timeout) saying where it is."""
    seen: dict[str, Any] = {}

    async def reached() -> Any:
        status, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
        assert status == 200, run
        seen.update(run)
        return run if run["status"] in statuses else None

    def where() -> str:
        tail = str(seen.get("output", ""))[-1500:]
        return f"run {run_id} {seen.get('status')} (want {statuses}), its output ends: {tail!r}"

    return await wait_until(reached, timeout, interval=0.2, what=where)


@pytest.mark.parametrize("agent_type", sorted(CASES))
async def test_auto_accept_then_waiting_input_on_the_real_cli(
    tmp_path: Path, agent_repo: Path, agent_type: str
) -> None:
    make_fake, _, first_question = CASES[agent_type]
    cli_binary(agent_type)  # skip (or fail under CORAL_TEST_CLIS=1) before starting anything
    async with make_fake() as fake:
        async for coral in server(tmp_path, agent_type, fake.base_url):
            body = {
                "prompt": "add two files and commit them",
                "repo_path": str(agent_repo),
                "agent_type": agent_type,
                "auto_accept": True,
                "max_auto_accepts": 1,
            }
            status, out = await coral.request("POST", "/api/tasks/run", body)
            assert status == 200, out
            run_id = out["run_id"]
            run = await run_until(coral, run_id, ("waiting_input", *FINAL))
            assert run["status"] == "waiting_input", run["output"][-3000:]
            assert [a["question"] for a in run["auto_accepts"]] == [first_question]
            assert "two.txt" in run["waiting_for"], run["waiting_for"]
            status, out = await coral.request("POST", f"/api/tasks/runs/{run_id}/input", {"text": "yes"})
            assert (status, out) == (200, {"ok": True})
            run = await run_until(coral, run_id, FINAL)
    assert (run["status"], run["exit_reason"]) == ("completed", "agent_done"), run
    assert run["result"]["mode"] == "interactive"
    assert run["result"]["commit_count"] == 1 and not run["result"]["auto_committed"]
    assert sorted(f["path"] for f in run["result"]["files_changed"]) == ["one.txt", "two.txt"]
    assert git(agent_repo, "show", f"coral/run-{run_id}:two.txt") == "two\n"
    assert not Path(run["worktree_path"]).exists()
