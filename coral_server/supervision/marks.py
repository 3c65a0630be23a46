"""Marks in a process's environment: which server and owner started it, found again in /proc to kill it.

A process group does not hold everything a unit starts: a CLI may start a helper with `setsid()` or a
double fork (the codex CLI's `codex app-server --managed-daemon`), which leaves the group and is
re-parented to init, so neither `killpg` nor the parent chain reaches it. What every descendant keeps
is the environment it inherited: the supervisor puts one variable, `CORAL_SUPERVISED`, into each
unit's environment, naming this server process (instance id, pid, start time and a random nonce) and
the unit's owner and name. When the owner ends (or the server stops, or a restarted server recovers
what a dead one left), /proc/*/environ is scanned and every process whose mark matches is killed.

Why this and not a cgroup: a cgroup v2 subtree would also hold processes that clear their environment,
but it needs a delegated, writable cgroup v2 hierarchy (not there in most containers, nor on hybrid
v1 hosts like CI's), and a process must be moved into it before it can fork. The mark works for any
local process of ours, survives the server's own death (a restarted server still reads it), and is no
secret (it grants nothing; it only names who started the process). Its limits: a process that
`execve`s with a cleaned environment (`env -i`, sudo) drops it; /proc/<pid>/environ shows the
environment a process was exec'd with, so children the zygote forks (no exec) show the zygote's (they
are reached through their process group instead). A run's CLI also has a HOME of its own (in its
crew's work directory), which a sandbox that keeps only a few variables (HOME, PATH...) still passes
on: an owner's sweep kills what has its HOME there too. Kills go through a pidfd opened before the
environment is read, so a pid reused meanwhile is never hit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

log = logging.getLogger("coral_server.supervision")

NAME = "CORAL_SUPERVISED"
_VERSION = "v1"
_FIELDS = 8  # version, instance, pid, start, nonce, owner kind, owner id, unit
DEATH_WAIT_S = 5.0  # how long a kill waits for its processes to have exited
MAX_PASSES = 10  # scans until one finds nothing left (a process may fork while it is scanned)


@dataclass(frozen=True, slots=True)
class Mark:
    """Who started a process: a server process (instance, pid, start time, nonce), an owner, a unit."""

    instance: str
    pid: int
    start: int
    nonce: str
    kind: str  # the owner's kind: "session" | "run"
    owner: str  # the owner's id
    unit: str

    def encode(self) -> str:
        fields = (
            _VERSION,
            self.instance,
            str(self.pid),
            str(self.start),
            self.nonce,
            self.kind,
            self.owner,
            self.unit,
        )
        return "/".join(quote(f, safe="") for f in fields)

    @classmethod
    def parse(cls, token: str) -> Mark | None:
        """The mark `token` encodes, or None (not a mark of this format)."""
        fields = [unquote(f) for f in token.split("/")]
        if len(fields) != _FIELDS or fields[0] != _VERSION:
            return None
        try:
            pid, start = int(fields[2]), int(fields[3])
        except ValueError:
            return None
        return cls(fields[1], pid, start, fields[4], fields[5], fields[6], fields[7])

    def same_server(self, other: Mark) -> bool:
        return (self.instance, self.pid, self.start, self.nonce) == (
            other.instance,
            other.pid,
            other.start,
            other.nonce,
        )

    def server_alive(self) -> bool:
        """Whether the server process that made this mark still runs (same pid, same start time)."""
        return process_start(self.pid) == self.start


def marked_env(env: Mapping[str, str], mark: Mark, inherited: str | None = None) -> dict[str, str]:
    """`env` with `mark` added to `CORAL_SUPERVISED`, after the marks `inherited` holds (the server's
    own, when a supervisor started it: so that one can still find what ours start)."""
    tokens = [t for t in (inherited or "").split() if Mark.parse(t) is not None]
    return {**env, NAME: " ".join([*tokens, mark.encode()])}


def marks_of(pid: int) -> list[Mark]:
    """The marks in the environment process `pid` was started with ([] if none, gone or not ours)."""
    return _read(pid)[0]


def _read(pid: int) -> tuple[list[Mark], str | None]:
    """The marks and the HOME in the environment process `pid` was started with."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return [], None
    prefix = NAME.encode() + b"="
    marks: list[Mark] = []
    home: str | None = None
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            text = entry[len(prefix) :].decode("utf-8", "replace")
            marks = [m for t in text.split() if (m := Mark.parse(t)) is not None]
        elif entry.startswith(b"HOME="):
            home = os.fsdecode(entry[5:])
    return marks, home


def kill_marked(match: Callable[[Mark], bool], homes: Sequence[str] = ()) -> int:
    """SIGKILL every process (but this one) carrying a mark `match` accepts, or whose HOME lies in
    one of the directories `homes` (a run's CLI runs with a HOME of its own: a process that dropped
    every variable it did not know, as a sandbox may, still has it); returns how many.

    Blocking (reads /proc): run it in a thread. Scans again while a scan found something, since a
    process may have forked between being read and being killed.
    """
    me = os.getpid()
    roots = tuple(os.path.join(h, "") for h in homes)
    killed: set[int] = set()
    dying: list[int] = []  # pidfds of the killed: readable once each has exited
    try:
        for _ in range(MAX_PASSES):
            found = 0
            for pid in _pids():
                fd = _kill_if(pid, match, roots) if pid != me else None
                if fd is not None:
                    found += 1
                    killed.add(pid)
                    if fd >= 0:
                        dying.append(fd)
            if not found:
                break
        _wait_exited(dying, DEATH_WAIT_S)  # gone when this returns, not only signalled
    finally:
        for fd in dying:
            os.close(fd)
    if killed:
        log.info("supervisor.killed_marked count=%s pids=%s", len(killed), sorted(killed)[:20])
    return len(killed)


def _kill_if(pid: int, match: Callable[[Mark], bool], roots: tuple[str, ...]) -> int | None:
    """Kill `pid` if one of its marks matches, or its HOME is under one of `roots`: its pidfd (the
    caller closes it; -1 without pidfds), or None when not killed. The pidfd, opened first, is the
    process read."""
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.EINVAL):
            return None
        fd = -1  # no pidfds here: a reused pid between the read and the kill is then possible
    try:
        marks, home = _read(pid)
        under = home is not None and os.path.join(home, "").startswith(roots)
        if under or any(match(m) for m in marks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if fd >= 0:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                killed, fd = fd, -1  # the caller owns it now
                return killed
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def _wait_exited(pidfds: Sequence[int], timeout_s: float) -> None:
    """Wait (at most `timeout_s`) until every process of `pidfds` has exited: a pidfd polls readable
    then, so a SIGKILLed process is really gone (a zombie at most) when its killer returns."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    pending, deadline = set(pidfds), time.monotonic() + timeout_s
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("supervisor.kill_unfinished count=%s", len(pending))
            return
        for fd, _ in poller.poll(left * 1000):
            pending.discard(fd)
            poller.unregister(fd)


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                yield int(name)


def process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
