"""Parsing of one ``coral-agent.toml`` agent manifest into frozen dataclasses."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from coral_server.registry.errors import ManifestInvalid
from coral_server.registry.generations import Generation, Transport, default_transport, manifest_generation
from coral_server.registry.values import (
    SCALAR_TYPES,
    canonical_type,
    check_value,
    is_list_type,
    item_type,
    json_type_name,
)

__all__ = [
    "CONTAINER_OVERRIDES",
    "MANIFEST_FILENAME",
    "AgentManifest",
    "ContainerRequests",
    "DockerRuntime",
    "ExecutableRuntime",
    "OptionSpec",
    "OptionTransport",
    "RuntimeTransport",
    "load_manifest",
]

MANIFEST_FILENAME = "coral-agent.toml"
AGENT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9]*(-[a-z0-9]+)*)?$")
AGENT_NAME_MAX = 32
OPTION_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z_$0-9]*$")
SUPPORTED_EDITIONS = range(1, 5)

RuntimeTransport = Transport
OptionTransport = Literal["env", "fs"]


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One declared option. ``type`` is canonical (``number`` -> ``f64``, ``secret`` -> ``string``).

    ``default`` is already typed (``bytes`` for blobs, ``float`` for f32/f64) or ``None``.
    """

    name: str
    type: str
    required: bool = False
    default: object = None
    description: str | None = None
    display: dict[str, object] | None = None
    validation: dict[str, object] | None = None
    transport: OptionTransport = "env"
    secret: bool = False
    base64: bool = False

    def __repr__(self) -> str:
        default = "***" if self.secret and self.default is not None else repr(self.default)
        return (
            f"OptionSpec(name={self.name!r}, type={self.type!r}, required={self.required}, "
            f"default={default}, transport={self.transport!r}, secret={self.secret})"
        )

    @property
    def is_list(self) -> bool:
        return is_list_type(self.type)

    @property
    def item_type(self) -> str:
        return item_type(self.type)


@dataclass(frozen=True, slots=True)
class ExecutableRuntime:
    """Run the agent as a local process: ``path`` (relative to the manifest folder or on PATH)."""

    path: str
    arguments: list[str] = field(default_factory=list)
    transport: RuntimeTransport = "streamable_http"


# The [runtimes.docker] keys by which a manifest asks to change the server's container hardening;
# each applies only if the operator allows it (setting docker.manifestOverrides).
CONTAINER_OVERRIDES = ("capAdd", "noNewPrivileges", "pidsLimit", "readOnly", "user")


@dataclass(frozen=True, slots=True)
class ContainerRequests:
    """What a manifest asks of its container beyond the server's hardening (None: nothing)."""

    cap_add: tuple[str, ...] | None = None
    no_new_privileges: bool | None = None
    pids_limit: int | None = None
    read_only: bool | None = None
    user: str | None = None

    def asked(self) -> list[str]:
        """The manifest keys (CONTAINER_OVERRIDES) this asks to change."""
        values = (self.cap_add, self.no_new_privileges, self.pids_limit, self.read_only, self.user)
        return [key for key, value in zip(CONTAINER_OVERRIDES, values, strict=True) if value is not None]


@dataclass(frozen=True, slots=True)
class DockerRuntime:
    """Run the agent in a container from ``image``."""

    image: str
    command: list[str] | None = None
    transport: RuntimeTransport = "streamable_http"
    container: ContainerRequests = ContainerRequests()


