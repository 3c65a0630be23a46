"""What the event feeds say of a session or a namespace at one instant: frozen records, no wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# pending: created, agents not launched yet; running: launched; closing: stopping its agents;
# closed: every agent stopped (its state may stay readable for its persistence window).
SessionPhase = Literal["pending", "running", "closing", "closed"]


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    delete_on_last_exit: bool
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session's identity and phase when an event was published (later changes do not show)."""

    id: str
    namespace: NamespaceInfo
    created_at: int
    phase: SessionPhase
    executed_at: int | None
    closing_at: int | None
    closed_at: int | None
    annotations: dict[str, str]
