"""The local agent registry: discovery of manifests on disk, lookup and its JSON views."""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from coral_server.registry.errors import AgentNotInRegistry, ManifestInvalid
from coral_server.registry.manifest import MANIFEST_FILENAME, AgentManifest, OptionSpec, load_manifest

__all__ = ["LATEST", "Registry", "version_key"]

logger = logging.getLogger("coral_server.registry")

LATEST = "latest"
_SEMVER_RE = re.compile(r"^v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")

VersionKey = tuple[int, tuple[int, ...], int, tuple[tuple[int, int, str], ...], str]


def version_key(version: str) -> VersionKey:
    """Sort key: semver-like versions compare numerically (pre-releases first), others after, by text."""
    match = _SEMVER_RE.match(version)
    if match is None:
        return (0, (), 0, (), version)
    core = tuple(int(part) for part in match.group(1).split("."))
    while len(core) > 1 and core[-1] == 0:  # 1.0 == 1.0.0
        core = core[:-1]
    pre = match.group(2)
    if pre is None:
        return (1, core, 1, (), version)
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (1, core, 0, ids, version)


def _local() -> dict[str, object]:
    return {"type": "local"}


class Registry:
    """Agents known to this server, by name and version; ``problems`` lists the skipped manifests."""

    def __init__(
        self,
        manifests: Iterable[AgentManifest] = (),
        problems: Iterable[ManifestInvalid] = (),
        timestamp_ms: int | None = None,
    ) -> None:
        self._agents: dict[str, dict[str, AgentManifest]] = {}
        self.problems: list[ManifestInvalid] = list(problems)
        self.timestamp_ms: int = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        for manifest in manifests:
            self.add(manifest)

    @classmethod
    def load(cls, paths: Sequence[Path]) -> Registry:
        """Scan each path recursively for ``coral-agent.toml`` (or load it, if it is a file). Never raises."""
        registry = cls()
        for root in paths:
            root = Path(root)
            try:
                if root.is_file():
                    candidates = [root]
                elif root.is_dir():
                    candidates = sorted(root.rglob(MANIFEST_FILENAME))
                else:
                    registry._problem(ManifestInvalid(root, "path does not exist"))
                    continue
            except OSError as exc:
                registry._problem(ManifestInvalid(root, f"cannot scan: {exc.strerror or exc}"))
                continue
            for candidate in candidates:
                try:
                    manifest = load_manifest(candidate)
                except ManifestInvalid as exc:
                    registry._problem(exc)
                    continue
                registry.add(manifest)
        return registry

    def _problem(self, problem: ManifestInvalid) -> None:
        logger.warning("skipping agent manifest %s: %s", problem.path, problem.reason)
        self.problems.append(problem)

    def add(self, manifest: AgentManifest) -> bool:
        """Register a manifest; a duplicate name+version is recorded as a problem and ignored."""
        versions = self._agents.setdefault(manifest.name, {})
        existing = versions.get(manifest.version)
        if existing is not None:
            self._problem(
                ManifestInvalid(
                    manifest.manifest_path,
                    f"duplicate agent {manifest.identifier}, already defined in {existing.manifest_path}",
                )
            )
            return False
        versions[manifest.version] = manifest
        return True

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __len__(self) -> int:
        return sum(len(v) for v in self._agents.values())

    def versions(self, name: str) -> list[str]:
        """Versions of an agent, lowest first (empty if unknown)."""
        return sorted(self._agents.get(name, {}), key=version_key)

    def get(self, name: str, version: str | None = None) -> AgentManifest:
        """The manifest of ``name@version``; ``None`` or ``"latest"`` means the highest version."""
        versions = self._agents.get(name)
        if not versions:
            raise AgentNotInRegistry(name, version)
        if version is None or version == LATEST:
            return versions[max(versions, key=version_key)]
        manifest = versions.get(version)
        if manifest is None:
            raise AgentNotInRegistry(name, version)
        return manifest

    def agents(self) -> list[AgentManifest]:
        """Every manifest, by name then version."""
        return [self._agents[name][v] for name in sorted(self._agents) for v in self.versions(name)]

    def listing(self) -> list[dict[str, object]]:
        """The JSON of ``GET /api/v1/registry``."""
        agents = [{"name": name, "versions": self.versions(name)} for name in sorted(self._agents)]
        return [{"identifier": _local(), "timestamp": self.timestamp_ms, "agents": agents}]

    def detail(self, name: str, version: str | None) -> dict[str, object]:
        """The JSON of ``GET /api/v1/registry/local/{name}/{version}``."""
        manifest = self.get(name, version)
        return {"registryAgent": manifest_json(manifest), "restrictions": [_local()]}


def manifest_json(manifest: AgentManifest) -> dict[str, object]:
    """The ``registryAgent`` JSON of a manifest (null fields omitted, secret defaults never shown)."""
    info: dict[str, object] = {}
    if manifest.description is not None:
        info["description"] = manifest.description
    if manifest.summary is not None:
        info["summary"] = manifest.summary
    info["capabilities"] = list(manifest.capabilities)
    info["identifier"] = {"name": manifest.name, "version": manifest.version, "registrySourceId": _local()}

    runtimes: dict[str, object] = {}
    if manifest.executable is not None:
        exe = manifest.executable
        runtimes["executable"] = {
            "path": exe.path,
            "arguments": list(exe.arguments),
            "transport": exe.transport,
        }
    if manifest.docker is not None:
        docker: dict[str, object] = {"image": manifest.docker.image}
        if manifest.docker.command is not None:
            docker["command"] = list(manifest.docker.command)
        docker["transport"] = manifest.docker.transport
        runtimes["docker"] = docker

    options = {name: option_json(spec) for name, spec in manifest.options.items()}
    return {"info": info, "runtimes": runtimes, "options": options}


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_json_default(v) for v in value]
    return value


def option_json(spec: OptionSpec) -> dict[str, object]:
    """One option's JSON; blob defaults as base64; ``secret``/``base64`` appear only when true."""
    out: dict[str, object] = {"type": spec.type, "required": spec.required}
    if spec.description is not None:
        out["description"] = spec.description
    if spec.default is not None and not spec.secret:
        out["default"] = _json_default(spec.default)
    if spec.display is not None:
        out["display"] = dict(spec.display)
    if spec.validation is not None:
        out["validation"] = dict(spec.validation)
    out["transport"] = spec.transport
    if spec.secret:
        out["secret"] = True
    if spec.base64:
        out["base64"] = True
    return out
