"""Tests of coral-agent.toml parsing (coral_server.registry.manifest)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coral_server.registry import (
    AgentManifest,
    DockerSection,
    ExecutableSection,
    Generation,
    ManifestInvalid,
    OptionSpec,
    load_manifest,
)
from coral_server.registry.manifest import ContainerRequests

WriteFile = Callable[[str, str], Path]
MakeAgent = Callable[..., AgentManifest]

CURRENT = """\
edition = 4

[agent]
name = "web-researcher"
version = "1.2.3"
description = "Searches the web"
summary = "Web search agent"
capabilities = ["resources", "tool_refreshing"]
keywords = ["search", "web"]
license = "MIT"   # unknown keys are tolerated

[agent.links]
homepage = "https://example.org"

[runtimes.executable]
path = "bash"
arguments = ["run.sh", "--fast"]
transport = "sse"

[runtimes.docker]
image = "example/researcher:1.2.3"
command = ["python", "-m", "researcher"]
transport = "streamable_http"

[runtimes.function]
whatever = true

[options.API_KEY]
type = "string"
secret = true
required = true
description = "The API key"

[options.API_KEY.display]
label = "API key"
group = "Credentials"

[options.MAX_ITERATIONS]
type = "u16"
default = 10
transport = "fs"

[options.MAX_ITERATIONS.validation]
min = 1
max = 100

[options.TEMPERATURE]
type = "f32"
default = 0.5

[options.TAGS]
type = "list[string]"
default = ["a", "b"]

[options.ICON]
type = "blob"
default = "AAEC"

