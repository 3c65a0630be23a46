"""Re-capture the real Gemini and Codex CLI screens in tests/fixtures/screens/{gemini,codex}/ (run after
a CLI upgrade; Claude Code's have their own script, capture_claude_screens.py).

    .venv/bin/python -m tests.jobs.capture_screens [gemini] [codex]

Each CLI runs on a 120x40 pseudo-terminal against its loopback fake, prepared as the server prepares it,
through the screens the recogniser reads: `starting` (the input box before a task), `busy`, the
permission prompt of a shell command, `done` (after a yes) and `declined` (after Esc). Exits non-zero if
a screen never appears.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from coral_server.jobs.agents import AgentCli, CodexCli, Endpoint, GeminiCli, Secret
from tests.fakes.gemini import FakeGemini
from tests.fakes.gemini import call as gemini_call
from tests.fakes.openai_responses import FakeResponses
from tests.fakes.openai_responses import call as codex_call
from tests.jobs.clis import cli_binary
from tests.jobs.terminal import Terminal

OUT = Path(__file__).parent.parent / "fixtures" / "screens"
KEY = "test-key-0123456789abcdefghij"
COMMAND = "echo hi > hi.txt && git add -A && git commit -qm hi"


def save(term: Terminal, agent_type: str, name: str) -> None:
    text = "\n".join(row.rstrip() for row in term.screen.lines()).rstrip() + "\n"
    (OUT / agent_type / f"{name}.txt").write_text(text)
    print(f"saved {agent_type}/{name}")


class Cli:
    """What differs between the two CLIs here: the fake, its script, and the words of their screens."""

    def __init__(
        self, cli: AgentCli, model: str | None, ready: str, busy: str, asks: str, yes: str, done: str
    ) -> None:
        self.cli, self.model, self.ready, self.busy, self.asks = cli, model, ready, busy, asks
        self.yes, self.done = yes, done

    def fake(self) -> AbstractAsyncContextManager[Any]:
        if isinstance(self.cli, GeminiCli):
            return FakeGemini(
                [gemini_call("run_shell_command", command=COMMAND, description="commit"), "Done."]
            )
        call = codex_call(
            "exec_command", cmd=COMMAND, sandbox_permissions="require_escalated", justification="ok?"
        )
        return FakeResponses([call, "Done."])


CLIS = {
    "gemini": Cli(GeminiCli(), None, "Type your message", "esc to cancel", "Allow once", "1", "\u2726 Done."),
    "codex": Cli(
        CodexCli(), "fake-model", "for shortcuts", "esc to interrupt", "Yes, proceed", "y", "Worked for"
    ),
}


async def session(name: str, prompt: str | None, steps: Callable[[Terminal, Cli], Awaitable[None]]) -> None:
    cli = CLIS[name]
    with tempfile.TemporaryDirectory() as tmp:
        repo, home = Path(tmp) / "repo", Path(tmp) / "home"
        git = await asyncio.create_subprocess_exec("git", "init", "-q", "-b", "main", str(repo))
        assert await git.wait() == 0
        for key, value in (("user.name", "Dev"), ("user.email", "dev@example.test")):
            git = await asyncio.create_subprocess_exec("git", "-C", str(repo), "config", key, value)
            assert await git.wait() == 0
        async with cli.fake() as fake:
            endpoint = Endpoint(Secret(KEY), fake.base_url, cli.model)
            cli.cli.prepare_home(home, repo, endpoint)
            launch = cli.cli.launch(
                binary=str(cli_binary(name, required=True)),
                prompt=prompt or "",
                flags="",
                endpoint=endpoint,
                home=home,
                mode="interactive",
                base_env=os.environ,
                prompt_in_argv=prompt is not None,
            )
            async with Terminal(120, 40) as term:
                await term.start(launch.argv, repo, launch.env)
                await steps(term, cli)


async def capture(name: str) -> None:
    (OUT / name).mkdir(parents=True, exist_ok=True)

    async def accepted(term: Terminal, cli: Cli) -> None:
        await term.wait_for(lambda s: cli.ready in s)
        save(term, name, "starting")
        term.send("commit hi.txt")
        await term.wait_for(lambda s: "commit hi.txt" in s)
        term.send("\r")
        await term.wait_for(lambda s: cli.busy in s or cli.asks in s)
        if cli.asks not in term.text():
            save(term, name, "busy")
        await term.wait_for(lambda s: cli.asks in s)
        save(term, name, "permission_shell" if name == "gemini" else "permission_exec")
        term.send(cli.yes)
        await term.wait_for(lambda s: cli.done in s and cli.busy not in s)
        save(term, name, "done")

    async def declined(term: Terminal, cli: Cli) -> None:
        await term.wait_for(lambda s: cli.asks in s)
        term.send("\x1b")
        marker = "Request cancelled" if name == "gemini" else "Conversation interrupted"
        await term.wait_for(lambda s: marker in s and cli.busy not in s)
        save(term, name, "declined")

    await session(name, None, accepted)
    await session(name, "commit hi.txt", declined)


async def main(names: list[str]) -> None:
    for name in names or sorted(CLIS):
        await capture(name)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except AssertionError as exc:
        sys.exit(str(exc))
