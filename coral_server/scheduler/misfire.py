"""Misfires: which of a schedule's fire times to run when the scheduler looks at it late.

One rule, for a scheduler that wakes a few milliseconds late and for one that was down for a day:
of the fire times missed since the last fire (after `last_fire`, up to and including `now`), the most
recent one runs *once*, standing for all of them (coalesced), if it is at most `grace` old; if it is
older, nothing runs and the schedule skips to its next time. Missed times are never run one by one:
after downtime, a burst of stale runs does more harm than good, and the latest one carries the
freshest intent. With grace 0 only a fire exactly at `now` runs. A once task past its grace never
runs; an event task never misfires (it has no fire times).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from coral_server.scheduler.schedule import Schedule, next_fires

__all__ = ["DEFAULT_GRACE", "Misfire", "resolve_misfires"]

# How late a fire may still run. Long enough for a restart, short enough that a run long overdue
# (a nightly job after a day of downtime) waits for its next time.
DEFAULT_GRACE = timedelta(minutes=5)
_TICK = timedelta(microseconds=1)
_BATCH = 64


@dataclass(frozen=True, slots=True)
class Misfire:
    """The decision for one schedule at `now` (UTC datetimes).

    `due`: the fire time to run now, standing for every missed one (the latest missed, if within
    grace), else None. `first_missed`: the earliest fire time after `last_fire` that is not after
    `now` (None: nothing was missed). `next_fire`: the next planned time, strictly after `now` (None:
    the schedule has no more).
    """

    due: datetime | None
    first_missed: datetime | None
    next_fire: datetime | None

    @property
    def skipped(self) -> bool:
        """Fire times were missed and none of them runs: all were older than the grace window."""
        return self.first_missed is not None and self.due is None

    @property
    def coalesced(self) -> bool:
        """The one `due` run stands for earlier missed times too."""
        return self.due is not None and self.first_missed != self.due


def resolve_misfires(
    schedule: Schedule, last_fire: datetime, now: datetime, grace: timedelta = DEFAULT_GRACE
) -> Misfire:
    """What to run now for `schedule`, whose last fire was `last_fire` (or, if it never fired, the
    time it was planned from: creation, resume, a changed schedule), and what to plan next.

    All datetimes aware. The walk looks only at the first missed time and at the grace window, so a
    task that missed a month of minutes costs no more than one that missed one.
    """
    if grace < timedelta(0):
        raise ValueError(f"grace must be 0 or more, not {grace}")
    first = next_fires(schedule, last_fire, 1)
    if not first or first[0] > now:
        return Misfire(due=None, first_missed=None, next_fire=first[0] if first else None)
    # The window of times still runnable: from now - grace (included) to now, and after last_fire.
    since = max(last_fire, now - grace - _TICK)
    due = _latest_until(schedule, since, now)
    return Misfire(due=due, first_missed=first[0], next_fire=_next_after(schedule, now))


def _latest_until(schedule: Schedule, since: datetime, now: datetime) -> datetime | None:
    """The last fire time after `since` and not after `now`, walked in batches."""
    latest: datetime | None = None
    while True:
        batch = next_fires(schedule, since, _BATCH)
        for fire in batch:
            if fire > now:
                return latest
            latest = fire
        if len(batch) < _BATCH:
            return latest
        since = batch[-1]


def _next_after(schedule: Schedule, now: datetime) -> datetime | None:
    fires = next_fires(schedule, now, 1)
    return fires[0] if fires else None
