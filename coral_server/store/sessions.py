"""Live sessions in the store: enough to close a crashed instance's sessions with an end report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class SessionNotRecorded(LookupError):
    """A journal entry was appended for a session the store does not hold."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A live session: who runs it, when it began, and what its end report needs (JSON, opaque here)."""

    id: str
    namespace: str
    instance: str  # the server instance that runs it
    created_at_ms: int  # Unix ms
    end_webhook: bytes | None  # what the end report needs (None: no report to send)
    agents: bytes


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One appended fact of a session (a thread, a message, ...): `seq` is 1, 2, ... per session."""

    seq: int
    kind: str
    body: bytes


class SessionStore(Protocol):
    """Live sessions and their journals (`store.sessions`); each method is one atomic unit of work."""

    async def add(self, record: SessionRecord) -> None:
        """Record a live session, or replace the record with the same id (its journal is kept)."""
        ...

    async def remove(self, id: str) -> None:
        """Forget a session and its journal (nothing happens if there is no such record)."""
        ...

    async def listing(self, instance: str | None = None) -> list[SessionRecord]:
        """The recorded sessions (of one instance, or of all), oldest first."""
        ...

    async def append(self, session_id: str, kind: str, body: bytes) -> int:
        """Add one entry to a session's journal; its seq (raises `SessionNotRecorded`)."""
        ...

    async def append_many(self, entries: Sequence[tuple[str, str, bytes]]) -> None:
        """Add (session_id, kind, body) entries, in order, in one unit of work: all or none
        (raises `SessionNotRecorded` if one names a session the store does not hold)."""
        ...

    async def journal(self, id: str) -> list[JournalEntry]:
        """A session's journal in the order it was appended (empty if there is none)."""
        ...
