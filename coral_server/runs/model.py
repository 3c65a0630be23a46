"""The run record and its state machine: statuses, exit reasons, triggers and the allowed transitions."""

from __future__ import annotations

from coral_server.store.runs import (
    ACTIVE,
    EXIT_REASONS,
    FINAL,
    RUN_STATUSES,
    TRIGGERS,
    ExitReason,
    Run,
    RunStatus,
    Trigger,
)

__all__ = [
    "ACTIVE",
    "EXIT_REASONS",
    "FINAL",
    "RUN_STATUSES",
    "TRANSITIONS",
    "TRIGGERS",
    "ExitReason",
    "InvalidTransition",
    "Run",
    "RunStatus",
    "Trigger",
    "check_transition",
]

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    "pending": frozenset({"running", "failed", "killed"}),
    "running": frozenset({"waiting_input", "completed", "failed", "killed"}),
    "waiting_input": frozenset({"running", "completed", "failed", "killed"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "killed": frozenset(),
}


class InvalidTransition(Exception):
    """A run was asked to move to a status its current one does not lead to."""

    def __init__(self, run_id: int, current: str, wanted: str) -> None:
        super().__init__(f"run {run_id} cannot go from {current} to {wanted}")
        self.run_id, self.current, self.wanted = run_id, current, wanted


def check_transition(run_id: int, current: RunStatus, wanted: RunStatus) -> None:
    if wanted not in TRANSITIONS[current]:
        raise InvalidTransition(run_id, current, wanted)
