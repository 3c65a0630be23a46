"""One ``coral-agent.toml`` agent manifest: pydantic models read it, frozen dataclasses carry it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from coral_server.registry.editions import Generation, Transport, default_transport, manifest_generation
from coral_server.registry.errors import ManifestInvalid
from coral_server.registry.values import SCALAR_TYPES, canonical_type, check_value, is_list_type, item_type

__all__ = [
    "CONTAINER_OVERRIDES",
    "MANIFEST_FILENAME",
    "AgentManifest",
    "ContainerRequests",
    "DockerSection",
    "ExecutableSection",
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
class ExecutableSection:
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
class DockerSection:
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
    executable: ExecutableSection | None = None
    docker: DockerSection | None = None
    capabilities: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)

    @property
    def identifier(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def generation(self) -> Generation:
        """The generation of the reference server this manifest was written for."""
        return manifest_generation(self.edition)


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
    path = path.absolute()
    try:
        parsed = _Manifest.model_validate(data, context={"root": path.parent})
    except ValidationError as exc:
        raise ManifestInvalid(path, "; ".join(_reason(e) for e in exc.errors())) from None
    return parsed.to_manifest(path)


# -- how a problem reads -----------------------------------------------------------------------------


def _bad(reason: str) -> PydanticCustomError:
    """A problem in the manifest's words: it follows the table's name (``[agent]``, ``option X:``)."""
    return PydanticCustomError("manifest", "{reason}", {"reason": reason})


def _reason(error: ErrorDetails) -> str:
    """One problem, placed as the manifest names it: ``[agent] name``, ``option X: default``."""
    rest: list[int | str]
    match list(error["loc"]):
        case ["agent", *rest]:
            head = "[agent]"
        case ["runtimes", kind, *rest]:
            head = f"[runtimes.{kind}]"
        case ["options", name, *rest]:
            head = f"option {name}:"
        case rest:
            head = ""
    where = (head + "".join(f"[{p}]" if isinstance(p, int) else f" {p}" for p in rest)).strip()
    if error["type"] == "manifest":
        return f"{head} {error['ctx']['reason']}".strip()
    if error["type"] == "missing":
        return f"missing {where}" if rest else f"missing {head} table"
    if error["type"] in ("model_type", "dict_type"):
        return f"{where} must be a table"
    return f"{where} {error['msg'].replace('Input should be', 'must be')}"


# -- the models of the file ----------------------------------------------------------------------------


class _Table(BaseModel):
    """A table of the manifest: TOML types as they are (no coercion); unknown keys are tolerated."""

    model_config = ConfigDict(strict=True)


def _text(value: object, where: str, root: Path) -> object:
    """A string given inline, as ``{type="string", value=..}`` or as ``{type="file", path=..}``."""
    if not isinstance(value, dict):
        return value  # a string, or a type pydantic reports
    kind, inner, rel = value.get("type"), value.get("value"), value.get("path")
    if kind == "string":
        if not isinstance(inner, str):
            raise _bad(f"{where}: a string table needs a string 'value'")
        return inner
    if kind != "file":
        raise _bad(f"{where}: unknown string source type {kind!r} (expected 'string' or 'file')")
    if not isinstance(rel, str) or not rel:
        raise _bad(f"{where}: a file table needs a string 'path'")
    try:
        return (root / rel).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _bad(f"{where}: cannot read file {rel!r}: {reason}") from None


def _root(info: ValidationInfo) -> Path:
    """The manifest's folder, that file references are relative to (``load_manifest`` passes it)."""
    return Path((info.context or {}).get("root", "."))


Text = Annotated[str, BeforeValidator(lambda v, info: _text(v, info.field_name or "", _root(info)))]


def _agent_name(name: str) -> str:
    if not 1 <= len(name) <= AGENT_NAME_MAX or not AGENT_NAME_RE.match(name):
        raise _bad(
            f"name {name!r} is invalid: use 1 to {AGENT_NAME_MAX} lowercase letters, digits "
            "and single hyphens between them"
        )
    return name


