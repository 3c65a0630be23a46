"""A data directory on a small filesystem of its own, which a test fills up and frees: a real ENOSPC.

The directory is a tmpfs mounted for the test (root with CAP_SYS_ADMIN: CI and the sandbox run so);
`fill` writes a file until the kernel refuses, after which every write that needs space fails as on
a full disk (SQLite: "database or disk is full"); `free` deletes it. Without the right to mount, the
tests using it skip, or fail under `CORAL_TEST_DISK_FULL=1`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = "2m"  # room for the server's database and files, and little else
CHUNK = b"\0" * 4096


class FullDisk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._filler = root / "filler"

    def fill(self) -> None:
        """Write until the filesystem is full (ENOSPC)."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, CHUNK)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_filesystem(where: Path) -> Iterator[FullDisk]:
    """A fresh tmpfs of SIZE at `where` (created), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        why = f"cannot mount a tmpfs for a full disk: {mounted.stderr.strip()}"
        if os.environ.get("CORAL_TEST_DISK_FULL") == "1":
            raise AssertionError(why)
        pytest.skip(why)
    try:
        yield FullDisk(where)
    finally:
        # Lazy: a file the server left open does not keep the mount.
        subprocess.run(["umount", "-l", str(where)], check=False)
