"""Supervised processes in the store: what each instance started, so a crash's orphans can be killed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One supervised unit: a process group or a container, started by an instance for an owner.

    `proc_start` is the process's start time in clock ticks (field 22 of /proc/<pid>/stat): a pid the
    kernel has since given to another process does not match it, so it is never killed by mistake.
    """

    id: str  # unique per supervised unit
    instance: str  # the server instance that started it
    owner_kind: str  # "session" | "run"
    owner_id: str
    name: str  # the agent's name, or "cli"
    runtime: str  # "executable" | "docker"
    pid: int | None  # the process-group leader
    proc_start: int | None
    container: str | None
    started_at: float  # Unix s


class ProcessStore(Protocol):
    """What the supervisor has running (`store.processes`); each method is one atomic unit of work."""

    async def add(self, record: ProcessRecord) -> None:
        """Record a started unit, or replace the record with the same id (e.g. once its pid is known)."""
        ...

    async def remove(self, id: str) -> None:
        """Forget a unit that has ended (nothing happens if there is no such record)."""
        ...

    async def listing(self, instance: str | None = None) -> list[ProcessRecord]:
        """The recorded units (of one instance, or of all), oldest first."""
        ...
