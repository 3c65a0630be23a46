"""The real Claude Code CLI against the fake Messages API: headless and on a pseudo-terminal.

Skipped without the CLI (scripts/install-clis.sh), failed instead under CORAL_TEST_CLIS=1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coral_server.jobs.agents import ClaudeCli, Endpoint, Launch, Secret
from coral_server.jobs.prompts import ScreenReading, ScreenState, TurnEnd, read_claude_screen
from tests.fakes.anthropic import FakeAnthropic, Hold, bash, write
from tests.jobs.clis import claude_binary, git, run_headless
from tests.jobs.terminal import Terminal

CLAUDE = ClaudeCli()
KEY = Secret("sk-ant-test-0123456789abcdefghijklmnop")


@pytest.fixture
def claude_bin() -> Path:
    return claude_binary()


def launch(
    binary: Path,
    fake: FakeAnthropic,
    home: Path,
    cwd: Path,
    prompt: str,
    flags: str = "",
    headless: bool = True,
) -> Launch:
    endpoint = Endpoint(KEY, fake.base_url)
    CLAUDE.prepare_home(home, cwd, endpoint)
    mode = "headless" if headless else "interactive"
    return CLAUDE.launch(
        binary=str(binary),
        prompt=prompt,
        flags=flags,
        endpoint=endpoint,
        home=home,
        mode=mode,
        base_env=os.environ,
    )


def commit_script(repo: Path) -> list[object]:
    return [
        write(f"{repo}/hello.txt", "hello\n"),
        bash("git add -A && git commit -qm 'Add hello.txt'", "Commit the new file"),
        "Done: wrote and committed hello.txt",
    ]


async def test_headless_run_writes_a_file_commits_and_reports_its_result(
    claude_bin: Path, agent_repo: Path, tmp_path: Path
) -> None:
    async with FakeAnthropic(commit_script(agent_repo)) as fake:
        run = launch(
            claude_bin, fake, tmp_path / "home", agent_repo, "add hello.txt", "--allowedTools Write Bash"
        )
        done = await run_headless(run, agent_repo)
    assert done.returncode == 0, done.stderr
    result = CLAUDE.parse_headless(done.stdout)
    assert (result.text, result.is_error, result.turns) == ("Done: wrote and committed hello.txt", False, 3)
    assert result.usage["input_tokens"] == 3 * fake.input_tokens
    assert result.usage["output_tokens"] == 3 * fake.output_tokens
    assert result.cost_usd is not None and result.cost_usd > 0 and result.session_id
    assert (agent_repo / "hello.txt").read_text() == "hello\n"
    assert git(agent_repo, "log", "-1", "--format=%s").strip() == "Add hello.txt"
    assert git(agent_repo, "status", "--porcelain") == ""
    # The CLI sent each tool's result back; the key went as x-api-key, never in the output.
    results = [r.last_tool_result for r in fake.turn_requests]
    assert results[0] is None and results[1] is not None and results[2] is not None
    assert "File created successfully" in results[1]["content"] and not results[2]["is_error"]
    assert fake.turn_requests[0].headers["x-api-key"] == KEY.value and KEY.value not in done.stdout
    assert fake.turn_requests[0].user_texts[-1] == "add hello.txt"
    print(f"headless edit+commit run: {done.seconds:.2f} s")


async def test_headless_without_permission_flags_refuses_the_tools(
    claude_bin: Path, agent_repo: Path, tmp_path: Path
) -> None:
    async with FakeAnthropic(commit_script(agent_repo)) as fake:
        done = await run_headless(
            launch(claude_bin, fake, tmp_path / "home", agent_repo, "add hello.txt"), agent_repo
        )
    result = CLAUDE.parse_headless(done.stdout)
    assert [d["tool_name"] for d in result.raw["permission_denials"]] == ["Write", "Bash"]
    assert not (agent_repo / "hello.txt").exists()
    assert fake.turn_requests[1].last_tool_result is not None
    assert fake.turn_requests[1].last_tool_result["is_error"] is True


async def test_headless_skip_permissions_works_even_as_root(
    claude_bin: Path, agent_repo: Path, tmp_path: Path
) -> None:
    async with FakeAnthropic(commit_script(agent_repo)) as fake:
        run = launch(claude_bin, fake, tmp_path / "home", agent_repo, "go", "--dangerously-skip-permissions")
        done = await run_headless(run, agent_repo)
    assert done.returncode == 0, done.stderr
    assert git(agent_repo, "log", "-1", "--format=%s").strip() == "Add hello.txt"


async def test_headless_run_ends_promptly_on_sigterm_while_waiting_for_the_model(
    claude_bin: Path, agent_repo: Path, tmp_path: Path
) -> None:
    async with FakeAnthropic([Hold()]) as fake:
        run = launch(claude_bin, fake, tmp_path / "home", agent_repo, "go")
        proc = await asyncio.create_subprocess_exec(
            *run.argv,
            cwd=agent_repo,
            env=run.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            await fake.wait_for_hold(60)
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            async with asyncio.timeout(10):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert code in (143, -signal.SIGTERM)
    print(f"exited {time.monotonic() - sent:.2f} s after SIGTERM")


# -- interactive, on a pseudo-terminal ----------------------------------------------------------------


async def read_until(
    term: Terminal, want: Callable[[ScreenReading], bool], timeout: float = 60
) -> ScreenReading:
    """Wait until the screen's reading is what `want` says; returns it."""
    await term.wait_for(lambda _: want(read_claude_screen(term.screen.lines())), timeout)
    return read_claude_screen(term.screen.lines())


