"""Processes and containers the supervisor started (placeholder until the store branch lands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    id: str
    instance: str
    owner_kind: str
    owner_id: str
    name: str
    runtime: str
    pid: int | None
    proc_start: int | None
    container: str | None
    started_at: float


class ProcessStore(Protocol):
    async def add(self, record: ProcessRecord) -> None: ...

    async def remove(self, id: str) -> None: ...

    async def listing(self, instance: str | None = None) -> list[ProcessRecord]: ...