def _version(version: str) -> str:
    if not version.strip():
        raise _bad(f"version must be a non-empty string, got {version!r}")
    if "/" in version or any(c.isspace() for c in version):
        raise _bad(f"version {version!r} must not contain '/' or whitespace")
    return version


class _Agent(_Table):
    name: Annotated[str, AfterValidator(_agent_name)]
    version: Annotated[str, AfterValidator(_version)]
    description: Text | None = None
    summary: Text | None = None
    capabilities: list[str] | None = None
    keywords: list[str] | None = None


def _transport(value: object) -> object:
    normal = value.strip().lower().replace("-", "_") if isinstance(value, str) else value
    if normal is None or normal in ("streamable_http", "sse"):
        return normal
    raise _bad(f"transport {value!r} is invalid (expected 'streamable_http' or 'sse')")


class _Runtime(_Table):
    transport: Annotated[RuntimeTransport | None, BeforeValidator(_transport)] = None  # None: the edition's


class _Executable(_Runtime):
    path: str | None = None
    arguments: list[str] = []
    command: list[str] | None = None  # legacy: the program, then its first arguments

    @model_validator(mode="after")
    def _has_program(self) -> Self:
        if self.path is None and self.command is None:
            raise _bad("needs 'path' (or a legacy 'command' list)")
        if self.path is None and not self.command:
            raise _bad("command must not be empty")
        if not self.argv()[0]:
            raise _bad("path must be a non-empty string")
        return self

    def argv(self) -> list[str]:
        program = [self.path] if self.path is not None else (self.command or [])
        return [*program, *self.arguments]

    def section(self, default: RuntimeTransport) -> ExecutableSection:
        program, *arguments = self.argv()
        return ExecutableSection(program, arguments, self.transport or default)


def _capabilities(names: list[str]) -> list[str]:
    if not all(re.fullmatch(r"[A-Za-z_]+", name) for name in names):
        raise _bad("capAdd must list capability names (e.g. NET_BIND_SERVICE)")
    return names


def _container_user(user: str) -> str:
    if not user or any(c.isspace() for c in user):
        raise _bad("user must be a user name or uid[:gid]")
    return user


class _Docker(_Runtime):
    image: str = ""
    command: list[str] | None = None
    # What the container asks beyond the server's hardening (applied where the operator allows).
    capAdd: Annotated[list[str], AfterValidator(_capabilities)] | None = None
    noNewPrivileges: bool | None = None
    pidsLimit: Annotated[int, Field(ge=0)] | None = None  # 0: no limit
    readOnly: bool | None = None
    user: Annotated[str, AfterValidator(_container_user)] | None = None

    @model_validator(mode="after")
    def _has_image(self) -> Self:
        if not self.image:
            raise _bad("needs a non-empty string 'image'")
        return self

    def section(self, default: RuntimeTransport) -> DockerSection:
        container = ContainerRequests(
            cap_add=None if self.capAdd is None else tuple(self.capAdd),
            no_new_privileges=self.noNewPrivileges,
            pids_limit=self.pidsLimit,
            read_only=self.readOnly,
            user=self.user,
        )
        return DockerSection(self.image, self.command, self.transport or default, container)


class _Runtimes(_Table):
    executable: _Executable | None = None
    docker: _Docker | None = None


def _number(value: object, info: ValidationInfo) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise _bad(f"validation {info.field_name} must be a number")


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _bad(f"validation regex {pattern!r} does not compile: {exc}") from None
    return pattern


Number = Annotated[object, AfterValidator(_number)]
Size = Annotated[int, Field(ge=0)]


class _Validation(_Table, extra="allow"):  # rules it does not know are kept, and ignored
    min: Number = None
    max: Number = None
    min_length: Size | None = None
    max_length: Size | None = None
    min_size: Size | None = None
    max_size: Size | None = None
    regex: Annotated[str, AfterValidator(_regex)] | None = None
    variants: list[object] | None = None


class _Display(_Table, extra="allow"):  # a UI's hints; label and description may come from files
    label: Text | None = None
    description: Text | None = None


