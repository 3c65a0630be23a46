"""Fixtures shared by the registry tests: writing real manifests to a temporary folder."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from coral_server.registry import AgentManifest, load_manifest

HEADER = """\
edition = 4

[agent]
name = "{name}"
version = "{version}"
description = "test agent"

[runtimes.executable]
path = "python"
arguments = ["main.py"]
"""

WriteFile = Callable[[str, str], Path]
MakeAgent = Callable[..., AgentManifest]


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    """Write ``text`` (dedented) to ``tmp_path / rel`` and return the path."""

    def write(rel: str, text: str) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_agent(write_file: WriteFile) -> MakeAgent:
    """Load a manifest made of a standard header followed by ``options`` TOML."""
    counter = iter(range(1_000_000))

    def make(options: str = "", name: str = "tester", version: str = "1.0.0") -> AgentManifest:
        text = HEADER.format(name=name, version=version) + "\n" + textwrap.dedent(options)
        path = write_file(f"agent{next(counter)}/coral-agent.toml", text)
        return load_manifest(path)

    return make
