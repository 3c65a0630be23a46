"""Python agents forked from the zygote behave like `python script.py`, only with the SDK preloaded."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coral_server.runtimes import AgentHandle, AgentLog, LaunchSpec, Owner
from coral_server.runtimes.process import ProcessRuntime, preloadable
from coral_server.runtimes.zygote import Zygote, ZygoteUnavailable
from tests.conftest import wait_until
from tests.processes import marked


def now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        await z.close()


def script(tmp_path: Path, body: str, name: str = "agent.py") -> LaunchSpec:
    folder = tmp_path / "agent"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(body)
    (folder / "helper_mod.py").write_text("VALUE = 'next to the script'\n")
    return LaunchSpec(
        owner=Owner("session", "s", "n"),
        name="a",
        command=[sys.executable, name, "--flag", "x y"],
        cwd=folder,
        env={"CORAL_AGENT_ID": "a", "PYTHONUNBUFFERED": "1", "PATH": os.environ.get("PATH", "")},
    )


def texts(log: AgentLog, stream: str) -> list[str]:
    return [ln.text for ln in log.lines if ln.stream == stream]


async def wait_for_line(log: AgentLog, text: str | None = None) -> str:
    """The first line (or the first that is `text`), once the agent has written it."""
    found = await wait_until(
        lambda: [ln.text for ln in log.lines if text is None or ln.text == text],
        what=f"the agent's line {text!r}" if text else "the agent's first line",
    )
    return found[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_runs_like_python_script(tmp_path: Path, zygote: Zygote) -> None:
    body = (
        "import os, sys\n"
        "preloaded = 'mcp' in sys.modules\n"
        "import helper_mod\n"
        "print('argv', sys.argv)\n"
        "print('cwd', os.getcwd())\n"
        "print('env', os.environ.get('CORAL_AGENT_ID'), os.environ.get('HOME', '-'))\n"
        "print('main', __name__, os.path.basename(__file__))\n"
        "print('preloaded', preloaded, helper_mod.VALUE)\n"
        "print('group', os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid())\n"
        "print('stdin', sys.stdin.read() == '')\n"
        "sys.stderr.write('to stderr\\n')\n"
        "sys.stdout.write('no newline')\n"
        "sys.exit(3)\n"
    )
    spec = script(tmp_path, body)
    assert preloadable(spec)
    log = AgentLog()
    handle = await ProcessRuntime(now, zygote).launch(spec, log)
    async with asyncio.timeout(30):
        assert await handle.wait() == 3
    assert texts(log, "stdout") == [
        "argv ['agent.py', '--flag', 'x y']",
        f"cwd {spec.cwd}",
        "env a -",  # only the agent's environment: the server's HOME did not leak in
        "main __main__ agent.py",
        "preloaded True next to the script",
        "group True True",
        "stdin True",
        "no newline",
    ]
    assert texts(log, "stderr") == ["to stderr"]
    assert handle.pid is not None and os.getpgid(0) != handle.pid


@pytest.mark.parametrize(
    ("body", "code", "stderr"),
    [
        ("raise ValueError('boom')\n", 1, "ValueError: boom"),
        ("import sys; sys.exit('bad option')\n", 1, "bad option"),
        ("pass\n", 0, None),
        ("import os; os._exit(7)\n", 7, None),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n", -9, None),
    ],
)
async def test_exit_statuses(
    tmp_path: Path, zygote: Zygote, body: str, code: int, stderr: str | None
) -> None:
    log = AgentLog()
    handle = await ProcessRuntime(now, zygote).launch(script(tmp_path, body), log)
    async with asyncio.timeout(30):
        assert await handle.wait() == code
    if stderr is not None:
        assert texts(log, "stderr")[-1] == stderr


async def test_threads_and_atexit_run_before_the_exit(tmp_path: Path, zygote: Zygote) -> None:
    body = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        "    print('thread done')\n"
        "threading.Thread(target=late).start()\n"
    )
    log = AgentLog()
    handle = await ProcessRuntime(now, zygote).launch(script(tmp_path, body), log)
    async with asyncio.timeout(30):
        assert await handle.wait() == 0
    assert texts(log, "stdout") == ["thread done", "atexit ran"]


async def test_stop_ends_the_whole_group(tmp_path: Path, zygote: Zygote) -> None:
    body = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = AgentLog()
    handle = await ProcessRuntime(now, zygote).launch(script(tmp_path, body), log)
    grandchild = int((await wait_for_line(log)).split()[1])
    assert alive(grandchild)
    assert await handle.stop(grace=5) == -signal.SIGTERM
    await wait_until(lambda: not alive(grandchild), what="the grandchild's end")


async def test_many_at_once_share_one_zygote(tmp_path: Path, zygote: Zygote) -> None:
    runtime = ProcessRuntime(now, zygote)
    spec = script(tmp_path, "import os; print(os.getppid())\n")
    logs = [AgentLog() for _ in range(10)]
    handles = await asyncio.gather(*(runtime.launch(spec, log) for log in logs))
    async with asyncio.timeout(30):
        assert await asyncio.gather(*(h.wait() for h in handles)) == [0] * 10
    parents = {log.lines[0].text for log in logs}
    assert len(parents) == 1 and parents != {str(os.getpid())}  # all forked by the one zygote


async def test_a_dead_zygote_is_replaced_and_its_children_still_watched(
    tmp_path: Path, zygote: Zygote
) -> None:
    runtime = ProcessRuntime(now, zygote)
    log = AgentLog()
    body = "import os, time; print(os.getppid(), flush=True); time.sleep(60)\n"
    first = await runtime.launch(script(tmp_path, body), log)
    old = int(await wait_for_line(log))
    os.kill(old, signal.SIGKILL)  # the zygote dies; its child runs on
    await wait_until(lambda: not alive(old), what="the old zygote reaped")
    assert first.pid is not None and alive(first.pid)
    # The child's exit is still noticed (without a code: it was not ours to reap).
    assert await first.stop(grace=5) == -1
    again = AgentLog()
    second = await runtime.launch(script(tmp_path, body, "again.py"), again)
    parent = int(await wait_for_line(again))
    # Forked by a new zygote: not by the dead one, and not started directly by this process.
    assert parent not in (old, os.getpid())
    await second.stop(grace=5)


async def test_launches_that_fill_the_socket_all_get_their_pid(tmp_path: Path, zygote: Zygote) -> None:
    # 40 requests of 60 KB each: far more than the socket holds, so most wait for it to drain.
    spec = script(tmp_path, "import os; print(os.getppid())\n")
    spec.env["LARGE"] = "x" * 60_000
    runtime = ProcessRuntime(now, zygote)
    logs = [AgentLog() for _ in range(40)]
    async with asyncio.timeout(60):
        handles = await asyncio.gather(*(runtime.launch(spec, log) for log in logs))
        assert await asyncio.gather(*(h.wait() for h in handles)) == [0] * 40
    assert len({log.lines[0].text for log in logs}) == 1  # every one forked by the zygote


async def stop_all(handles: list[AgentHandle]) -> None:
    await asyncio.gather(*(h.stop(grace=5) for h in handles))


async def test_cancelled_launches_leave_nothing_running_and_the_zygote_serving(
    tmp_path: Path, zygote: Zygote, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The zygote starts with the marker, so every child it forks carries it too.
    marker = f"CORAL_TEST_MARK={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    runtime = ProcessRuntime(now, zygote)
    body = "import os, time; print(os.getppid(), flush=True); time.sleep(60)\n"
    spec = script(tmp_path, body)
    spec.env.update([marker.split("=")])  # a launch started directly would carry it as well
    log = AgentLog()
    first = await runtime.launch(spec, log)
    the_zygote = int(await wait_for_line(log))
    # Cancel launches at every stage: before the request went out, after it went out and before
    # the pid came back, and after the pid came back but before the launch saw it.
    delays: list[int | float] = [*range(12), 0.001, 0.002, 0.005, 0.01, 0.02, 0.05]
    finished: list[AgentHandle] = []
    for delay in delays:
        launch = asyncio.ensure_future(runtime.launch(spec, AgentLog()))
        if isinstance(delay, int):
            for _ in range(delay):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(delay)
        launch.cancel()
        [outcome] = await asyncio.gather(launch, return_exceptions=True)
        if not isinstance(outcome, BaseException):
            finished.append(outcome)  # it had completed: a handle like any other
    await stop_all(finished)
    # The zygote survived all of that and still forks.
    later = AgentLog()
    last = await runtime.launch(spec, later)
    assert int(await wait_for_line(later)) == the_zygote
    await stop_all([first, last])
    await wait_until(lambda: not marked(marker) - {the_zygote}, what="every child's end")


def silent_zygote(tmp_path: Path, ready: bool) -> str:
    """A stand-in for the zygote's interpreter: it takes requests and never answers them."""
    silent = tmp_path / "silent.py"
    silent.write_text(
        "import socket, sys\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        + ("s.send(b'{\"ready\": true}')\n" if ready else "")
        + "while s.recv(1 << 20):\n    pass\n"
    )
    stub = tmp_path / "silent-python"  # called as: stub -m coral_server.runtimes.zygote FD
    stub.write_text(f'#!/bin/sh\nexec {sys.executable} {silent} "$3"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return str(stub)


@pytest.mark.parametrize("ready", [False, True], ids=["never-ready", "never-answers"])
async def test_a_zygote_that_does_not_answer_fails_the_launch_in_time(tmp_path: Path, ready: bool) -> None:
    zygote = Zygote(python=silent_zygote(tmp_path, ready), spawn_timeout_s=1.0)
    try:
        read_end, write_end = os.pipe()
        started = time.monotonic()
        with pytest.raises(ZygoteUnavailable, match="no answer from the zygote within 1 s"):
            await zygote.spawn([sys.executable, "x.py"], str(tmp_path), {}, write_end, write_end)
        assert time.monotonic() - started < 10
        os.close(read_end)
        os.close(write_end)
        # The runtime then starts the agent the usual way: it runs, as this process's child.
        log = AgentLog()
        handle = await ProcessRuntime(now, zygote).launch(
            script(tmp_path, "import os; print(os.getppid())\n"), log
        )
        async with asyncio.timeout(30):
            assert await handle.wait() == 0
        assert texts(log, "stdout") == [str(os.getpid())]
    finally:
        await zygote.close()


async def test_closing_the_server_end_kills_the_zygotes_children(tmp_path: Path) -> None:
    zygote = Zygote()
    log = AgentLog()
    handle = await ProcessRuntime(now, zygote).launch(
        script(tmp_path, "import time; print('up', flush=True); time.sleep(60)\n"), log
    )
    await wait_for_line(log, "up")
    assert handle.pid is not None
    await zygote.close()  # a server that went away without stopping its agents first
    pid = handle.pid
    await wait_until(lambda: not alive(pid), what="the agent's end")


def test_only_the_servers_python_running_a_script_is_preloaded(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")

    def launch(*command: str) -> LaunchSpec:
        return LaunchSpec(Owner("session", "s", "n"), "a", list(command), tmp_path, {})

    assert preloadable(launch(sys.executable, "a.py"))
    assert not preloadable(launch(sys.executable, "-u", "a.py"))  # interpreter options: as asked
    assert not preloadable(launch(sys.executable, "-m", "mod"))
    assert not preloadable(launch(sys.executable, "missing.py"))  # python reports it itself
    assert not preloadable(launch("/usr/bin/python3", "a.py"))  # another interpreter
    assert not preloadable(launch("sh", "a.py"))
