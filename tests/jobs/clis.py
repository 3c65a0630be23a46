"""Where the tests find the real coding-agent CLIs (installed by scripts/install-clis.sh).

`CORAL_<NAME>_BIN` names one executable; otherwise `$CORAL_TOOLS_DIR/<name>/node_modules/.bin/<exe>`,
then `<repo>/.tools/...`. A missing CLI skips its tests, unless `CORAL_TEST_CLIS=1` (CI): then they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coral_server.jobs.agents import agent_cli, find_binary

REPO = Path(__file__).resolve().parents[2]


def tools_dirs() -> list[Path]:
    dirs = [Path(os.environ["CORAL_TOOLS_DIR"])] if os.environ.get("CORAL_TOOLS_DIR") else []
    return [*dirs, REPO / ".tools"]


def cli_binary(agent_type: str, required: bool = False) -> Path:
    """The CLI's executable, or skip the test (fail under `CORAL_TEST_CLIS=1` or `required`)."""
    override = os.environ.get(f"CORAL_{agent_type.upper()}_BIN")
    found = Path(override) if override else find_binary(agent_cli(agent_type), tools_dirs())
    if found is not None and os.access(found, os.X_OK):
        return found
    why = f"no {agent_type} CLI (run scripts/install-clis.sh, or set CORAL_{agent_type.upper()}_BIN)"
    if required or os.environ.get("CORAL_TEST_CLIS") == "1":
        raise AssertionError(f"{why}; CORAL_TEST_CLIS=1 requires it")
    pytest.skip(why)


def claude_binary(required: bool = False) -> Path:
    return cli_binary("claude", required)
