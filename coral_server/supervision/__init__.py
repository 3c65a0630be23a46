"""Supervision: processes and containers started for an owner (a session's agents, a run's CLI)."""

from coral_server.supervision.supervisor import (
    Crew,
    Supervisor,
    Unit,
    UnitStatus,
    owner_alive,
    process_start,
    server_owner,
)

__all__ = ["Crew", "Supervisor", "Unit", "UnitStatus", "owner_alive", "process_start", "server_owner"]
