"""A runtime that runs no process: a real implementation of the `Runtime` interface for unit tests.

Each launch makes a `FakeHandle` the test drives: `exit(code)` ends it; `stop(grace)` delivers a
"SIGTERM" that ends it at once (exit -15) unless it is deaf, then a "SIGKILL" after `grace` seconds
of the given clock (exit -9). Launches can be made to fail, or to hang until released.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from coral_server.clock import Clock
from coral_server.runtimes import AgentLog, LaunchFailed, LaunchSpec


class FakeHandle:
    def __init__(self, spec: LaunchSpec, log: AgentLog, clock: Clock, deaf: bool) -> None:
        self.spec = spec
        self.log = log
        self.deaf = deaf
        self.signals: list[str] = []
        self._clock = clock
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str | None:
        return None

    def exit(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def stop(self, grace: float) -> int:
        if not self._exited.done():
            self.signals.append("TERM")
            if not self.deaf:
                self.exit(-15)
            else:
                sleeper = asyncio.ensure_future(self._clock.sleep(grace))
                try:
                    await asyncio.wait({sleeper, self._exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    if not self._exited.done():
                        self.signals.append("KILL")
                        self.exit(-9)
        return await self.wait()


@dataclass
class FakeRuntime:
    """Launches `FakeHandle`s; `fail` maps agent names to launch errors, `deaf` names ignore SIGTERM."""

    clock: Clock
    name: str = "fake"
    fail: dict[str, str] = field(default_factory=dict)
    deaf: set[str] = field(default_factory=set)
    hold: asyncio.Event | None = None  # launches wait for it when set
    handles: dict[str, FakeHandle] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # launches waiting on `hold`
    launched: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> FakeHandle:
        if self.hold is not None:
            async with self.launched:
                self.held.add(spec.name)
                self.launched.notify_all()
            try:
                await self.hold.wait()
            finally:
                self.held.discard(spec.name)
        if spec.name in self.fail:
            raise LaunchFailed(self.fail[spec.name])
        handle = FakeHandle(spec, log, self.clock, spec.name in self.deaf)
        self.handles[spec.name] = handle
        async with self.launched:
            self.launched.notify_all()
        return handle

    async def holding(self, *names: str) -> None:
        """Wait until the launches of `names` wait on `hold`."""
        async with asyncio.timeout(5), self.launched:
            await self.launched.wait_for(lambda: self.held.issuperset(names))

    async def started(self, *names: str) -> list[FakeHandle]:
        async with asyncio.timeout(5), self.launched:
            await self.launched.wait_for(lambda: all(n in self.handles for n in names))
        return [self.handles[n] for n in names]
