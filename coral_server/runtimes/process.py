"""Local-process runtime: each agent is a process in its own process group.

Python agents (the server's own interpreter running a `.py` script) are forked from the zygote,
which has the MCP SDK imported already (see `zygote.py`); everything else is started directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from coral_server.runtimes.base import AgentHandle, AgentLog, LaunchFailed, LaunchSpec, LogLine
from coral_server.runtimes.pty import start_on_pty
from coral_server.runtimes.zygote import Zygote, ZygoteUnavailable

logger = logging.getLogger("coral_server.runtimes.process")
READ_LIMIT = 1024 * 1024  # the longest line read whole from an agent's output

Clock = Callable[[], int]


class ProcessHandle:
    """An agent's process (its own process group) and the tasks copying its output into the log."""

    def __init__(
        self,
        pid: int,
        exited: Awaitable[int],
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
        log: AgentLog,
        clock: Clock,
        *,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._pid = pid
        self._release = release  # closes what is left of the pipes once the output is read
        self._exited = asyncio.ensure_future(exited)
        self._readers = [
            asyncio.create_task(self._pump(stdout, "stdout", log, clock)),
            asyncio.create_task(self._pump(stderr, "stderr", log, clock)),
        ]

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def container_id(self) -> str | None:
        return None

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
        code = await asyncio.shield(self._exited)
        # Output still buffered in the pipes belongs in the log before anyone reads the exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*self._readers, return_exceptions=True)
        for reader in self._readers:
            reader.cancel()
        if self._release is not None:  # a grandchild may still hold them: they are not ours to read
            self._release()
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)

    async def stop(self, grace: float) -> int:
        if not self._exited.done():
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(self._exited)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        else:
            # The leader is gone; children it left in the group must go too.
            self._signal_group(signal.SIGKILL)
        code = await self.wait()
        self._signal_group(signal.SIGKILL)
        return code


class ProcessRuntime:
    """Starts agents as local processes (`provider.runtime = "executable"`).

    With a zygote, Python agents are forked from it; if it cannot serve a launch, they start the
    usual way.
    """

    name = "executable"

    def __init__(self, clock: Clock, zygote: Zygote | None = None) -> None:
        self._clock = clock
        self._zygote = zygote

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        if not spec.command:
            raise LaunchFailed("no command to run")
        executable = resolve_executable(spec.command[0], spec.cwd, spec.env.get("PATH"))
        spec = replace(spec, command=[executable, *spec.command[1:]])
        if spec.pty:
            return await start_on_pty(spec, spec.command, log, self._clock)
        if self._zygote is not None and preloadable(spec):
            try:
                return await self._fork(self._zygote, spec, log)
            except ZygoteUnavailable as exc:
                logger.warning("zygote.unavailable agent=%s error=%s", spec.name, exc)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Exits(READ_LIMIT, loop),
                *spec.command,
                cwd=spec.cwd,
                env=spec.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchFailed(f"cannot start {spec.command[0]!r}: {exc.strerror or exc}") from exc
        except ValueError as exc:  # e.g. a NUL byte in an argument or the environment
            raise LaunchFailed(f"cannot start {spec.command[0]!r}: {exc}") from exc
        return ProcessHandle(
            transport.get_pid(),
            protocol.exited,
            protocol.stdout,
            protocol.stderr,
            log,
            self._clock,
            release=transport.close,
        )

    async def _fork(self, zygote: Zygote, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        readers: list[asyncio.StreamReader] = []
        ends: list[int] = []
        try:
            for _ in range(2):
                read_end, write_end = os.pipe()
                ends.append(write_end)
                readers.append(await _reader(read_end))
            pid = await zygote.spawn(spec.command, str(spec.cwd), spec.env, ends[0], ends[1])
        finally:
            # Ours are only the read ends: on failure, closing these ends the readers' pipes too.
            for end in ends:
                os.close(end)
        return ProcessHandle(pid, zygote.wait(pid), readers[0], readers[1], log, self._clock)


def resolve_executable(path: str, root: Path, search: str | None = None) -> str:
    """`python`/`python3` mean the server's own interpreter; else absolute, relative to the working
    directory (an agent's manifest folder), or found on `search` (the agent's PATH)."""
    if path in ("python", "python3"):
        return sys.executable
    candidate = Path(path)
    if candidate.is_absolute():
        return path
    local = root / candidate
    if local.exists():
        return str(local.resolve())
    found = shutil.which(path, path=search)
    if found is None:
        raise LaunchFailed(f"executable {path!r} not found (manifest folder {root}, or PATH)")
    return found


def preloadable(spec: LaunchSpec) -> bool:
    """The server's own interpreter running a script file, with no interpreter options."""
    command = spec.command
    return (
        len(command) >= 2
        and command[0] == sys.executable
        and command[1].endswith(".py")
        and (spec.cwd / command[1]).is_file()
    )


async def _reader(fd: int) -> asyncio.StreamReader:
    """An asyncio stream over the read end of a pipe (the transport closes it at EOF)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    except BaseException:
        pipe.close()
        raise
    return reader


class _Exits(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol of a child, plus `exited`: its exit code as soon as it exits.

    On Python 3.11 `Process.wait()` answers only once every pipe of the child is closed, so a
    grandchild that left the group (a CLI's detached helper) holding stdout would keep an exited or
    killed agent looking alive for as long as the grandchild lives.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[int] = loop.create_future()
        self._child: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._child = transport  # type: ignore[assignment]

    def process_exited(self) -> None:
        super().process_exited()
        code = self._child.get_returncode() if self._child is not None else None
        if not self.exited.done():
            self.exited.set_result(-1 if code is None else code)
