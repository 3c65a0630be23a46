"""Re-capture the real Claude Code screens in tests/fixtures/screens/claude/ (run after a CLI upgrade).

    .venv/bin/python -m tests.jobs.capture_claude_screens

Drives the installed CLI on a pseudo-terminal against the fake Messages API through every screen the
recogniser reads (first-run dialogs, permission prompts, busy, ready, declined, done) and writes each
rendered screen (rows right-stripped) to a text file. Exits non-zero if a screen never appears.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from coral_server.jobs.agents import ClaudeCli, Endpoint, Secret
from tests.fakes.anthropic import FakeAnthropic, Hold, bash, edit, read, write
from tests.jobs.clis import claude_binary
from tests.jobs.terminal import Terminal

OUT = Path(__file__).parent.parent / "fixtures" / "screens" / "claude"
KEY = "sk-ant-test-0123456789abcdefghijklmnop"
CLAUDE = ClaudeCli()


def save(term: Terminal, name: str) -> None:
    text = "\n".join(row.rstrip() for row in term.screen.lines()).rstrip() + "\n"
    (OUT / f"{name}.txt").write_text(text)
    print(f"saved {name}")


async def session(
    home_config: Callable[[Path, Path, str], None],
    argv_tail: list[str],
    script: list[object],
    steps: Callable[[Terminal, FakeAnthropic, Path], Awaitable[None]],
    extra_env: dict[str, str] | None = None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo, home = Path(tmp) / "repo", Path(tmp) / "home"
        git = await asyncio.create_subprocess_exec("git", "init", "-q", "-b", "main", str(repo))
        assert await git.wait() == 0
        home.mkdir()
        async with FakeAnthropic([s(repo) if callable(s) else s for s in script]) as fake:
            home_config(home, repo, fake.base_url)
            endpoint = Endpoint(Secret(KEY), fake.base_url)
            env = CLAUDE.environment(endpoint, home, os.environ) | (extra_env or {})
            async with Terminal(120, 40) as term:
                await term.start([str(claude_binary(required=True)), *argv_tail], repo, env)
                await steps(term, fake, repo)


def shown(*words: str) -> Callable[[str], bool]:
    """The screen shows every word and a prompt's footer (drawn last: the prompt is complete)."""
    return lambda screen: all(w in screen for w in words) and "Esc to cancel" in screen


def seeded(home: Path, repo: Path, base_url: str) -> None:
    CLAUDE.prepare_home(home, repo, Endpoint(Secret(KEY), base_url))


def onboarded_only(home: Path, repo: Path, base_url: str) -> None:
    (home / ".claude.json").write_text('{"hasCompletedOnboarding": true}')


def nothing(home: Path, repo: Path, base_url: str) -> None:
    pass


