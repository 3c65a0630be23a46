"""Python agents forked from the zygote behave like `python script.py`, only with the SDK preloaded."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coral_server.runtimes import AgentLog, LaunchSpec, Owner
from coral_server.runtimes.process import ProcessRuntime, preloadable
from coral_server.runtimes.zygote import Zygote


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
    async with asyncio.timeout(20):
        while True:
            found = [ln.text for ln in log.lines if text is None or ln.text == text]
            if found:
                return found[0]
            await asyncio.sleep(0.01)


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
    async with asyncio.timeout(5):
        while alive(grandchild):
            await asyncio.sleep(0.01)


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
    await asyncio.sleep(0.2)
    assert first.pid is not None and alive(first.pid)
    # The child's exit is still noticed (without a code: it was not ours to reap).
    assert await first.stop(grace=5) == -1
    again = AgentLog()
    second = await runtime.launch(script(tmp_path, body, "again.py"), again)
    assert int(await wait_for_line(again)) != old
    await second.stop(grace=5)


async def test_closing_the_server_end_kills_the_zygotes_children(tmp_path: Path) -> None:
    zygote = Zygote()
    log = AgentLog()
    handle = await ProcessRuntime(now, zygote).launch(
        script(tmp_path, "import time; print('up', flush=True); time.sleep(60)\n"), log
    )
    await wait_for_line(log, "up")
    assert handle.pid is not None
    await zygote.close()  # a server that went away without stopping its agents first
    async with asyncio.timeout(10):
        while alive(handle.pid):
            await asyncio.sleep(0.01)


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
