"""A child process on a pseudo-terminal, its output rendered by pyte: how the tests drive interactive CLIs.

The PTY comes from the standard library (`pty.openpty`) and the child from
`asyncio.create_subprocess_exec` in a session of its own, so the loop reaps it like any other child
and the whole process group can be signalled; the master end is read with `loop.add_reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from coral_server.jobs.prompts import TerminalScreen


class Terminal:
    """One child process on a PTY of `cols` x `rows`, with its rendered screen."""

    def __init__(self, cols: int = 120, rows: int = 40) -> None:
        self.screen = TerminalScreen(cols, rows, answer=self._answer_query)
        self.cols, self.rows = cols, rows
        self.output = bytearray()  # everything the child wrote, raw
        self._master = -1
        self._proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()  # set on every output; waiters clear it, then check
        self._eof = False

    async def start(self, argv: Sequence[str], cwd: Path | str, env: Mapping[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
        os.set_blocking(master, False)
        self._master = master
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(cwd),
                env=dict(env),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    def text(self) -> str:
        """The screen as text, one line per row (trailing blanks kept)."""
        return "\n".join(self.screen.lines())

    def send(self, keys: str | bytes) -> None:
        """Type `keys` (as a user at the keyboard would; `\\r` is Enter)."""
        data = keys.encode() if isinstance(keys, str) else keys
        while data:
            written = os.write(self._master, data)
            data = data[written:]

    async def type_and_submit(self, text: str, settle: Callable[[str], bool] | None = None) -> None:
        """Type `text`, wait until it shows on the screen, then press Enter."""
        self.send(text)
        first_line = text.splitlines()[0][:40]
        await self.wait_for(settle or (lambda screen: first_line in screen), timeout=30)
        self.send("\r")

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 60.0) -> str:
        """Wait until `predicate(screen text)` holds; returns that screen. Fails with the screen shown."""
        try:
            async with asyncio.timeout(timeout):
                while not (predicate(self.text()) or self._eof):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s; the screen:\n{self.text()}") from None
        screen = self.text()
        if not predicate(screen):
            raise AssertionError(f"the process closed its terminal first; the screen:\n{screen}")
        return screen

    async def wait_exit(self, timeout: float = 30.0) -> int:
        assert self._proc is not None
        async with asyncio.timeout(timeout):
            return await self._proc.wait()

    async def close(self) -> None:
        """Kill the child's process group (if still running) and release the PTY."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await self.wait_exit(10)
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = -1

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _answer_query(self, reply: str) -> None:
        # The CLI may ask the terminal where the cursor is; a real terminal answers.
        with contextlib.suppress(OSError):
            self.send(reply)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave end is closed (the child exited)
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            self._eof = True
        else:
            self.output += data
            self.screen.feed(data)
        self._changed.set()
