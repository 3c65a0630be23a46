"""Supervision: processes and containers started for an owner (a session's agents, a run's CLI)."""

from coral_server.supervision.marks import Mark, process_start
from coral_server.supervision.supervisor import (
    Crew,
    Supervisor,
    Unit,
    UnitStatus,
    owner_alive,
    server_owner,
)

__all__ = [
    "Crew",
    "Mark",
    "Supervisor",
    "Unit",
    "UnitStatus",
    "owner_alive",
    "process_start",
    "server_owner",
]
