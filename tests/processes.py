"""Processes as tests see them: found by a marker or by pid and start time, made to carry marks, killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from coral_server.supervision import Mark, process_start
from coral_server.supervision.marks import NAME

Started = tuple[int, int | None]  # a process: its pid, and its start time (a pid can be reused)


def marked(marker: str) -> set[int]:
    """Pids of the live processes whose initial environment holds `marker` (zombies hold none).

    A process forked from one that had the marker (the zygote's children) has it too; a change
    to `os.environ` after start does not show, so the test process itself never counts.
    """
    needle = marker.encode()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read():
                    found.add(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


def alive(pid: int, start: int | None) -> bool:
    """Whether process `pid` (started at `start`) still runs: not gone, not a zombie, not reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 :].split()[0]
    return state not in (b"Z", b"X") and process_start(pid) == start


def kill_alive(started: list[Started]) -> None:
    """SIGKILL those of `started` still running, and empty the list: what a failing test left."""
    for pid, start in started:
        if alive(pid, start):
            os.kill(pid, signal.SIGKILL)
    started.clear()


@contextmanager
def carrying(*marks: Mark) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Sleeping processes, each carrying one of `marks` in its environment (each in its own session,
    as a daemon would be); killed after."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            env={**os.environ, NAME: mark.encode()},
            start_new_session=True,
        )
        for mark in marks
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
