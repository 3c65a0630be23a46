"""Tests of the local registry catalog (coral_server.registry.catalog)."""

from __future__ import annotations

import logging
import textwrap
import time
from pathlib import Path

import pytest

from coral_server.registry import AgentNotInRegistry, Registry, version_key


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def agent(name: str, version: str, extra: str = "") -> str:
    return (
        f'edition = 4\n[agent]\nname = "{name}"\nversion = "{version}"\n'
        f'[runtimes.executable]\npath = "run"\n{textwrap.dedent(extra)}'
    )


def test_good_manifests_load_and_broken_ones_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good_a = write(tmp_path / "agents/alpha/coral-agent.toml", agent("alpha", "0.1.0"))
    good_b = write(tmp_path / "agents/nested/deeper/beta/coral-agent.toml", agent("beta", "2.0.0"))
    syntax = write(tmp_path / "agents/syntax/coral-agent.toml", 'edition = 4\n[agent]\nname = "x\n')
    no_name = write(
        tmp_path / "agents/no-name/coral-agent.toml",
        '[agent]\nversion = "1"\n[runtimes.docker]\nimage = "i"\n',
    )
    bad_type = write(
        tmp_path / "agents/bad-type/coral-agent.toml",
        agent("bad-type", "1.0.0", '[options.X]\ntype = "int"\n'),
    )
    no_runtime = write(
        tmp_path / "agents/no-runtime/coral-agent.toml", '[agent]\nname = "r"\nversion = "1"\n'
    )
    write(tmp_path / "agents/alpha/other.toml", "this is not looked at")

    with caplog.at_level(logging.WARNING, logger="coral_server.registry"):
        registry = Registry.load([tmp_path / "agents"])

    assert [m.manifest_path for m in registry.agents()] == [good_a, good_b]
    problems = {p.path: p.reason for p in registry.problems}
    assert set(problems) == {syntax, no_name, bad_type, no_runtime}
    assert problems[syntax].startswith("TOML syntax error")
    assert problems[no_name] == "missing [agent] name"
    assert problems[bad_type].startswith("option X: unknown type 'int'")
    assert problems[no_runtime] == "no runtime: add [runtimes.executable] or [runtimes.docker]"

    warnings = [
        r for r in caplog.records if r.name == "coral_server.registry" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 4
    assert any(str(no_name) in r.getMessage() and "missing [agent] name" in r.getMessage() for r in warnings)


def test_path_may_be_a_manifest_file_and_missing_paths_are_problems(tmp_path: Path) -> None:
    single = write(tmp_path / "one/custom-name.toml", agent("single", "1.0.0"))
    registry = Registry.load([single, tmp_path / "missing"])
    assert [m.name for m in registry.agents()] == ["single"]
    assert [(p.path, p.reason) for p in registry.problems] == [(tmp_path / "missing", "path does not exist")]


def test_duplicate_name_and_version_keeps_the_first(tmp_path: Path) -> None:
    first = write(tmp_path / "a/coral-agent.toml", agent("dup", "1.0.0", 'description = "first"\n'))
    second = write(tmp_path / "b/coral-agent.toml", agent("dup", "1.0.0"))
    registry = Registry.load([tmp_path])
    assert registry.get("dup", "1.0.0").manifest_path == first
    assert len(registry.problems) == 1
    assert registry.problems[0].path == second
    assert registry.problems[0].reason == f"duplicate agent dup@1.0.0, already defined in {first}"


def test_get_versions_and_latest(tmp_path: Path) -> None:
    for version in ["0.9.0", "0.10.0", "0.10.1-beta.2", "0.2.0"]:
        write(tmp_path / version / "coral-agent.toml", agent("multi", version))
    registry = Registry.load([tmp_path])
    assert registry.versions("multi") == ["0.2.0", "0.9.0", "0.10.0", "0.10.1-beta.2"]
    assert registry.get("multi").version == "0.10.1-beta.2"
    assert registry.get("multi", "latest").version == "0.10.1-beta.2"
    assert registry.get("multi", "0.9.0").version == "0.9.0"
    assert len(registry) == 4
    assert "multi" in registry

    with pytest.raises(AgentNotInRegistry) as info:
        registry.get("multi", "3.0.0")
    assert str(info.value) == "agent multi@3.0.0 is not in the registry"
    assert (info.value.name, info.value.version) == ("multi", "3.0.0")
    with pytest.raises(AgentNotInRegistry, match="agent ghost@latest is not in the registry"):
        registry.get("ghost", None)


def test_version_ordering() -> None:
    versions = ["1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "0.0.9", "1.10.0", "1.2.0", "nightly"]
    assert sorted(versions, key=version_key) == [
        "nightly",
        "0.0.9",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta",
        "1.0.0",
        "1.2.0",
        "1.10.0",
    ]


def test_listing_json(tmp_path: Path) -> None:
    write(tmp_path / "z1/coral-agent.toml", agent("zeta", "1.0.0"))
    write(tmp_path / "z2/coral-agent.toml", agent("zeta", "0.3.0"))
    write(tmp_path / "a1/coral-agent.toml", agent("alpha", "0.1.0"))
    before = int(time.time() * 1000)
    registry = Registry.load([tmp_path])
    after = int(time.time() * 1000)
    listing = registry.listing()
    timestamp = listing[0]["timestamp"]
    assert isinstance(timestamp, int) and before <= timestamp <= after
    assert listing == [
        {
            "identifier": {"type": "local"},
            "timestamp": timestamp,
            "agents": [
                {"name": "alpha", "versions": ["0.1.0"]},
                {"name": "zeta", "versions": ["0.3.0", "1.0.0"]},
            ],
        }
    ]


def test_empty_registry_listing() -> None:
    registry = Registry.load([])
    assert registry.agents() == []
    assert registry.listing()[0]["agents"] == []


def test_detail_json(tmp_path: Path) -> None:
    write(
        tmp_path / "full/coral-agent.toml",
        """\
        edition = 4
        [agent]
        name = "full"
        version = "1.0.0"
        description = "Does everything"
        summary = "Everything"
        capabilities = ["resources"]

        [runtimes.executable]
        path = "python"
        arguments = ["main.py"]
        transport = "sse"

        [runtimes.docker]
        image = "example/full:1"

        [options.API_KEY]
        type = "string"
        secret = true
        default = "never-shown"
        description = "key"

        [options.COUNT]
        type = "u8"
        required = true
        transport = "fs"
        display = { label = "Count", group = "Limits" }
        validation = { min = 1, max = 9 }

        [options.ICON]
        type = "blob"
        default = "AAE="
        """,
    )
    write(tmp_path / "min/coral-agent.toml", agent("minimal", "0.1.0"))
    registry = Registry.load([tmp_path])
    assert registry.detail("full", "1.0.0") == {
        "registryAgent": {
            "info": {
                "description": "Does everything",
                "summary": "Everything",
                "capabilities": ["resources"],
                "identifier": {"name": "full", "version": "1.0.0", "registrySourceId": {"type": "local"}},
            },
            "runtimes": {
                "executable": {"path": "python", "arguments": ["main.py"], "transport": "sse"},
                "docker": {"image": "example/full:1", "transport": "streamable_http"},
            },
            "options": {
                "API_KEY": {
                    "type": "string",
                    "required": False,
                    "description": "key",
                    "transport": "env",
                    "secret": True,
                },
                "COUNT": {
                    "type": "u8",
                    "required": True,
                    "display": {"label": "Count", "group": "Limits"},
                    "validation": {"min": 1, "max": 9},
                    "transport": "fs",
                },
                "ICON": {"type": "blob", "required": False, "default": "AAE=", "transport": "env"},
            },
        },
        "restrictions": [{"type": "local"}],
    }
    assert registry.detail("minimal", "latest") == {
        "registryAgent": {
            "info": {
                "capabilities": [],
                "identifier": {"name": "minimal", "version": "0.1.0", "registrySourceId": {"type": "local"}},
            },
            "runtimes": {"executable": {"path": "run", "arguments": [], "transport": "streamable_http"}},
            "options": {},
        },
        "restrictions": [{"type": "local"}],
    }
    with pytest.raises(AgentNotInRegistry):
        registry.detail("full", "9.9.9")
