"""Marks: every process a unit started, even one that left its process group (setsid), is found by the
mark in its environment and killed when its crew closes, when the server stops, or when a restarted
server reaps what a dead one left; never another server's or another instance's. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from coral_server.clock import SystemClock
from coral_server.runtimes import AgentLog, LaunchSpec, Owner
from coral_server.runtimes.process import ProcessRuntime
from coral_server.runtimes.zygote import Zygote
from coral_server.supervision import Crew, Mark, Supervisor, process_start
from coral_server.supervision.marks import NAME, marked_env, marks_of
from tests.conftest import wait_until
from tests.processes import Started, alive, carrying, kill_alive

# An agent that starts a daemon in a session of its own (out of its group), then works on.
AGENT = """\
import os, subprocess, sys, time
daemon = "import time\\nwhile True: time.sleep(3600)"
proc = subprocess.Popen([sys.executable, "-c", daemon], start_new_session=True,
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"daemon {proc.pid}", flush=True)
while True:
    time.sleep(3600)
"""


def now() -> int:
    return int(time.time() * 1000)


@pytest.fixture(autouse=True)
def no_leak() -> Iterator[None]:
    """A failing test does not leave its daemon sleeping forever."""
    yield
    kill_alive(started)


started: list[Started] = []


@pytest.fixture(params=["direct", "zygote"])
async def runtime(request: pytest.FixtureRequest) -> AsyncIterator[ProcessRuntime]:
    """Local processes started directly, or forked from the zygote (no exec: no mark of their own)."""
    zygote = Zygote() if request.param == "zygote" else None
    try:
        yield ProcessRuntime(now, zygote)
    finally:
        if zygote is not None:
            await zygote.close()


def supervisor(runtime: ProcessRuntime, tmp_path: Path, instance: str = "marks-test") -> Supervisor:
    return Supervisor({"executable": runtime}, SystemClock(), work_root=tmp_path / "work", instance=instance)


async def launch_agent(sup: Supervisor, owner: Owner, tmp_path: Path) -> tuple[Crew, int, int | None]:
    """Start the agent as a unit of `owner`: its crew, and the pid and start time of its daemon."""
    folder = tmp_path / "agent"
    folder.mkdir(exist_ok=True)
    (folder / "agent.py").write_text(AGENT)
    log = AgentLog()

    def prepare(_: Path) -> LaunchSpec:
        return LaunchSpec(owner, "a", [sys.executable, "agent.py"], folder, {"PATH": os.environ["PATH"]})

    crew = sup.crew(owner)
    crew.launch("a", "executable", prepare, log)
    line = await wait_until(
        lambda: next((ln.text for ln in log.lines if ln.text.startswith("daemon ")), None),
        what="the daemon's pid",
    )
    pid = int(line.split()[1])
    started.append((pid, process_start(pid)))
    return crew, pid, started[-1][1]


def dead_server() -> tuple[int, int]:
    """The pid and start time of a process that has ended (a server that died)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = process_start(proc.pid)
    assert start is not None
    proc.kill()
    proc.wait()
    return proc.pid, start


def test_a_mark_survives_encoding_whatever_its_fields_hold() -> None:
    mark = Mark("inst/a b:c%d", 42, 1234, "n0nce", "session", "ns id/x", "agent one")
    token = mark.encode()
    assert " " not in token and Mark.parse(token) == mark
    for bad in ("", "v1/a/b", "v2/i/1/2/n/k/o/u", "v1/i/x/2/n/k/o/u"):
        assert Mark.parse(bad) is None
    outer = Mark("outer", 1, 2, "n", "run", "7", "cli")  # the server's own, a supervisor started it
    env = marked_env({"PATH": "/bin"}, mark, inherited=f"junk {outer.encode()}")
    assert env["PATH"] == "/bin"
    assert [m.instance for m in (Mark.parse(t) for t in env[NAME].split()) if m] == ["outer", mark.instance]


async def test_closing_a_crew_kills_what_left_its_units_groups(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    sup = supervisor(runtime, tmp_path)
    owner = Owner("session", "s1", "ns")
    crew, pid, start = await launch_agent(sup, owner, tmp_path)
    assert [(m.kind, m.owner, m.unit) for m in marks_of(pid)] == [("session", "s1", "a")]
    assert os.getsid(pid) == pid  # out of the agent's session and group
    others = (
        sup.mark(Owner("session", "s2", "ns"), "a"),  # another owner of this server
        replace(sup.mark(owner, "a"), nonce="another-server"),  # this owner's id on another server
    )
    with carrying(*others) as procs:
        await crew.close()
        assert not alive(pid, start)
        assert all(p.poll() is None for p in procs)


async def test_a_server_stop_kills_everything_it_started_and_nothing_of_another_server(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    ours, theirs = supervisor(runtime, tmp_path), supervisor(runtime, tmp_path / "b")  # one instance
    crew, pid, start = await launch_agent(ours, Owner("run", "1"), tmp_path)
    try:
        with carrying(theirs.mark(Owner("run", "1"), "a")) as procs:
            await ours.close()
            assert not alive(pid, start)
            assert procs[0].poll() is None  # the same owner and unit, but another server's
    finally:
        await crew.close()


async def test_a_restart_reaps_only_the_marks_of_dead_servers_of_its_instance(tmp_path: Path) -> None:
    pid, start = dead_server()
    me, my_start = os.getpid(), process_start(os.getpid()) or 0
    orphan = Mark("inst", pid, start, "n", "run", "3", "cli")
    live = Mark("inst", me, my_start, "n", "run", "3", "cli")  # a second server on the data dir
    elsewhere = Mark("other-inst", pid, start, "n", "run", "3", "cli")  # its own restart reaps it
    with carrying(orphan, live, elsewhere) as (dead_one, live_one, other_one):
        await wait_until(lambda: all(marks_of(p.pid) for p in (dead_one, live_one, other_one)), what="marked")
        sup = Supervisor({}, SystemClock(), work_root=tmp_path, instance="inst")
        assert await sup.reap(Owner("run", "4")) == 0  # another run's recovery
        assert await sup.reap_orphans() == 1
        assert dead_one.wait(10) == -9
        assert live_one.poll() is None and other_one.poll() is None