def seeded_without_bypass(home: Path, repo: Path, base_url: str) -> None:
    seeded(home, repo, base_url)
    config = home / ".claude.json"
    config.write_text(config.read_text().replace('"bypassPermissionsModeAccepted": true', '"x": 0'))


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)

    async def unseeded(term: Terminal, fake: FakeAnthropic, repo: Path) -> None:
        await term.wait_for(lambda s: "Please check your internet connection" in s)
        save(term, "first_run_unreachable")

    await session(nothing, [], [], unseeded)

    async def dialogs(term: Terminal, fake: FakeAnthropic, repo: Path) -> None:
        await term.wait_for(lambda s: "Yes, I trust this folder" in s)
        save(term, "dialog_trust_folder")
        term.send("1")
        await term.wait_for(lambda s: "Do you want to use this API key?" in s)
        save(term, "dialog_api_key")
        term.send("1")
        await term.wait_for(lambda s: "for shortcuts" in s)
        save(term, "ready_after_dialogs")

    await session(onboarded_only, [], [], dialogs)

    async def bypass(term: Terminal, fake: FakeAnthropic, repo: Path) -> None:
        await term.wait_for(lambda s: "Yes, I accept" in s)
        save(term, "dialog_bypass_permissions")

    await session(seeded_without_bypass, ["--dangerously-skip-permissions"], [], bypass, {"IS_SANDBOX": "1"})

    async def bypass_ready(term: Terminal, fake: FakeAnthropic, repo: Path) -> None:
        await term.wait_for(lambda s: "bypass permissions on" in s)
        save(term, "ready_bypass_permissions")

    await session(seeded, ["--dangerously-skip-permissions"], [], bypass_ready, {"IS_SANDBOX": "1"})

    commit = "git add -A && git commit -qm 'notes: three lines'"
    script: list[object] = [
        lambda repo: write(f"{repo}/notes.md", "alpha\nbeta\n"),
        lambda repo: read(f"{repo}/notes.md"),
        lambda repo: edit(f"{repo}/notes.md", "beta", "gamma"),
        lambda repo: write(f"{repo}/notes.md", "replaced\n"),
        bash(
            "for i in 1 2 3; do echo line $i >> notes.md; done && git add -A && git -c user.email=a@b "
            '-c user.name=a commit -qm "a long commit message that goes on and on so that the command '
            'wraps over more than one line of the terminal"',
            "Append three lines and commit",
        ),
        bash("sleep 5 && touch slept.txt", "Sleep, then touch a file"),
        bash(commit, "Commit the notes"),
        Hold("Finished after the decline."),
    ]

    async def flow(term: Terminal, fake: FakeAnthropic, repo: Path) -> None:
        await term.wait_for(shown("Do you want to create notes.md?"))
        save(term, "permission_write_create")
        term.send("1")
        await term.wait_for(shown("Do you want to make this edit to notes.md?"))
        save(term, "permission_edit")
        term.send("1")
        await term.wait_for(shown("Do you want to overwrite notes.md?"))
        save(term, "permission_write_overwrite")
        term.send("1")
        await term.wait_for(shown("Do you want to proceed?", "wraps over"))
        save(term, "permission_bash_two_choices")
        term.send("1")
        await term.wait_for(shown("Do you want to proceed?", "sleep 5"))
        save(term, "permission_bash_sleep")
        term.send("1")
        await term.wait_for(lambda s: "Running…" in s)
        save(term, "busy_tool")
        await term.wait_for(shown("Do you want to proceed?", "Commit the notes"), 30)
        save(term, "permission_bash")
        term.send("\x1b")
        await term.wait_for(lambda s: "What should Claude do instead?" in s and "for shortcuts" in s)
        save(term, "declined")
        term.send("go on")
        await term.wait_for(lambda s: "go on" in s)
        save(term, "typed")
        term.send("\r")
        await fake.wait_for_hold()
        await term.wait_for(lambda s: "esc to interrupt" in s)
        save(term, "busy_model")
        fake.release()
        await term.wait_for(lambda s: "Finished after the decline." in s and "for shortcuts" in s)
        save(term, "done")
        term.send("\x1b[200~line one\nline two\nline three\x1b[201~")
        await term.wait_for(lambda s: "line three" in s)
        save(term, "pasted_multiline")
        term.send("\x03")
        await term.wait_for(lambda s: "Press Ctrl-C again to exit" in s)
        save(term, "ctrl_c_once")
        term.send("\x03")
        await term.wait_exit(15)

    await session(seeded, ["--", "edit the notes"], script, flow)

    async def decline_write(term: Terminal, fake: FakeAnthropic, repo: Path) -> None:
        await term.wait_for(shown("Do you want to create hello.txt?"))
        term.send("3")
        await term.wait_for(lambda s: "User rejected" in s and "for shortcuts" in s)
        save(term, "declined_write")

    hello: list[object] = [lambda repo: write(f"{repo}/hello.txt", "hello\n"), "ok"]
    await session(seeded, ["--", "add hello.txt"], hello, decline_write)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as exc:
        sys.exit(str(exc))