[options.MODE]
type = "string"
default = "fast"
base64 = true
validation = { variants = ["fast", "slow"] }
"""


def test_current_format_edition_4(write_file: WriteFile, tmp_path: Path) -> None:
    path = write_file("researcher/coral-agent.toml", CURRENT)
    m = load_manifest(path)
    assert m.name == "web-researcher"
    assert m.version == "1.2.3"
    assert m.edition == 4
    assert m.generation is Generation.CURRENT
    assert m.description == "Searches the web"
    assert m.summary == "Web search agent"
    assert m.capabilities == ["resources", "tool_refreshing"]
    assert m.keywords == ["search", "web"]
    assert m.root == tmp_path / "researcher"
    assert m.manifest_path == path
    assert m.executable == ExecutableSection("bash", ["run.sh", "--fast"], "sse")
    assert m.docker == DockerSection(
        "example/researcher:1.2.3", ["python", "-m", "researcher"], "streamable_http"
    )
    assert list(m.options) == ["API_KEY", "MAX_ITERATIONS", "TEMPERATURE", "TAGS", "ICON", "MODE"]
    assert m.options["API_KEY"] == OptionSpec(
        name="API_KEY",
        type="string",
        required=True,
        description="The API key",
        display={"label": "API key", "group": "Credentials"},
        secret=True,
    )
    assert m.options["MAX_ITERATIONS"] == OptionSpec(
        name="MAX_ITERATIONS", type="u16", default=10, validation={"min": 1, "max": 100}, transport="fs"
    )
    temperature = m.options["TEMPERATURE"]
    assert temperature.default == 0.5 and isinstance(temperature.default, float)
    assert m.options["TAGS"].default == ["a", "b"]
    assert m.options["TAGS"].is_list and m.options["TAGS"].item_type == "string"
    assert m.options["ICON"].default == b"\x00\x01\x02"
    assert m.options["MODE"].base64 is True
    assert m.options["MODE"].validation == {"variants": ["fast", "slow"]}


def test_legacy_manifest_without_edition(write_file: WriteFile) -> None:
    path = write_file(
        "old/coral-agent.toml",
        """\
        [agent]
        name = "old-agent"
        version = "0.0.1"

        [runtimes.executable]
        command = ["python", "main.py", "--verbose"]

        [options.RATIO]
        type = "number"
        default = 2

        [options.TOKEN]
        type = "secret"
        """,
    )
    m = load_manifest(path)
    assert m.edition is None
    assert m.generation is Generation.V1
    assert m.description is None and m.summary is None
    # 1.0 agents speak SSE only: a runtime naming no transport gets SSE
    assert m.executable == ExecutableSection("python", ["main.py", "--verbose"], "sse")
    assert m.docker is None
    assert m.options["RATIO"].type == "f64"
    assert m.options["RATIO"].default == 2.0 and isinstance(m.options["RATIO"].default, float)
    assert m.options["TOKEN"].type == "string"
    assert m.options["TOKEN"].secret is True
    assert m.capabilities == [] and m.keywords == []


@pytest.mark.parametrize("edition", [1, 2, 3])
def test_older_editions_are_tolerated(make_agent: MakeAgent, write_file: WriteFile, edition: int) -> None:
    path = write_file(
        "e/coral-agent.toml",
        f"""\
        edition = {edition}
        [agent]
        name = "a"
        version = "1"
        [runtimes.docker]
        image = "img"
        transport = "streamable-http"
        """,
    )
    m = load_manifest(path)
    assert m.edition == edition
    assert m.generation is (Generation.CURRENT if edition >= 3 else Generation.V1)
    assert m.docker == DockerSection("img", None, "streamable_http")


def test_docker_container_requests(write_file: WriteFile) -> None:
    """What a manifest asks of its container (applied only where the operator allows it)."""
    path = write_file(
        "c/coral-agent.toml",
        """\
        edition = 4
        [agent]
        name = "a"
        version = "1"
        [runtimes.docker]
        image = "img"
        capAdd = ["NET_BIND_SERVICE"]
        readOnly = false
        pidsLimit = 1024
        user = "1000:1000"
        """,
    )
    docker = load_manifest(path).docker
    assert docker is not None
    assert docker.container == ContainerRequests(("NET_BIND_SERVICE",), None, 1024, False, "1000:1000")
    assert docker.container.asked() == ["capAdd", "pidsLimit", "readOnly", "user"]
    assert ContainerRequests().asked() == []


def test_legacy_options_as_array_of_tables(write_file: WriteFile) -> None:
    path = write_file(
        "arr/coral-agent.toml",
        """\
        [agent]
        name = "arr"
        version = "1"
        [runtimes.executable]
        path = "x"
        [[options]]
        name = "A"
        type = "i8"
        default = -3
        """,
    )
    assert load_manifest(path).options["A"].default == -3


def test_strings_as_tables_and_file_references(write_file: WriteFile) -> None:
    write_file("ref/docs/description.md", "Long description\nfrom a file.\n")
    write_file("ref/option.txt", "Option help")
    path = write_file(
        "ref/coral-agent.toml",
        """\
        edition = 3
        [agent]
        name = "ref"
        version = "0.1.0"
        description = { type = "file", path = "docs/description.md" }
        summary = { type = "string", value = "Inline summary" }
        [runtimes.executable]
        path = "run"
        [options.X]
        type = "string"
        description = { type = "file", path = "option.txt" }
        default = { type = "string", value = "dflt" }
        display = { label = { type = "string", value = "The X" }, multiline = true }
        """,
    )
    m = load_manifest(path)
    assert m.description == "Long description\nfrom a file.\n"
    assert m.summary == "Inline summary"
    assert m.options["X"].description == "Option help"
    assert m.options["X"].default == "dflt"
    assert m.options["X"].display == {"label": "The X", "multiline": True}


def test_repr_of_spec_never_shows_secret_default(make_agent: MakeAgent) -> None:
    m = make_agent(
        """\
        [options.PW]
        type = "string"
        secret = true
        default = "hunter2-default"
        """
    )
    assert "hunter2-default" not in repr(m.options["PW"])
    assert "hunter2-default" not in repr(m)


AGENT = '[agent]\nname = "a"\nversion = "1"\n'
DOCKER = '[runtimes.docker]\nimage = "i"\n'
BASE = AGENT + DOCKER

BROKEN = [
    ("syntax", 'edition = 4\n[agent]\nname = "x\n', "TOML syntax error"),
    ("syntax-line", "edition = 4\n[agent]\nname = = 1\n", "line 3"),
    ("no-agent", "edition = 4\n", "missing [agent] table"),
    ("no-name", '[agent]\nversion = "1"\n' + DOCKER, "missing [agent] name"),
    ("no-version", '[agent]\nname = "a"\n' + DOCKER, "missing [agent] version"),
    ("bad-name", '[agent]\nname = "Bad_Name"\nversion = "1"\n' + DOCKER, "'Bad_Name'"),
    ("long-name", f'[agent]\nname = "{"a" * 33}"\nversion = "1"\n' + DOCKER, "invalid"),
    ("double-hyphen", '[agent]\nname = "a--b"\nversion = "1"\n' + DOCKER, "invalid"),
    ("edition", "edition = 9\n" + BASE, "edition 9"),
    ("no-runtime", AGENT, "no runtime"),
    ("empty-runtimes", AGENT + "[runtimes.function]\nx = 1\n", "no runtime"),
    ("no-image", AGENT + '[runtimes.docker]\ntransport = "sse"\n', "'image'"),
    ("bad-cap", BASE + 'capAdd = ["NET ADMIN"]\n', "capAdd must list capability names"),
    ("bad-read-only", BASE + 'readOnly = "yes"\n', "[runtimes.docker] readOnly must be a valid boolean"),
    ("bad-pids", BASE + "pidsLimit = -1\n", "[runtimes.docker] pidsLimit must be greater than or equal to 0"),
    ("bad-user", BASE + 'user = "a b"\n', "user must be a user name"),
    ("bad-transport", AGENT + '[runtimes.executable]\npath = "p"\ntransport = "ws"\n', "transport 'ws'"),
    ("bad-option-type", BASE + '[options.X]\ntype = "integer"\n', "option X: unknown type 'integer'"),
    ("bad-list-type", BASE + '[options.X]\ntype = "list[list[i8]]"\n', "unknown type"),
    ("missing-option-type", BASE + "[options.X]\nrequired = true\n", "option X: missing type"),
    ("bad-option-name", BASE + '[options.9X]\ntype = "bool"\n', "option name '9X'"),
    ("bad-default", BASE + '[options.X]\ntype = "u8"\ndefault = 300\n', "default does not fit type u8"),
    ("default-kind", BASE + '[options.X]\ntype = "i32"\ndefault = "5"\n', "default does not fit type i32"),
    ("bad-regex", BASE + '[options.X]\ntype = "string"\nvalidation = { regex = "(" }\n', "does not compile"),
    ("bad-option-transport", BASE + '[options.X]\ntype = "bool"\ntransport = "x"\n', "transport 'x'"),
    (
        "missing-file-ref",
        AGENT + 'description = { type = "file", path = "nope.md" }\n' + DOCKER,
        "cannot read file 'nope.md'",
    ),
]


@pytest.mark.parametrize(("case", "text", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_manifests_are_rejected_with_reason(
    write_file: WriteFile, case: str, text: str, reason: str
) -> None:
    path = write_file(f"{case}/coral-agent.toml", text)
    with pytest.raises(ManifestInvalid) as info:
        load_manifest(path)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(path) in str(info.value)


def test_missing_file_is_manifest_invalid(tmp_path: Path) -> None:
    with pytest.raises(ManifestInvalid, match="cannot read manifest"):
        load_manifest(tmp_path / "absent" / "coral-agent.toml")
