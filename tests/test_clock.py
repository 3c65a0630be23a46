"""The clock: the real one reads the system's time; the fake one moves only when told, waking sleepers."""

from __future__ import annotations

import asyncio
import time

import pytest

from coral_server.clock import Clock, FakeClock, SystemClock, wait_for_event
from tests.conftest import loop_steps


def test_system_clock_reads_the_system_time() -> None:
    clock: Clock = SystemClock()
    before = time.time()
    now, ms = clock.time(), clock.now_ms()
    after = time.time()
    assert before <= now <= after
    assert int(before * 1000) - 1 <= ms <= int(after * 1000) + 1
    first = clock.monotonic()
    assert clock.monotonic() >= first


async def test_system_clock_sleeps_until_a_wall_time() -> None:
    clock = SystemClock()
    target = clock.time() + 0.05
    await clock.sleep_until(target)
    assert clock.time() >= target - 0.002  # the loop's timer may round a millisecond early
    start = clock.monotonic()
    await clock.sleep(0.02)
    assert clock.monotonic() - start >= 0.015
    await clock.sleep(-1)  # the past returns at once
    await clock.sleep_until(0)


def test_fake_clock_stands_still_until_moved() -> None:
    clock = FakeClock(1000.0)
    assert (clock.time(), clock.now_ms(), clock.monotonic()) == (1000.0, 1_000_000, 0.0)
    clock.advance(2.5)
    assert (clock.time(), clock.now_ms(), clock.monotonic()) == (1002.5, 1_002_500, 2.5)
    clock.set(2000.0)
    assert (clock.time(), clock.monotonic()) == (2000.0, 1000.0)
    clock.set(1500.0)  # wall time may step back; monotonic time never does
    assert (clock.time(), clock.monotonic()) == (1500.0, 1000.0)
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_advance_wakes_sleepers_whose_time_has_come_in_due_order() -> None:
    clock = FakeClock(100.0)
    woke: list[str] = []

    async def sleeper(name: str, until: float) -> None:
        await clock.sleep_until(until)
        woke.append(name)

    async def napper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [
        asyncio.create_task(sleeper("at-130", 130.0)),
        asyncio.create_task(napper("in-10", 10.0)),
        asyncio.create_task(sleeper("at-105", 105.0)),
        asyncio.create_task(napper("in-50", 50.0)),
    ]
    assert await clock.sleepers(4) == [105.0, 110.0, 130.0, 150.0]
    clock.advance(4.9)
    await loop_steps()
    assert woke == []
    clock.advance(30)  # to 134.9: three are due, woken earliest deadline first
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks[:3])
    assert woke == ["at-105", "in-10", "at-130"]
    assert clock.sleeping == 1 and clock.deadlines() == [150.0]
    clock.set(150.0)
    async with asyncio.timeout(5):
        await tasks[3]
    assert woke[-1] == "in-50" and clock.sleeping == 0


async def test_sleeping_in_the_past_or_for_nothing_returns_at_once() -> None:
    clock = FakeClock(100.0)
    async with asyncio.timeout(1):
        await clock.sleep(0)
        await clock.sleep(-5)
        await clock.sleep_until(100.0)
        await clock.sleep_until(3.0)
    assert clock.sleeping == 0


async def test_setting_the_wall_time_back_keeps_sleepers_waiting() -> None:
    clock = FakeClock(100.0)
    wall = asyncio.create_task(clock.sleep_until(110.0))
    nap = asyncio.create_task(clock.sleep(5.0))
    await clock.sleepers(2)
    clock.set(50.0)
    clock.advance(5.0)  # wall 55 (before 110), monotonic +5: only the nap is due
    async with asyncio.timeout(5):
        await nap
    assert not wall.done()
    clock.set(110.0)
    async with asyncio.timeout(5):
        await wall


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(10))
    await clock.sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert clock.sleeping == 0 and clock.deadlines() == []
    clock.advance(20)  # nothing left to wake, nothing raises


async def test_waiting_for_sleepers_times_out_in_real_time() -> None:
    clock = FakeClock()
    with pytest.raises(TimeoutError):
        await clock.wait_for_sleepers(1, timeout=0.05)


async def test_tasks_sleeping_in_a_loop_follow_the_clock() -> None:
    clock = FakeClock(0.0)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(1.0)
            ticks.append(clock.time())

    task = asyncio.create_task(ticker())
    try:
        for _ in range(3):
            await clock.sleepers(1)
            clock.advance(1.0)
        await clock.sleepers(1)
        assert ticks == [1.0, 2.0, 3.0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("kind", ["fake", "system"])
async def test_wait_for_event_ends_on_the_event_or_the_deadline(kind: str) -> None:
    clock: FakeClock | SystemClock = FakeClock(100.0) if kind == "fake" else SystemClock()
    event = asyncio.Event()
    start = clock.time()

    waiting = asyncio.create_task(wait_for_event(clock, event, start + 60))
    await loop_steps()  # it waits on the event before the event is set
    event.set()
    async with asyncio.timeout(5):
        assert await waiting is True
    assert await wait_for_event(clock, event, None) is True  # already set: at once

    event.clear()
    deadline = start + (30 if kind == "fake" else 0.05)
    waiting = asyncio.create_task(wait_for_event(clock, event, deadline))
    if isinstance(clock, FakeClock):
        assert await clock.sleepers(1) == [deadline]
        clock.advance(30)
    async with asyncio.timeout(5):
        assert await waiting is False
    if isinstance(clock, FakeClock):
        assert clock.sleeping == 0  # the sleeper was reaped with the wait


async def test_cancelling_a_wait_for_event_propagates_and_leaves_no_sleeper() -> None:
    clock = FakeClock()
    waiting = asyncio.create_task(wait_for_event(clock, asyncio.Event(), clock.time() + 10))
    await clock.sleepers(1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert clock.sleeping == 0
