"""Local-process runtime: each agent is a child process in its own process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from coral_server.runtimes.base import AgentHandle, AgentLog, LaunchFailed, LaunchSpec, LogLine

Clock = Callable[[], int]


class ProcessHandle:
    """A child process and the tasks that copy its output into the agent's log."""

    def __init__(self, proc: asyncio.subprocess.Process, log: AgentLog, clock: Clock) -> None:
        self._proc = proc
        self._readers = [
            asyncio.create_task(self._pump(proc.stdout, "stdout", log, clock)),
            asyncio.create_task(self._pump(proc.stderr, "stderr", log, clock)),
        ]

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @staticmethod
    async def _pump(stream: asyncio.StreamReader | None, name: str, log: AgentLog, clock: Clock) -> None:
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the stream limit: take what is buffered
                raw = await stream.read(64 * 1024)
            if not raw:
                return
            log.append(LogLine(name, raw.decode("utf-8", "replace").rstrip("\n"), clock()))

    async def wait(self) -> int:
        code = await self._proc.wait()
        # Output still buffered in the pipes belongs in the log before anyone reads the exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*self._readers, return_exceptions=True)
        for reader in self._readers:
            reader.cancel()
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float) -> int:
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self._proc.wait()
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        else:
            # The leader is gone; children it left in the group must go too.
            self._signal_group(signal.SIGKILL)
        code = await self.wait()
        self._signal_group(signal.SIGKILL)
        return code


class ProcessRuntime:
    """Starts agents as local child processes (`provider.runtime = "executable"`)."""

    name = "executable"

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                cwd=spec.cwd,
                env=spec.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=1024 * 1024,
            )
        except OSError as exc:
            raise LaunchFailed(f"cannot start {spec.command[0]!r}: {exc.strerror or exc}") from exc
        return ProcessHandle(proc, log, self._clock)
