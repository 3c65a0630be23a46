"""Local processes on a pseudo-terminal: interactive CLIs that draw a screen and ask questions.

The child runs in its own session with the terminal as its controlling terminal (a few lines of
Python set it up, then exec the command, so the pid we watch is the command's). Its output arrives
as raw terminal chunks (stream "pty", escape sequences kept, so a screen can be rendered from them);
`write()` types into it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
from collections.abc import Callable

from coral_server.runtimes.base import AgentLog, LaunchFailed, LaunchSpec, LogLine

Clock = Callable[[], int]
ROWS, COLS = 50, 200
# Run in the child before the command: new session, the terminal on fd 0 as controlling tty, exec.
_SHIM = (
    "import os,sys,fcntl,termios\n"
    "os.setsid()\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


class PtyHandle:
    """A process on a pseudo-terminal: its exit, its screen output into the log, typing into it."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int, log: AgentLog, clock: Clock) -> None:
        self._proc = proc
        self._master = master
        self._log = log
        self._clock = clock
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._eof = asyncio.Event()
        self._exited = asyncio.ensure_future(proc.wait())
        asyncio.get_running_loop().add_reader(master, self._readable)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def container_id(self) -> str | None:
        return None

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the terminal has closed it
            data = b""
        if not data:
            self._close_master()
            return
        text = self._decoder.decode(data)
        if text:
            self._log.append(LogLine("pty", text, self._clock()))

    def _close_master(self) -> None:
        if self._eof.is_set():
            return
        self._eof.set()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._master)
        with contextlib.suppress(OSError):
            os.close(self._master)

    def write(self, data: bytes) -> None:
        """Type `data` into the terminal (keys, text, "\\r" for Enter)."""
        if self._eof.is_set():
            raise OSError("the terminal is closed")
        view = memoryview(data)
        while view:
            written = os.write(self._master, view)
            view = view[written:]

    async def wait(self) -> int:
        code = await asyncio.shield(self._exited)
        # What it drew last is still in the terminal's buffer: read it before reporting the exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._eof.wait()
        self._close_master()
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace: float) -> int:
        if not self._exited.done():
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(self._exited)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        code = await self.wait()
        self._signal_group(signal.SIGKILL)
        return code


async def start_on_pty(spec: LaunchSpec, command: list[str], log: AgentLog, clock: Clock) -> PtyHandle:
    """Start `command` (already resolved) on a new pseudo-terminal of ROWS x COLS."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        os.set_blocking(master, False)
        env = {"TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS), **spec.env}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _SHIM,
                *command,
                cwd=spec.cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
            )
        except OSError as exc:
            raise LaunchFailed(f"cannot start {command[0]!r}: {exc.strerror or exc}") from exc
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return PtyHandle(proc, master, log, clock)
