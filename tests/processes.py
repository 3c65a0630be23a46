"""Live processes as tests see them: found by a marker in the environment they started with, or by
pid and start time; what tests count as leaked, and kill when a failing test leaves them."""

from __future__ import annotations

import os
import signal

from coral_server.supervision import process_start

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
