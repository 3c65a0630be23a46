"""Processes on a pseudo-terminal: a real terminal (controlling tty), screen output, typed input."""

from __future__ import annotations

import sys
from pathlib import Path

from coral_server.runtimes import AgentLog, LaunchSpec, Owner, Terminal
from coral_server.runtimes.process import ProcessRuntime
from tests.conftest import wait_until

SCRIPT = r"""
import os, sys
print("tty", os.isatty(0), os.isatty(1), os.ttyname(0) == os.ttyname(1))
with open("/dev/tty", "w") as tty:  # only works with a controlling terminal
    tty.write("ctty ok\n")
print("size", os.get_terminal_size().columns, os.get_terminal_size().lines)
answer = input("Proceed? (y/n) ")
print("answered", repr(answer))
sys.exit(3 if answer == "y" else 4)
"""


def now() -> int:
    return 0


def screen(log: AgentLog) -> str:
    return "".join(line.text for line in log.lines if line.stream == "pty")


async def test_process_on_a_pty_gets_a_controlling_terminal_and_typed_input(tmp_path: Path) -> None:
    spec = LaunchSpec(
        Owner("run", "1"),
        "cli",
        [sys.executable, "-c", SCRIPT],
        tmp_path,
        {"PATH": "/usr/bin:/bin"},
        pty=True,
    )
    log = AgentLog()
    handle = await ProcessRuntime(now).launch(spec, log)
    assert isinstance(handle, Terminal)
    await wait_until(lambda: "Proceed? (y/n)" in screen(log))
    out = screen(log)
    assert "tty True True True" in out
    assert "ctty ok" in out
    assert "size 200 50" in out
    handle.write(b"y\r")
    assert await handle.wait() == 3
    assert "answered 'y'" in screen(log)


async def test_stopping_a_pty_process_kills_its_group(tmp_path: Path) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"
    )
    spec = LaunchSpec(Owner("run", "2"), "cli", [sys.executable, "-c", code], tmp_path, {}, pty=True)
    log = AgentLog()
    handle = await ProcessRuntime(now).launch(spec, log)
    await wait_until(lambda: "ready" in screen(log))
    assert await handle.stop(0.2) == -9
