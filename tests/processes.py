"""Live processes found by a marker in the environment they started with: what tests count as leaked."""

from __future__ import annotations

import os


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