def asking(reading: ScreenReading) -> bool:
    """A permission prompt or a dialog: something waits for an answer."""
    return reading.state in (ScreenState.PERMISSION, ScreenState.DIALOG)


def turn_ended(end: TurnEnd) -> Callable[[ScreenReading], bool]:
    return lambda reading: reading.idle and reading.turn_end is end


async def answer(term: Terminal, reading: ScreenReading, keys: str) -> None:
    """Type `keys` at a prompt, then wait until that prompt has gone (so it is not answered twice)."""
    term.send(keys)
    await term.wait_for(lambda _: read_claude_screen(term.screen.lines()).prompt != reading.prompt)


@pytest.fixture
def worktree(agent_repo: Path, tmp_path: Path) -> Path:
    """A worktree of the repository on a branch of its own, as a job gets."""
    path = tmp_path / "repo_task_run_1"
    git(agent_repo, "worktree", "add", "-q", "-b", "coral/run-1", str(path), "main")
    return path


async def test_interactive_permission_prompts_are_recognised_and_answered_yes(
    claude_bin: Path, worktree: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    async with FakeAnthropic(commit_script(worktree)) as fake:
        run = launch(claude_bin, fake, home, worktree, "add hello.txt", headless=False)
        async with Terminal(120, 40) as term:
            started = time.monotonic()
            await term.start(run.argv, worktree, run.env)
            # No first-run dialog (the HOME is seeded): the first screen that means something is the
            # Write's permission prompt.
            reading = await read_until(term, asking)
            assert reading.prompt is not None, reading
            assert (reading.prompt.tool, reading.prompt.subject) == ("Write", "hello.txt")
            assert not (worktree / "hello.txt").exists()
            await answer(term, reading, reading.prompt.yes_keys)

            reading = await read_until(term, lambda r: asking(r) or r.idle)
            assert reading.prompt is not None, reading
            assert (worktree / "hello.txt").read_text() == "hello\n"
            assert reading.prompt.summary() == "Bash: git add -A && git commit -qm 'Add hello.txt'"
            await answer(term, reading, reading.prompt.yes_keys)

            await read_until(term, turn_ended(TurnEnd.DONE))
            assert "Done: wrote and committed hello.txt" in term.text()
            finished = time.monotonic() - started
            await term.type_and_submit("/exit")
            assert await term.wait_exit(30) == 0
    assert git(worktree, "log", "-1", "--format=%s").strip() == "Add hello.txt"
    result = CLAUDE.read_interactive_result(home, worktree)
    assert result is not None
    assert result.text == "Done: wrote and committed hello.txt"
    assert result.turns == 3 and result.session_id and result.cost_usd is not None and result.cost_usd > 0
    assert result.usage["output_tokens"] >= 3 * fake.output_tokens  # plus the session title request
    print(f"interactive run to its final answer: {finished:.2f} s")


async def test_interactive_decline_stops_the_agent_until_it_is_told_more(
    claude_bin: Path, worktree: Path, tmp_path: Path
) -> None:
    script = [write(f"{worktree}/hello.txt", "hello\n"), "Understood, I will not write it."]
    async with FakeAnthropic(script) as fake:
        run = launch(claude_bin, fake, tmp_path / "home", worktree, "add hello.txt", headless=False)
        async with Terminal(120, 40) as term:
            await term.start(run.argv, worktree, run.env)
            reading = await read_until(term, asking)
            assert reading.prompt is not None and reading.prompt.tool == "Write"
            await answer(term, reading, reading.prompt.no_keys)
            await read_until(term, turn_ended(TurnEnd.INTERRUPTED))
            assert not (worktree / "hello.txt").exists() and fake.calls == 1

            # The agent waits for the user; what is typed goes on with the refusal in its history.
            await term.type_and_submit("do not write anything")
            await fake.wait_for_turns(2)
            refusal = fake.turn_requests[1].last_tool_result
            assert refusal is not None and refusal["is_error"]
            assert "doesn't want to proceed" in refusal["content"]
            assert fake.turn_requests[1].user_texts[-1] == "do not write anything"
            await read_until(term, turn_ended(TurnEnd.DONE))
            assert "Understood, I will not write it." in term.text()
            term.send("\x03")  # Ctrl-C twice leaves the CLI
            await term.wait_for(lambda screen: "Press Ctrl-C again to exit" in screen)
            term.send("\x03")
            assert await term.wait_exit(30) == 0
    assert not (worktree / "hello.txt").exists()
