"""The scheduler loop on a fake clock over a real store: every kind fires at its instant, DST in two
zones, misfires, priority, retries and their backoff, dedupe, concurrency keys, snooze/pause/resume,
re-planning, and restarts (none lost, none doubled)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from coral_server.runs.service import Outcome
from coral_server.scheduler import Backoff
from coral_server.store.runs import Run
from coral_server.tasks import TaskSettings
from tests.conftest import loop_steps, wait_until
from tests.tasks.conftest import T0, World, body

HOUR = timedelta(hours=1)


async def fire_at(world: World, when: datetime, sleepers: int = 1) -> None:
    """Wait until the loop sleeps until `when` (no earlier wake-up is planned), then move time there."""
    at = when.timestamp()
    await world.clock.sleepers(sleepers, due=at)
    assert min(world.clock.deadlines()) == at
    world.clock.set(at)


async def fail(world: World, run: Run, *, retryable: bool = True) -> None:
    world.pipeline.finish(run.id, Outcome("failed", "agent_error", "step s1 failed", retryable=retryable))


async def started(world: World, n: int) -> list[Run]:
    await wait_until(lambda: len(world.pipeline.started) >= n, what=f"{n} runs started")
    return world.pipeline.started


# -- every kind fires at its instant ----------------------------------------------------------------


async def test_cron_fires_at_its_time_and_plans_the_next(world: World) -> None:
    task = (await world.tasks.create(body())).task
    nine = T0 + HOUR
    assert task.next_fire_at == nine.timestamp()
    await fire_at(world, nine)
    (run,) = await world.wait_runs(task.id, 1)
    assert (run.trigger, run.kind, run.created_at, run.attempt) == ("cron", "pipeline", nine.timestamp(), 1)
    assert run.spec == {"params": {"who": "x"}, "pipeline": body()["payload"]["pipeline"]}
    stored = await world.tasks.get(task.id)
    assert stored.next_fire_at == (nine + 24 * HOUR).timestamp() and stored.last_fire_at == nine.timestamp()
    assert stored.last_run_id == run.id and stored.fire_count == 1
    await fire_at(world, nine + 24 * HOUR)  # it sleeps until tomorrow's
    await world.wait_runs(task.id, 2)


async def test_cron_with_a_seconds_field(world: World) -> None:
    task = (await world.tasks.create(body(schedule_expr="0 9 * * * 30"))).task
    await fire_at(world, T0 + HOUR + timedelta(seconds=30))
    (run,) = await world.wait_runs(task.id, 1)
    assert run.created_at == (T0 + HOUR + timedelta(seconds=30)).timestamp()


async def test_rrule_fires_from_its_dtstart(world: World) -> None:
    rule = "DTSTART:20260302T083000Z\nRRULE:FREQ=HOURLY;INTERVAL=2"
    task = (await world.tasks.create(body(schedule_kind="rrule", schedule_expr=rule))).task
    await fire_at(world, T0 + timedelta(minutes=30))
    (run,) = await world.wait_runs(task.id, 1)
    assert run.trigger == "rrule"
    await fire_at(world, T0 + timedelta(hours=2, minutes=30))
    await world.wait_runs(task.id, 2)


async def test_once_fires_once_then_the_task_has_ended(world: World) -> None:
    at = T0 + timedelta(minutes=45)
    task = (await world.tasks.create(body(schedule_kind="once", schedule_expr=at.isoformat()))).task
    await fire_at(world, at)
    (run,) = await world.wait_runs(task.id, 1)
    assert run.trigger == "once"
    ended = await wait_until(lambda: _ended(world, task.id), what="the once task ended")
    assert ended.status == "active" and world.tasks.ended(ended) and world.tasks.next_fires(ended) == []
    world.clock.advance(7 * 24 * 3600)
    await loop_steps(50)
    assert len(await world.task_runs(task.id)) == 1


async def _ended(world: World, task_id: str) -> Any:
    task = await world.tasks.get(task_id)
    return task if task.next_fire_at is None else None


async def test_an_event_task_never_fires_on_the_clock(world: World) -> None:
    task = (await world.tasks.create(body(schedule_kind="event", schedule_expr="deploy.done"))).task
    assert task.next_fire_at is None and not world.tasks.ended(task)
    world.clock.advance(48 * 3600)
    await loop_steps(50)
    assert await world.task_runs(task.id) == []
    (run,) = await world.tasks.fire_event("deploy.done", {"sha": "abc"}, source="ci")
    assert run.trigger == "event" and run.spec["event"] == {
        "topic": "deploy.done",
        "payload": {"sha": "abc"},
        "source": "ci",
    }


# -- DST, through the loop, in two zones ------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expr", "start", "expected"),
    [
        # Spring gap: 02:30 does not exist on the day; it fires once at 03:00 (the first minute after).
        (
            "Europe/Berlin",
            "30 2 * * *",
            datetime(2026, 3, 28, 12, tzinfo=UTC),
            ["2026-03-29T03:00", "2026-03-30T02:30"],
        ),
        (
            "America/New_York",
            "30 2 * * *",
            datetime(2026, 3, 7, 12, tzinfo=UTC),
            ["2026-03-08T03:00", "2026-03-09T02:30"],
        ),
        # Fall back: the repeated time fires once, at its first (daylight-time) occurrence.
        (
            "Europe/Berlin",
            "30 2 * * *",
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            ["2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"],
        ),
        (
            "America/New_York",
            "30 1 * * *",
            datetime(2026, 10, 31, 12, tzinfo=UTC),
            ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"],
        ),
    ],
)
async def test_dst_changes_through_the_loop(
    worlds: Callable[..., Any], zone: str, expr: str, start: datetime, expected: list[str]
) -> None:
    world: World = await worlds()
    world.clock.set(start.timestamp())
    task = (await world.tasks.create(body(schedule_expr=expr, timezone=zone))).task
    tz = ZoneInfo(zone)
    instants = [_local(text, tz) for text in expected]
    for n, instant in enumerate(instants, start=1):
        await fire_at(world, instant)
        runs = await world.wait_runs(task.id, n)
        assert runs[-1].created_at == instant.timestamp()
    # Each fired exactly once: nothing more is due before the next planned time.
    stored = await world.tasks.get(task.id)
    assert stored.next_fire_at is not None and stored.next_fire_at > instants[-1].timestamp()


def _local(text: str, tz: ZoneInfo) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


# -- misfires ---------------------------------------------------------------------------------------


async def test_a_fire_missed_while_down_runs_once_within_grace(worlds: Callable[..., Any]) -> None:
    first: World = await worlds(settings=TaskSettings(misfire_grace_s=300))
    task = (await first.tasks.create(body(schedule_expr="0 * * * *"))).task
    await first.close()
    first.clock.set((T0 + 3 * HOUR + timedelta(minutes=4)).timestamp())  # 09, 10 and 11:00 missed
    second: World = await worlds(settings=TaskSettings(misfire_grace_s=300))
    (run,) = await second.wait_runs(task.id, 1)  # coalesced: one run, for 11:00
    assert run.created_at == (T0 + 3 * HOUR + timedelta(minutes=4)).timestamp()
    stored = await second.tasks.get(task.id)
    assert stored.last_fire_at == (T0 + 3 * HOUR).timestamp()
    assert stored.next_fire_at == (T0 + 4 * HOUR).timestamp()


async def test_a_fire_missed_beyond_grace_is_skipped(worlds: Callable[..., Any]) -> None:
    first: World = await worlds(settings=TaskSettings(misfire_grace_s=300))
    task = (await first.tasks.create(body(schedule_expr="0 * * * *"))).task
    await first.close()
    first.clock.set((T0 + HOUR + timedelta(minutes=6)).timestamp())
    second: World = await worlds(settings=TaskSettings(misfire_grace_s=300))
    skipped = await wait_until(lambda: _skipped(second, task.id), what="the misfire recorded")
    assert "misfire" in (skipped.last_skip_reason or "")
    assert skipped.next_fire_at == (T0 + 2 * HOUR).timestamp()
    assert await second.task_runs(task.id) == []
    await fire_at(second, T0 + 2 * HOUR)  # and the schedule goes on
    await second.wait_runs(task.id, 1)


async def _skipped(world: World, task_id: str) -> Any:
    task = await world.tasks.get(task_id)
    return task if task.skip_count else None


# -- priority ---------------------------------------------------------------------------------------


async def test_more_runs_due_than_may_run_go_in_priority_order(worlds: Callable[..., Any]) -> None:
    world: World = await worlds(cap=1)
    blocker = (await world.tasks.create(body(schedule_kind="event", schedule_expr="x"))).task
    await world.tasks.run_now(blocker.id)
    await started(world, 1)
    ids = {}
    for minute, priority in ((0, 9), (1, 5), (2, 1)):  # the lowest priority fires first
        ids[priority] = (
            await world.tasks.create(body(schedule_expr=f"{minute} 9 * * *", priority=priority))
        ).task.id
    for minute in range(3):
        await fire_at(world, T0 + HOUR + timedelta(minutes=minute))
        await world.wait_runs(ids[(9, 5, 1)[minute]], 1)
    waiting = [(await world.task_runs(ids[p]))[0] for p in (9, 5, 1)]
    assert [r.waiting_reason for r in waiting] == ["capacity"] * 3
    order = []
    for n in range(2, 5):
        world.pipeline.finish(world.pipeline.started[-1].id)
        run = (await started(world, n))[-1]
        order.append(run.priority)
    assert order == [1, 5, 9]


# -- retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["exponential_jitter", "linear", "fixed"])
async def test_each_backoff_strategy_spaces_the_retries(worlds: Callable[..., Any], strategy: str) -> None:
    world: World = await worlds(settings=TaskSettings(retry_base_s=10, retry_cap_s=25))
    task = (await world.tasks.create(body(backoff_strategy=strategy, max_retries=3))).task
    expected = Backoff(strategy, 10, 25).delays(3, random.Random(7))  # type: ignore[arg-type]
    if strategy != "exponential_jitter":
        assert expected == {"linear": [10, 20, 25], "fixed": [10, 10, 10]}[strategy]
    await world.tasks.run_now(task.id)
    for attempt in range(1, 5):
        run = (await started(world, attempt))[-1]
        assert run.attempt == attempt
        world.clock.advance(1.5)  # the attempt takes a while: the delay counts from its end
        end = world.clock.time()
        await fail(world, run)
        if attempt == 4:
            break
        retry = (await world.wait_runs(task.id, attempt + 1))[-1]
        assert retry.attempt == attempt + 1 and retry.retry_of == run.id and retry.trigger == "manual"
        assert retry.not_before == pytest.approx(end + expected[attempt - 1])
        assert retry.waiting_reason == "not_before"
        # It waits: the dispatcher sleeps until its due time, then starts it.
        await world.clock.sleepers(due=retry.not_before)
        assert len(world.pipeline.started) == attempt
        world.clock.set(retry.not_before)
    # After max_retries retries, none: the last failure is final.
    last = await wait_until(lambda: _decided(world, task.id), what="the last retry decision")
    assert last.attempt == 4 and len(await world.task_runs(task.id)) == 4


async def _decided(world: World, task_id: str) -> Run | None:
    runs = await world.task_runs(task_id)
    last = runs[-1]
    return last if last.status == "failed" and not last.retry_pending else None


async def test_a_non_retryable_failure_ends_the_run_at_once(world: World) -> None:
    task = (await world.tasks.create(body(max_retries=5))).task
    await world.tasks.run_now(task.id)
    (run,) = await started(world, 1)
    await fail(world, run, retryable=False)
    ended = await wait_until(lambda: _decided(world, task.id), what="the run ended")
    assert not ended.retryable and ended.error == "step s1 failed"
    await loop_steps(50)
    assert len(await world.task_runs(task.id)) == 1


async def test_a_retry_lost_to_a_crash_is_created_at_the_next_start(worlds: Callable[..., Any]) -> None:
    first: World = await worlds(schedule=False)  # the scheduler loop is not there to decide
    task = (await first.tasks.create(body())).task
    await first.tasks.run_now(task.id)
    (run,) = await started(first, 1)
    await fail(first, run)
    await wait_until(lambda: _pending(first, run.id), what="the failure stored")
    await first.close()
    second: World = await worlds()
    runs = await second.wait_runs(task.id, 2)
    assert runs[1].retry_of == run.id and runs[1].attempt == 2
    await loop_steps(50)
    assert len(await second.task_runs(task.id)) == 2


async def _pending(world: World, run_id: int) -> bool:
    run = await world.store.runs.get(run_id)
    return run is not None and run.status == "failed" and run.retry_pending


# -- dedupe -----------------------------------------------------------------------------------------


async def test_run_dedupe_inside_and_outside_the_window(world: World) -> None:
    task = (
        await world.tasks.create(body(schedule_expr="* * * * *", dedupe_key="k", dedupe_window_seconds=90))
    ).task
    for minute in range(1, 4):  # 08:01 runs, 08:02 is inside the window, 08:03 is outside
        await fire_at(world, T0 + timedelta(minutes=minute))
        await wait_until(
            lambda m=minute: _fired_or_skipped(world, task.id, m), what=f"the fire of minute {minute}"
        )
    runs = await world.task_runs(task.id)
    assert [r.created_at for r in runs] == [(T0 + timedelta(minutes=m)).timestamp() for m in (1, 3)]
    stored = await world.tasks.get(task.id)
    assert stored.skip_count == 1 and f"run {runs[0].id}" in (stored.last_skip_reason or "")


async def _fired_or_skipped(world: World, task_id: str, n: int) -> bool:
    task = await world.tasks.get(task_id)
    return task.fire_count + task.skip_count >= n


async def test_event_dedupe_across_tasks(world: World) -> None:
    one = (
        await world.tasks.create(
            body(schedule_kind="event", schedule_expr="t", dedupe_key="k", dedupe_window_seconds=60)
        )
    ).task
    two = (
        await world.tasks.create(
            body(
                schedule_kind="event",
                schedule_expr="t",
                dedupe_key="k",
                dedupe_window_seconds=60,
                created_by="5f0c9a9e-1111-4c1e-9a55-0d6a3b9e2c01",  # else the task itself dedupes
            )
        )
    ).task
    (run,) = await world.tasks.fire_event("t", {})  # the other task's run would duplicate it
    other = two if run.task_id == one.id else one
    assert (await world.tasks.get(other.id)).skip_count == 1
    world.clock.advance(61)
    assert len(await world.tasks.fire_event("t", {})) == 1


# -- concurrency keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2])
async def test_concurrency_key_runs_at_most_n_the_rest_wait_visibly_in_priority_order(
    worlds: Callable[..., Any], limit: int
) -> None:
    world: World = await worlds(key_limits={"k": limit} if limit != 1 else None)  # 1: the default

    async def fire_keyed(topic: str, priority: int) -> None:
        await world.tasks.create(
            body(schedule_kind="event", schedule_expr=topic, priority=priority, concurrency_key="k")
        )
        await world.tasks.fire_event(topic, {})

    for n in range(limit):  # these take the key's slots
        await fire_keyed(f"busy{n}", 5)
        await started(world, n + 1)
    for priority in (9, 3, 1):  # these wait, created in the reverse of their priority order
        await fire_keyed(f"p{priority}", priority)
    free = (await world.tasks.create(body(schedule_kind="event", schedule_expr="free"))).task
    await world.tasks.fire_event("free", {})
    assert (await started(world, limit + 1))[-1].task_id == free.id  # no key: not held back
    pending = [r for r in await world.store.runs.active() if r.status == "pending"]
    assert sorted(r.priority for r in pending) == [1, 3, 9]
    assert {r.waiting_reason for r in pending} == {"concurrency_key"}
    order = []
    for n in range(3):  # slots free up one by one
        keyed = [r for r in world.pipeline.started if r.id in world.pipeline.running() and r.concurrency_key]
        assert len(keyed) == limit
        world.pipeline.finish(keyed[0].id)
        order.append((await started(world, limit + 2 + n))[-1].priority)
    assert order == [1, 3, 9]


# -- snooze, pause, resume, re-planning ------------------------------------------------------------


async def test_snooze_delays_the_next_fire(world: World) -> None:
    task = (await world.tasks.create(body(schedule_expr="0 * * * *"))).task
    snoozed = await world.tasks.snooze(task.id, 600, "maintenance")
    ten_past = T0 + HOUR + timedelta(minutes=10)
    assert snoozed.next_fire_at == snoozed.snoozed_until == ten_past.timestamp()
    assert world.tasks.next_fires(snoozed, 3) == [ten_past, T0 + 2 * HOUR, T0 + 3 * HOUR]
    await fire_at(world, ten_past)
    (run,) = await world.wait_runs(task.id, 1)
    assert run.created_at == ten_past.timestamp()
    after = await world.tasks.get(task.id)
    assert after.snoozed_until is None and after.next_fire_at == (T0 + 2 * HOUR).timestamp()


async def test_pause_stops_firing_and_resume_plans_from_now(world: World) -> None:
    task = (await world.tasks.create(body(schedule_expr="0 * * * *"))).task
    paused = await world.tasks.pause(task.id)
    assert paused.status == "paused" and paused.next_fire_at is None and world.tasks.next_fires(paused) == []
    world.clock.set((T0 + 2 * HOUR + timedelta(minutes=30)).timestamp())
    await loop_steps(50)
    assert await world.task_runs(task.id) == []
    resumed = await world.tasks.resume(task.id)
    assert resumed.next_fire_at == (T0 + 3 * HOUR).timestamp()  # what was missed does not run
    await fire_at(world, T0 + 3 * HOUR)
    await world.wait_runs(task.id, 1)


async def test_put_replans_the_schedule(world: World) -> None:
    task = (await world.tasks.create(body())).task
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    changed = await world.tasks.update(task.id, {"schedule_expr": "30 8 * * *", "priority": 2})
    assert changed.next_fire_at == (T0 + timedelta(minutes=30)).timestamp() and changed.priority == 2
    await fire_at(world, T0 + timedelta(minutes=30))
    (run,) = await world.wait_runs(task.id, 1)
    assert run.priority == 2


async def test_cancel_is_final_and_kills_the_runs_still_waiting(worlds: Callable[..., Any]) -> None:
    world: World = await worlds(dispatch=False)
    task = (await world.tasks.create(body())).task
    run = await world.tasks.run_now(task.id)
    canceled = await world.tasks.cancel(task.id)
    assert canceled.status == "canceled" and canceled.next_fire_at is None
    killed = await world.store.runs.get(run.id)
    assert killed is not None and killed.status == "killed"


# -- restarts and two servers -----------------------------------------------------------------------


async def test_restart_with_due_runs_loses_none_and_doubles_none(worlds: Callable[..., Any]) -> None:
    first: World = await worlds(dispatch=False)  # fires, but nothing runs before the "crash"
    hourly = (await first.tasks.create(body(schedule_expr="0 * * * *"))).task
    once = (await first.tasks.create(body(schedule_kind="once", schedule_expr=(T0 + HOUR).isoformat()))).task
    await fire_at(first, T0 + HOUR)
    await first.wait_runs(hourly.id, 1)
    await first.wait_runs(once.id, 1)
    await first.close()
    second: World = await worlds()
    runs = await started(second, 2)
    assert sorted(r.task_id or "" for r in runs) == sorted([hourly.id, once.id])
    await loop_steps(50)
    assert len(await second.task_runs(hourly.id)) == 1 and len(await second.task_runs(once.id)) == 1
    await fire_at(second, T0 + 2 * HOUR)  # the schedule goes on from where it was
    await second.wait_runs(hourly.id, 2)


async def test_two_schedulers_on_one_database_fire_each_time_once(worlds: Callable[..., Any]) -> None:
    one: World = await worlds(instance="a")
    two: World = await worlds(instance="b", dispatch=False)
    task = (await one.tasks.create(body(schedule_expr="0 * * * *"))).task
    two.tasks.loop.wake()  # the other server learns of it (on its own it would on its next pass)
    for hour in (1, 2, 3):
        await fire_at(one, T0 + hour * HOUR, sleepers=2)
        await one.wait_runs(task.id, hour)
    await loop_steps(50)
    assert len(await one.task_runs(task.id)) == 3


async def test_the_loop_is_cancelled_cleanly(world: World) -> None:
    await world.tasks.create(body())
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    await world.tasks.close()
    assert world.clock.sleeping == 0


async def test_with_no_grace_a_fire_a_little_late_still_runs(worlds: Callable[..., Any]) -> None:
    world: World = await worlds(settings=TaskSettings(misfire_grace_s=0))
    task = (await world.tasks.create(body(schedule_expr="0 * * * *"))).task
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    world.clock.set((T0 + HOUR).timestamp() + 0.5)  # the loop woke half a second late
    await world.wait_runs(task.id, 1)
    await world.clock.sleepers(due=(T0 + 2 * HOUR).timestamp())
    world.clock.set((T0 + 2 * HOUR).timestamp() + 2)  # two seconds: a misfire, skipped
    skipped = await wait_until(lambda: _skipped(world, task.id), what="the misfire recorded")
    assert skipped.next_fire_at == (T0 + 3 * HOUR).timestamp()
    assert len(await world.task_runs(task.id)) == 1


async def test_a_run_a_crashed_server_left_running_is_failed_and_retried(worlds: Callable[..., Any]) -> None:
    first: World = await worlds(dispatch=False, schedule=False)
    task = (await first.tasks.create(body())).task
    run = await first.tasks.run_now(task.id)
    run.status, run.owner, run.started_at = "running", "i-1:999999999:1", first.clock.time()  # a dead pid
    await first.store.runs.update(run)
    await first.close()
    second: World = await worlds()
    runs = await second.wait_runs(task.id, 2)
    assert (runs[0].status, runs[0].exit_reason) == ("failed", "server_restart")
    assert (runs[1].retry_of, runs[1].attempt, runs[1].trigger) == (run.id, 2, "manual")


async def test_the_loop_sleeps_until_the_next_fire_without_polling(world: World) -> None:
    passes = 0
    due = world.store.tasks.due

    async def counted(now: float, limit: int) -> list[Any]:
        nonlocal passes
        passes += 1
        return await due(now, limit)

    world.store.tasks.due = counted  # type: ignore[method-assign]
    await world.tasks.create(body())
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    before = passes
    world.clock.advance(1800)  # half-way: nothing due, nothing to do
    await loop_steps(100)
    assert passes == before and world.clock.deadlines() == [(T0 + HOUR).timestamp()]


async def test_a_task_created_later_than_the_planned_wake_up_costs_no_pass(world: World) -> None:
    passes = 0
    due = world.store.tasks.due

    async def counted(now: float, limit: int) -> list[Any]:
        nonlocal passes
        passes += 1
        return await due(now, limit)

    world.store.tasks.due = counted  # type: ignore[method-assign]
    await world.tasks.create(body())  # 09:00
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    before = passes
    for _ in range(20):  # 10:00, after the planned wake-up: nothing to look at
        await world.tasks.create(body(schedule_expr="0 10 * * *"))
    await loop_steps(100)
    assert passes == before and world.clock.deadlines() == [(T0 + HOUR).timestamp()]
    early = (await world.tasks.create(body(schedule_expr="30 8 * * *"))).task  # before it: a pass
    await world.clock.sleepers(due=(T0 + HOUR / 2).timestamp())
    assert passes == before + 1
    await fire_at(world, T0 + HOUR / 2)
    await world.wait_runs(early.id, 1)


async def test_a_task_created_while_a_pass_reads_the_next_fire_still_wakes_the_loop(world: World) -> None:
    """The pass's read of the next fire time missed the task (read before it was stored): the wait
    still ends at the task's time."""
    await world.tasks.create(body())  # 09:00
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    read, release = asyncio.Event(), asyncio.Event()
    upcoming = world.store.tasks.upcoming

    async def stale(limit: int) -> tuple[float | None, list[Any]]:
        answer = await upcoming(limit)
        read.set()
        await release.wait()
        return answer

    world.store.tasks.upcoming = stale  # type: ignore[method-assign]
    world.tasks.loop.wake()  # a pass: held after its read
    await wait_until(read.is_set, what="the pass read the next fire time")
    early = (await world.tasks.create(body(schedule_expr="30 8 * * *"))).task
    release.set()
    await world.clock.sleepers(due=(T0 + HOUR / 2).timestamp())
    world.store.tasks.upcoming = upcoming  # type: ignore[method-assign]
    await fire_at(world, T0 + HOUR / 2)
    await world.wait_runs(early.id, 1)


