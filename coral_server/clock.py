"""The one clock: every "now" and every sleep of the domain goes through a `Clock`, so tests move time.

`SystemClock` is the real one. `FakeClock` stands still until a test moves it (`advance`, `set`),
which wakes every task sleeping on it whose time has come; `await clock.sleepers(n)` waits until
`n` tasks sleep on it (`due=t`: one until time t), so a test moves time only once the code under test
is waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time (Unix), a monotonic time for durations, and sleeps measured on this clock."""

    def time(self) -> float:
        """Now, in Unix seconds."""
        ...

    def now_ms(self) -> int:
        """Now, in Unix milliseconds (what the API and events carry)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back: for durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` (at once for 0 or less, after yielding to the loop)."""
        ...

    async def sleep_until(self, unix_s: float) -> None:
        """Return once `time()` has reached `unix_s` (at once if it already has)."""
        ...


class SystemClock:
    """The real clock: `time.time`, `time.monotonic` and the event loop's sleep."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, unix_s: float) -> None:
        await asyncio.sleep(max(0.0, unix_s - time.time()))


class FakeClock:
    """A clock that moves only when told to; sleepers wake, earliest deadline first, as it passes them.

    `sleep(s)` is due when the clock has advanced `s` from now (on the monotonic line, which never goes
    back); `sleep_until(t)` when the wall time reaches `t`. Moving the wall time back (`set` to the
    past) leaves both kinds waiting.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = float(start)
        # monotonic() is wall time minus this offset, so both move alike (exactly) until a step back.
        self._offset = self._wall
        self._order = itertools.count()  # ties wake in the order they went to sleep
        # (deadline, order, future); "wall" deadlines are Unix s, "mono" ones on the monotonic line.
        self._wall_sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._mono_sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._changed: asyncio.Event | None = None

    def time(self) -> float:
        return self._wall

    def now_ms(self) -> int:
        return round(self._wall * 1000)

    def monotonic(self) -> float:
        return self._wall - self._offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self._wait(self._mono_sleepers, self.monotonic() + seconds)

    async def sleep_until(self, unix_s: float) -> None:
        if unix_s <= self._wall:
            await asyncio.sleep(0)
            return
        await self._wait(self._wall_sleepers, unix_s)

    def advance(self, seconds: float) -> None:
        """Move both times forward by `seconds` and wake every sleeper now due, earliest first."""
        if seconds < 0:
            raise ValueError("a clock does not advance backwards; use set() to move the wall time back")
        self._wall += seconds
        self._wake_due()

    def set(self, unix_s: float) -> None:
        """Set the wall time (forward moves the monotonic time by as much; back leaves it) and wake."""
        if unix_s < self._wall:
            self._offset -= self._wall - unix_s
        self._wall = float(unix_s)
        self._wake_due()

    @property
    def sleeping(self) -> int:
        """How many tasks sleep on this clock now."""
        return len(self._wall_sleepers) + len(self._mono_sleepers)

    def deadlines(self) -> list[float]:
        """When each current sleeper is due, as Unix seconds, earliest first."""
        wall = [d for d, _, _ in self._wall_sleepers]
        mono = [d + self._offset for d, _, _ in self._mono_sleepers]
        return sorted(wall + mono)

    async def sleepers(self, n: int = 1, *, due: float | None = None, timeout: float = 5.0) -> list[float]:
        """Wait (up to `timeout` real seconds) until at least `n` tasks sleep here, and with `due`, until
        one of them sleeps until exactly that Unix time; returns every sleeper's deadline."""

        def ready() -> bool:
            return self.sleeping >= n and (due is None or due in self.deadlines())

        async with asyncio.timeout(timeout):
            while not ready():
                changed = self._changed = self._changed or asyncio.Event()
                changed.clear()
                await changed.wait()
        return self.deadlines()

    wait_for_sleepers = sleepers

    async def _wait(self, heap: list[tuple[float, int, asyncio.Future[None]]], deadline: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (deadline, next(self._order), future)
        heapq.heappush(heap, entry)
        if self._changed is not None:
            self._changed.set()
        try:
            await future
        except asyncio.CancelledError:
            if entry in heap:  # cancelled while asleep: forget it, so it is no longer counted
                heap.remove(entry)
                heapq.heapify(heap)
            raise

    def _wake_due(self) -> None:
        due: list[tuple[float, int, asyncio.Future[None]]] = []
        for heap, now, offset in (
            (self._wall_sleepers, self._wall, 0.0),
            (self._mono_sleepers, self.monotonic(), self._offset),
        ):
            while heap and heap[0][0] <= now:
                deadline, order, future = heapq.heappop(heap)
                # One line for both kinds, so they wake in the order of their wall-time deadlines.
                due.append((deadline + offset, order, future))
        for *_, future in sorted(due, key=lambda entry: (entry[0], entry[1])):
            if not future.done():
                future.set_result(None)


async def wait_for_event(clock: Clock, event: asyncio.Event, until: float | None) -> bool:
    """Wait until `event` is set or `clock` reaches `until` (Unix s; None: no deadline).

    True if the event was set. A cancellation of the caller always propagates.
    """
    if event.is_set():
        return True
    if until is None:
        await event.wait()
        return True
    if isinstance(clock, SystemClock):  # the loop's own timer: no extra tasks
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, until - clock.time())):
                await event.wait()
        return event.is_set()
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep_until(until))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
        # Reap both; the caller's own cancellation (if any) is already on its way out.
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return event.is_set()
