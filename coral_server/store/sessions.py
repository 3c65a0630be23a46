"""Live sessions and their journals (placeholder until the store branch lands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    namespace: str
    instance: str
    created_at_ms: int
    end_webhook: bytes | None
    agents: bytes


class SessionStore(Protocol):
    async def add(self, record: SessionRecord) -> None: ...

    async def remove(self, id: str) -> None: ...

    async def listing(self, instance: str | None = None) -> list[SessionRecord]: ...

    async def journal(self, id: str) -> list[tuple[str, bytes]]: ...

    async def append(self, session_id: str, entries: list[tuple[str, bytes]]) -> None: ...
