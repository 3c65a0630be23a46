"""When a task fires next: its schedule's next time after a moment, moved by a snooze; and what a
late look at a due task runs (misfires, through the planning core's `resolve_misfires`).

Snooze: `snooze(d)` delays the task's next fire by d (`snoozed_until` = that fire + d, or now + d
when none is planned); fire times that fall before it are coalesced into the one delayed fire. An
event task ignores its topic until then (each ignored event is recorded as a skip).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from coral_server.scheduler import Schedule, next_fires, resolve_misfires
from coral_server.store.tasks import Task

__all__ = ["Decision", "decide", "instant", "plan_next", "unix"]

# A stored fire time is a float; the walk restarts a hair before it so that the time itself counts.
_TICK = 0.001


def instant(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def unix(moment: datetime) -> float:
    return moment.timestamp()


def plan_next(schedule: Schedule, after: float, snoozed_until: float | None) -> float | None:
    """The next fire strictly after `after`, delayed to `snoozed_until` if it falls before it."""
    fires = next_fires(schedule, instant(after), 1)
    if not fires:
        return None
    at = unix(fires[0])
    if snoozed_until is not None and at < snoozed_until:
        return snoozed_until
    return at


@dataclass(frozen=True, slots=True)
class Decision:
    """What the scheduler does with a due task at `now`: run once for `fire_for` (None: nothing runs,
    and `skip_reason` says why), and plan `next_fire_at`."""

    fire_for: float | None
    next_fire_at: float | None
    skip_reason: str | None = None
    coalesced: bool = False


def decide(task: Task, schedule: Schedule, now: float, grace_s: float) -> Decision:
    """The misfire rule applied to a task whose `next_fire_at` has come: of the fire times from it up
    to `now` (a snoozed fire included), the latest runs once if at most `grace_s` old; otherwise
    none runs and the task skips to its next time."""
    assert task.next_fire_at is not None
    due = task.next_fire_at
    grace = timedelta(seconds=grace_s)
    snoozed = task.snoozed_until is not None and due == task.snoozed_until
    if not snoozed and now - due <= grace_s:
        # The usual case, a look on time: if no later time has come too, the due one runs (what
        # `resolve_misfires` would say, without its walk through the grace window).
        following = next_fires(schedule, instant(due), 1)
        if not following or unix(following[0]) > now:
            return Decision(due, unix(following[0]) if following else None)
    # A snoozed fire is not a schedule time: the walk looks at the schedule's times after it.
    since = due if snoozed else due - _TICK
    misfire = resolve_misfires(schedule, instant(since), instant(now), grace)
    fire_for = unix(misfire.due) if misfire.due is not None else None
    if fire_for is None and snoozed and now - due <= grace_s:
        fire_for = due
    next_at = unix(misfire.next_fire) if misfire.next_fire is not None else None
    if fire_for is not None:
        return Decision(fire_for, next_at, coalesced=misfire.coalesced or (snoozed and fire_for != due))
    if snoozed:
        missed = due
    elif misfire.first_missed is not None:
        missed = unix(misfire.first_missed)
    else:
        return Decision(None, next_at)  # nothing was due after all (the plan moved): just re-plan
    reason = (
        f"misfire: the fire at {instant(missed).isoformat()} was more than {grace_s:g} s late"
        f" (looked at {instant(now).isoformat()}); skipped to "
        + ("no further fire" if next_at is None else instant(next_at).isoformat())
    )
    return Decision(None, next_at, skip_reason=reason)