def _option_transport(value: object) -> object:
    if value in ("env", "fs"):
        return value
    raise _bad(f"transport {value!r} is invalid (expected 'env' or 'fs')")


class _Option(_Table):
    type: str = ""  # made canonical below (number -> f64, secret -> a secret string)
    required: bool = False
    secret: bool = False
    base64: bool = False
    description: Text | None = None
    display: _Display | None = None
    validation: _Validation | None = None
    transport: Annotated[OptionTransport, BeforeValidator(_option_transport)] = "env"
    default: object = None

    @model_validator(mode="after")
    def _typed(self, info: ValidationInfo) -> Self:
        canonical = canonical_type(self.type) if self.type else None
        if canonical is None:
            expected = ", ".join([*SCALAR_TYPES, "list[<type>]", "secret", "number"])
            raise _bad(
                f"unknown type {self.type!r} (expected one of {expected})" if self.type else "missing type"
            )
        self.type, implied_secret = canonical
        self.secret = self.secret or implied_secret
        self.base64 = self.base64 and item_type(self.type) == "string"
        for variant in self.validation.variants or [] if self.validation else []:
            if check_value(item_type(self.type), variant, "variant")[1]:
                raise _bad(f"validation variant {variant!r} does not fit type {self.type}")
        if self.default is not None:
            if self.type == "string":
                self.default = _text(self.default, "default", _root(info))
            typed, problems = check_value(self.type, self.default, "default", secret=self.secret)
            if problems:
                raise _bad(f"default does not fit type {self.type}: {problems[0].message}")
            self.default = typed
        return self

    def spec(self, name: str) -> OptionSpec:
        # What the file left out takes the dataclass's defaults; display and validation stay as written.
        return OptionSpec(name=name, **self.model_dump(exclude_unset=True))


def _edition(value: object) -> object:
    if value is None or (type(value) is int and value in SUPPORTED_EDITIONS):
        return value
    raise _bad(f"unsupported edition {value!r} (supported: 1 to 4, or none)")


class _Manifest(_Table):
    edition: Annotated[int | None, BeforeValidator(_edition)] = None
    agent: _Agent
    runtimes: _Runtimes = Field(default_factory=_Runtimes)
    options: dict[str, _Option] = {}
    capabilities: list[str] | None = None  # older manifests put these two beside [agent]
    keywords: list[str] | None = None

    @field_validator("options", mode="before")
    @classmethod
    def _named(cls, value: object) -> object:
        """Legacy ``[[options]]`` tables carry their name; every name must be a valid variable name."""
        if isinstance(value, list):
            tables: dict[str, object] = {}
            for item in value:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise _bad("each [[options]] entry needs a string 'name'")
                if item["name"] in tables:
                    raise _bad(f"option {item['name']} is declared twice")
                tables[item["name"]] = item
            value = tables
        for name in value if isinstance(value, dict) else ():
            if not OPTION_NAME_RE.match(name):
                rule = "letters, digits, '_' and '$', not starting with a digit"
                raise _bad(f"option name {name!r} is invalid ({rule})")
        return value

    @model_validator(mode="after")
    def _runnable(self) -> Self:
        if self.runtimes.executable is None and self.runtimes.docker is None:
            raise _bad("no runtime: add [runtimes.executable] or [runtimes.docker]")
        return self

    def to_manifest(self, path: Path) -> AgentManifest:
        default = default_transport(self.edition)  # of a runtime that names none
        exe, docker, agent = self.runtimes.executable, self.runtimes.docker, self.agent
        return AgentManifest(
            name=agent.name,
            version=agent.version,
            description=agent.description,
            summary=agent.summary,
            edition=self.edition,
            root=path.parent,
            manifest_path=path,
            options={name: option.spec(name) for name, option in self.options.items()},
            executable=exe.section(default) if exe else None,
            docker=docker.section(default) if docker else None,
            capabilities=agent.capabilities if agent.capabilities is not None else self.capabilities or [],
            keywords=agent.keywords if agent.keywords is not None else self.keywords or [],
        )
