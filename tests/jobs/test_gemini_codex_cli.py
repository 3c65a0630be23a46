"""The real Gemini and Codex CLIs, headless, against loopback fakes of their APIs: a file written, committed.

Skipped without the CLIs (scripts/install-clis.sh), failed instead under CORAL_TEST_CLIS=1.
"""

from __future__ import annotations

import os
from pathlib import Path

from coral_server.jobs.agents import CodexCli, Endpoint, GeminiCli, Secret
from tests.fakes.gemini import FakeGemini
from tests.fakes.gemini import call as gemini_call
from tests.fakes.openai_responses import FakeResponses
from tests.fakes.openai_responses import call as codex_call
from tests.jobs.clis import cli_binary, git, run_headless


async def test_gemini_headless_writes_a_file_and_commits(agent_repo: Path, tmp_path: Path) -> None:
    gemini = GeminiCli()
    binary = cli_binary("gemini")
    script = [
        gemini_call("write_file", file_path="hello.txt", content="hello\n"),
        gemini_call(
            "run_shell_command", command="git add -A && git commit -qm 'Add hello.txt'", description="c"
        ),
        "Done: wrote and committed hello.txt",
    ]
    async with FakeGemini(script) as fake:
        endpoint = Endpoint(Secret("gemini-test-key"), fake.base_url)
        home = tmp_path / "home"
        gemini.prepare_home(home, agent_repo, endpoint)
        run = gemini.launch(
            binary=str(binary),
            prompt="add hello.txt",
            flags="--yolo",
            endpoint=endpoint,
            home=home,
            mode="headless",
            base_env=os.environ,
        )
        done = await run_headless(run, agent_repo, timeout=120)
    assert done.returncode == 0, done.stderr
    result = gemini.parse_headless(done.stdout)
    assert (result.text, result.is_error, result.turns) == ("Done: wrote and committed hello.txt", False, 3)
    assert git(agent_repo, "log", "-1", "--format=%s").strip() == "Add hello.txt"
    assert (agent_repo / "hello.txt").read_text() == "hello\n"
    assert [r.turn for r in fake.turn_requests] == [0, 1, 2]
    assert fake.turn_requests[0].headers["x-goog-api-key"] == "gemini-test-key"
    assert fake.turn_requests[2].function_responses[-1]["name"] == "run_shell_command"
    print(f"gemini headless edit+commit run: {done.seconds:.2f} s")


async def test_codex_headless_runs_a_command_that_commits(agent_repo: Path, tmp_path: Path) -> None:
    codex = CodexCli()
    binary = cli_binary("codex")
    command = "printf 'hello\\n' > hello.txt && git add -A && git commit -qm 'Add hello.txt'"
    script = [codex_call("exec_command", cmd=command), "Done: wrote and committed hello.txt"]
    async with FakeResponses(script) as fake:
        endpoint = Endpoint(Secret("sk-codex-test"), fake.base_url, "fake-model")
        home = tmp_path / "home"
        codex.prepare_home(home, agent_repo, endpoint)
        run = codex.launch(
            binary=str(binary),
            prompt="add hello.txt",
            # Its workspace-write sandbox keeps .git read-only: committing needs the sandbox off.
            flags="--dangerously-bypass-approvals-and-sandbox",
            endpoint=endpoint,
            home=home,
            mode="headless",
            base_env=os.environ,
        )
        done = await run_headless(run, agent_repo)
    assert done.returncode == 0, done.stderr
    result = codex.parse_headless(done.stdout)
    assert (result.text, result.is_error, result.turns) == ("Done: wrote and committed hello.txt", False, 1)
    assert result.usage["input_tokens"] == 200 and result.session_id
    assert git(agent_repo, "log", "-1", "--format=%s").strip() == "Add hello.txt"
    assert [r.turn for r in fake.requests] == [0, 1]
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-codex-test"
    assert fake.requests[1].outputs[-1]["call_id"]
    print(f"codex headless edit+commit run: {done.seconds:.2f} s")
