"""Domain exceptions raised by the agent registry (lookups, manifests, option values)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AgentNotInRegistry", "FieldError", "ManifestInvalid", "OptionsInvalid", "RegistryError"]


class RegistryError(Exception):
    """Base class of every registry error."""


class AgentNotInRegistry(RegistryError, LookupError):
    """The requested agent name/version is not known to the registry."""

    def __init__(self, name: str, version: str | None) -> None:
        self.name = name
        self.version = version
        shown = version if version is not None else "latest"
        super().__init__(f"agent {name}@{shown} is not in the registry")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of a request, e.g. ``options.MAX_ITERATIONS.value``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class OptionsInvalid(RegistryError, ValueError):
    """Every problem found while resolving a session's option values, reported at once."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("invalid options: " + "; ".join(str(e) for e in self.errors))


class ManifestInvalid(RegistryError, ValueError):
    """A ``coral-agent.toml`` manifest that cannot be used, with a readable reason."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