@dataclass(frozen=True, slots=True)
class AgentManifest:
    """A parsed agent manifest; ``root`` is the folder that holds ``manifest_path``."""

    name: str
    version: str
    description: str | None
    summary: str | None
    edition: int | None
    root: Path
    manifest_path: Path
    options: dict[str, OptionSpec] = field(default_factory=dict)
    executable: ExecutableRuntime | None = None
    docker: DockerRuntime | None = None
    capabilities: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)

    @property
    def identifier(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def generation(self) -> Generation:
        """The generation of the reference server this manifest was written for."""
        return manifest_generation(self.edition)


class _Bad(Exception):
    """Internal: a reason the manifest is invalid (wrapped into ManifestInvalid with the path)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_manifest(path: Path) -> AgentManifest:
    """Read and validate the manifest at ``path``; raise ``ManifestInvalid`` with a readable reason."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestInvalid(path, f"cannot read manifest: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestInvalid(path, "manifest is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestInvalid(path, f"TOML syntax error: {exc}") from None
    try:
        return _parse(data, path.absolute())
    except _Bad as exc:
        raise ManifestInvalid(path, exc.reason) from None


def _parse(data: Mapping[str, object], path: Path) -> AgentManifest:
    root = path.parent
    edition = data.get("edition")
    if edition is not None and (
        not isinstance(edition, int) or isinstance(edition, bool) or edition not in SUPPORTED_EDITIONS
    ):
        raise _Bad(f"unsupported edition {edition!r} (supported: 1 to 4, or none)")

    agent = data.get("agent")
    if agent is None:
        raise _Bad("missing [agent] table")
    if not isinstance(agent, Mapping):
        raise _Bad(f"[agent] must be a table, got {json_type_name(agent)}")
    name = agent.get("name")
    if name is None:
        raise _Bad("missing [agent] name")
    if not isinstance(name, str):
        raise _Bad(f"[agent] name must be a string, got {json_type_name(name)}")
    if not 1 <= len(name) <= AGENT_NAME_MAX or not AGENT_NAME_RE.match(name):
        raise _Bad(
            f"[agent] name {name!r} is invalid: use 1 to {AGENT_NAME_MAX} lowercase letters, digits "
            "and single hyphens between them"
        )
    version = agent.get("version")
    if version is None:
        raise _Bad("missing [agent] version")
    if not isinstance(version, str) or not version.strip():
        raise _Bad(f"[agent] version must be a non-empty string, got {version!r}")
    if "/" in version or any(c.isspace() for c in version):
        raise _Bad(f"[agent] version {version!r} must not contain '/' or whitespace")

    description = _optional_text(agent.get("description"), "[agent] description", root)
    summary = _optional_text(agent.get("summary"), "[agent] summary", root)
    capabilities = _string_list(agent.get("capabilities", data.get("capabilities")), "capabilities")
    keywords = _string_list(agent.get("keywords", data.get("keywords")), "keywords")

    executable, docker = _runtimes(data.get("runtimes"), default_transport(edition))
    options = _options(data.get("options"), root)
    return AgentManifest(
        name=name,
        version=version,
        description=description,
        summary=summary,
        edition=edition,
        root=root,
        manifest_path=path,
        options=options,
        executable=executable,
        docker=docker,
        capabilities=capabilities,
        keywords=keywords,
    )


# -- strings ---------------------------------------------------------------------------------------


def _text(value: object, where: str, root: Path) -> str:
    """A string given inline, as ``{type="string", value=..}`` or as ``{type="file", path=..}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "string":
            inner = value.get("value")
            if not isinstance(inner, str):
                raise _Bad(f"{where}: a string table needs a string 'value'")
            return inner
        if kind == "file":
            rel = value.get("path")
            if not isinstance(rel, str) or not rel:
                raise _Bad(f"{where}: a file table needs a string 'path'")
            target = root / rel
            try:
                return target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise _Bad(f"{where}: cannot read file {rel!r}: {reason}") from None
        raise _Bad(f"{where}: unknown string source type {kind!r} (expected 'string' or 'file')")
    raise _Bad(f"{where}: expected a string, got {json_type_name(value)}")


def _optional_text(value: object, where: str, root: Path) -> str | None:
    return None if value is None else _text(value, where, root)


def _string_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{where} must be a list of strings")
    return [str(v) for v in value]


# -- runtimes --------------------------------------------------------------------------------------


def _transport(value: object, where: str, default: RuntimeTransport) -> RuntimeTransport:
    if value is None:
        return default
    if isinstance(value, str):
        normal = value.strip().lower().replace("-", "_")
        if normal == "streamable_http":
            return "streamable_http"
        if normal == "sse":
            return "sse"
    raise _Bad(f"{where} transport {value!r} is invalid (expected 'streamable_http' or 'sse')")


def _runtimes(
    value: object, default: RuntimeTransport
) -> tuple[ExecutableRuntime | None, DockerRuntime | None]:
    """The runtimes; one that names no transport gets ``default`` (its generation's)."""
    if value is None:
        raise _Bad("no runtime: add [runtimes.executable] or [runtimes.docker]")
    if not isinstance(value, Mapping):
        raise _Bad("[runtimes] must be a table")
    executable: ExecutableRuntime | None = None
    docker: DockerRuntime | None = None

    exe = value.get("executable")
    if exe is not None:
        where = "[runtimes.executable]"
        if not isinstance(exe, Mapping):
            raise _Bad(f"{where} must be a table")
        path = exe.get("path")
        arguments = _string_list(exe.get("arguments"), f"{where} arguments")
        if path is None:
            command = exe.get("command")
            if command is None:
                raise _Bad(f"{where} needs 'path' (or a legacy 'command' list)")
            command_list = _string_list(command, f"{where} command")
            if not command_list:
                raise _Bad(f"{where} command must not be empty")
            path, arguments = command_list[0], command_list[1:] + arguments
        if not isinstance(path, str) or not path:
            raise _Bad(f"{where} path must be a non-empty string")
        executable = ExecutableRuntime(path, arguments, _transport(exe.get("transport"), where, default))

    dock = value.get("docker")
    if dock is not None:
        where = "[runtimes.docker]"
        if not isinstance(dock, Mapping):
            raise _Bad(f"{where} must be a table")
        image = dock.get("image")
        if not isinstance(image, str) or not image:
            raise _Bad(f"{where} needs a non-empty string 'image'")
        raw_command = dock.get("command")
        command_opt = None if raw_command is None else _string_list(raw_command, f"{where} command")
        docker = DockerRuntime(
            image,
            command_opt,
            _transport(dock.get("transport"), where, default),
            _container_requests(dock, where),
        )

    if executable is None and docker is None:
        raise _Bad("no runtime: add [runtimes.executable] or [runtimes.docker]")
    return executable, docker


def _container_requests(table: Mapping[str, object], where: str) -> ContainerRequests:
    cap_add = table.get("capAdd")
    caps = None if cap_add is None else tuple(_string_list(cap_add, f"{where} capAdd"))
    if caps is not None and not all(re.fullmatch(r"[A-Za-z_]+", c) for c in caps):
        raise _Bad(f"{where} capAdd must list capability names (e.g. NET_BIND_SERVICE)")
    flags: dict[str, bool | None] = {}
    for key in ("noNewPrivileges", "readOnly"):
        value = table.get(key)
        if value is not None and not isinstance(value, bool):
            raise _Bad(f"{where} {key} must be true or false")
        flags[key] = value
    pids = table.get("pidsLimit")
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int) or pids < 0):
        raise _Bad(f"{where} pidsLimit must be an integer >= 0 (0: no limit)")
    user = table.get("user")
    if user is not None and (not isinstance(user, str) or not user or any(c.isspace() for c in user)):
        raise _Bad(f"{where} user must be a user name or uid[:gid]")
    return ContainerRequests(
        cap_add=caps,
        no_new_privileges=flags["noNewPrivileges"],
        pids_limit=pids,
        read_only=flags["readOnly"],
        user=user,
    )


# -- options ---------------------------------------------------------------------------------------


def _options(value: object, root: Path) -> dict[str, OptionSpec]:
    if value is None:
        return {}
    entries: list[tuple[str, object]]
    if isinstance(value, Mapping):
        entries = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):  # legacy: [[options]] tables carrying a name
        entries = []
        for item in value:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise _Bad("each [[options]] entry needs a string 'name'")
            entries.append((str(item["name"]), item))
    else:
        raise _Bad("[options] must be a table")
    options: dict[str, OptionSpec] = {}
    for name, table in entries:
        if name in options:
            raise _Bad(f"option {name} is declared twice")
        options[name] = _option(name, table, root)
    return options