async def test_a_wake_up_fires_the_tasks_it_read_ahead_in_one_store_hop(world: World) -> None:
    calls: list[str] = []
    due, fire_many = world.store.tasks.due, world.store.tasks.fire_many

    async def counted_due(now: float, limit: int) -> list[Any]:
        calls.append("due")
        return await due(now, limit)

    async def counted_fire_many(fires: list[Any]) -> list[Any]:
        calls.append(f"fire_many {len(fires)}")
        return await fire_many(fires)

    world.store.tasks.due = counted_due  # type: ignore[method-assign]
    world.store.tasks.fire_many = counted_fire_many  # type: ignore[method-assign]
    first = (await world.tasks.create(body())).task
    second = (await world.tasks.create(body(priority=1))).task  # both at 09:00
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    calls.clear()
    world.clock.set((T0 + HOUR).timestamp())
    await world.wait_runs(first.id, 1)
    await world.wait_runs(second.id, 1)
    await world.clock.sleepers(due=(T0 + 25 * HOUR).timestamp())
    assert calls == ["fire_many 2", "due"]  # fired at once; the read after it finds nothing left


async def test_a_task_changed_after_it_was_read_ahead_is_not_fired_from_that_read(world: World) -> None:
    task = (await world.tasks.create(body())).task  # 09:00
    await world.clock.sleepers(due=(T0 + HOUR).timestamp())
    stored = await world.store.tasks.get(task.id)
    assert stored is not None
    stored.next_fire_at = (T0 + 2 * HOUR).timestamp()  # moved to 10:00 behind the loop's back
    await world.store.tasks.save(stored, stored.version)
    world.clock.set((T0 + HOUR).timestamp())  # the loop wakes at 09:00 as it planned
    await world.clock.sleepers(due=(T0 + 2 * HOUR).timestamp())
    assert await world.task_runs(task.id) == []
    await fire_at(world, T0 + 2 * HOUR)
    (run,) = await world.wait_runs(task.id, 1)
    assert run.created_at == (T0 + 2 * HOUR).timestamp()
