"""Threads and messages: the conversation records of a session."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    """ISO-8601 UTC form of a millisecond timestamp (the reference server's MCP spelling)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Message:
    id: str
    thread_id: str
    sender: str
    text: str
    mentions: tuple[str, ...]
    timestamp: int

    def to_mcp(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "threadId": self.thread_id,
            "text": self.text,
            "senderName": self.sender,
            "mentionNames": list(self.mentions),
            "timestamp": iso(self.timestamp),
        }


@dataclass(slots=True)
class Thread:
    id: str
    name: str
    creator: str
    participants: list[str]
    timestamp: int
    messages: list[Message] = field(default_factory=list)
    closed: bool = False
    summary: str | None = None
    closed_at: int | None = None

    def copy(self) -> Thread:
        """The thread as it is now, unchanged by what happens to it later (what an event carries)."""
        return replace(self, participants=list(self.participants), messages=list(self.messages))

    def to_mcp(self) -> dict[str, Any]:
        state: dict[str, Any] = {"state": "open"}
        if self.closed:
            state = {"state": "closed", "summary": self.summary or "", "timestamp": iso(self.closed_at or 0)}
        return {
            "id": self.id,
            "name": self.name,
            "creatorName": self.creator,
            "participants": list(self.participants),
            "messages": [m.to_mcp() for m in self.messages],
            "state": state,
            "timestamp": iso(self.timestamp),
        }


def new_id() -> str:
    """A random UUID string, the reference server's id format for threads and messages."""
    return str(uuid.uuid4())
