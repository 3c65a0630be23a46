"""A permission prompt's answer the CLI did not take (its keys came before it read its terminal, as on a
busy machine) is typed again, so the run goes on instead of waiting at the prompt until its time is up.

The CLI is a stand-in at the process boundary: on its terminal it draws Claude Code's real permission
prompt (a captured screen), throws the first key it reads away, and ends once a second one comes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coral_server.jobs import executor
from tests.conftest import Coral, start_coral, wait_until
from tests.jobs.conftest import init_git_repo

SCREEN = Path(__file__).resolve().parents[1] / "fixtures" / "screens" / "claude" / "permission_bash.txt"
FAKE_CLI = """#!{python}
import os, sys, tty
from pathlib import Path

here = Path(__file__).resolve().parent
tty.setraw(0)
screen = (here / "screen.txt").read_text().replace("\\n", "\\r\\n")
os.write(1, ("\\x1b[2J\\x1b[H" + screen).encode())
keys = [os.read(0, 64)]  # lost: the prompt was not listening yet
keys.append(os.read(0, 64))
(here / "keys.txt").write_text(repr(keys))
os.write(1, b"\\x1b[2J\\x1b[Hthanks\\r\\n")
"""


@pytest.fixture
def fake_cli(tmp_path: Path) -> Path:
    binary = tmp_path / "bin" / "claude"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_CLI.format(python=sys.executable))
    binary.chmod(0o755)
    (binary.parent / "screen.txt").write_text(SCREEN.read_text())
    return binary


@pytest.fixture
async def coral(tmp_path: Path, fake_cli: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Coral]:
    monkeypatch.setattr(executor, "RESEND_S", 1.0)
    async for server in start_coral(tmp_path, claude_bin=str(fake_cli)):
        yield server


async def test_an_answer_the_cli_did_not_take_is_typed_again(
    coral: Coral, fake_cli: Path, tmp_path: Path
) -> None:
    repo = init_git_repo(tmp_path / "repo").path
    body = {"prompt": "commit", "repo_path": str(repo), "auto_accept": True, "max_auto_accepts": 1}
    body["max_duration_s"] = 120
    status, out = await coral.request("POST", "/api/tasks/run", body)
    assert status == 200, out
    run_id = out["run_id"]

    async def ended() -> Any:
        status, run = await coral.request("GET", f"/api/tasks/runs/{run_id}")
        assert status == 200, run
        return run if run["status"] in ("completed", "failed", "killed") else None

    run = await wait_until(ended, 60, interval=0.1, what=f"run {run_id} ended")
    assert run["exit_reason"] != "timeout", run
    assert (fake_cli.parent / "keys.txt").read_text() == repr([b"1", b"1"])  # the same answer, twice
    assert [a["question"] for a in run["auto_accepts"]] == [
        "Bash: git add -A && git commit -qm 'notes: three lines'"
    ]