def _flag(table: Mapping[str, object], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise _Bad(f"{where} {key} must be true or false")
    return value


def _option(name: str, table: object, root: Path) -> OptionSpec:
    where = f"option {name}:"
    if not OPTION_NAME_RE.match(name):
        raise _Bad(
            f"option name {name!r} is invalid (letters, digits, '_' and '$', not starting with a digit)"
        )
    if not isinstance(table, Mapping):
        raise _Bad(f"{where} must be a table")
    raw_type = table.get("type")
    if raw_type is None:
        raise _Bad(f"{where} missing type")
    canonical = canonical_type(raw_type) if isinstance(raw_type, str) else None
    if canonical is None:
        expected = ", ".join([*SCALAR_TYPES, "list[<type>]", "secret", "number"])
        raise _Bad(f"{where} unknown type {raw_type!r} (expected one of {expected})")
    type_, implied_secret = canonical
    secret = _flag(table, "secret", where) or implied_secret
    base64_flag = _flag(table, "base64", where) and item_type(type_) == "string"
    required = _flag(table, "required", where)
    description = _optional_text(table.get("description"), f"{where} description", root)

    display: dict[str, object] | None = None
    raw_display = table.get("display")
    if raw_display is not None:
        if not isinstance(raw_display, Mapping):
            raise _Bad(f"{where} display must be a table")
        display = dict(raw_display)
        for key in ("label", "description"):
            if key in display:
                display[key] = _text(display[key], f"{where} display {key}", root)

    validation: dict[str, object] | None = None
    raw_validation = table.get("validation")
    if raw_validation is not None:
        if not isinstance(raw_validation, Mapping):
            raise _Bad(f"{where} validation must be a table")
        validation = dict(raw_validation)
        _check_validation(validation, type_, where)

    transport = table.get("transport", "env")
    if transport not in ("env", "fs"):
        raise _Bad(f"{where} transport {transport!r} is invalid (expected 'env' or 'fs')")

    default = table.get("default")
    if default is not None:
        if type_ == "string":
            default = _text(default, f"{where} default", root)
        typed, problems = check_value(type_, default, "default", secret=secret)
        if problems:
            raise _Bad(f"{where} default does not fit type {type_}: {problems[0].message}")
        default = typed

    return OptionSpec(
        name=name,
        type=type_,
        required=required,
        default=default,
        description=description,
        display=display,
        validation=validation,
        transport="fs" if transport == "fs" else "env",
        secret=secret,
        base64=base64_flag,
    )


def _check_validation(rules: Mapping[str, object], type_: str, where: str) -> None:
    for key in ("min", "max"):
        value = rules.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _Bad(f"{where} validation {key} must be a number")
    for key in ("min_length", "max_length", "min_size", "max_size"):
        value = rules.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _Bad(f"{where} validation {key} must be a non-negative integer")
    pattern = rules.get("regex")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _Bad(f"{where} validation regex must be a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Bad(f"{where} validation regex {pattern!r} does not compile: {exc}") from None
    variants = rules.get("variants")
    if variants is not None:
        if not isinstance(variants, list):
            raise _Bad(f"{where} validation variants must be a list")
        for variant in variants:
            _, problems = check_value(item_type(type_), variant, "variant")
            if problems:
                raise _Bad(f"{where} validation variant {variant!r} does not fit type {type_}")
