"""Process runtime: a real child process group, its output, its exit code, stop escalation."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from coral_server.runtimes import AgentLog, LaunchFailed, LaunchSpec, Owner
from coral_server.runtimes.process import ProcessRuntime
from tests.conftest import wait_until


def spec(code: str, tmp_path: Path) -> LaunchSpec:
    return LaunchSpec(
        owner=Owner("session", "s", "n"),
        name="a",
        command=[sys.executable, "-c", code],
        cwd=tmp_path,
        env={},
    )


def now() -> int:
    return int(time.time() * 1000)


async def test_output_and_exit_code(tmp_path: Path) -> None:
    log = AgentLog()
    handle = await ProcessRuntime(now).launch(
        spec("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)", tmp_path), log
    )
    assert await handle.wait() == 3
    assert sorted((ln.stream, ln.text) for ln in log.lines) == [("stderr", "err"), ("stdout", "out")]


async def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    log = AgentLog()
    handle = await ProcessRuntime(now).launch(spec(code, tmp_path), log)
    await wait_until(lambda: log.lines, what="the agent's first line")
    started = time.monotonic()
    assert await handle.stop(grace=0.3) == -9
    assert time.monotonic() - started < 3


async def test_graceful_stop_uses_sigterm(tmp_path: Path) -> None:
    handle = await ProcessRuntime(now).launch(spec("import time; time.sleep(60)", tmp_path), AgentLog())
    assert await handle.stop(grace=5) == -15


async def test_missing_executable_raises_launch_failed(tmp_path: Path) -> None:
    bad = LaunchSpec(
        owner=Owner("session", "s", "n"), name="a", command=["/no/such/bin"], cwd=tmp_path, env={}
    )
    with pytest.raises(LaunchFailed, match="cannot start"):
        await ProcessRuntime(now).launch(bad, AgentLog())


def test_log_is_bounded_and_redacted() -> None:
    from coral_server.runtimes import LogLine

    log = AgentLog(max_bytes=100)
    log.redact = lambda text: text.replace("hunter2", "***")
    for i in range(50):
        log.append(LogLine("stdout", f"line {i} hunter2", 0))
    assert log.size <= 100 and log.dropped > 0
    assert all("hunter2" not in ln.text for ln in log.lines)
    assert log.lines[-1].text == "line 49 ***"


@pytest.mark.parametrize("stopped", [False, True])
async def test_an_exit_is_seen_while_an_escaped_grandchild_holds_the_output(
    tmp_path: Path, stopped: bool
) -> None:
    """A child that leaves a grandchild in a session of its own, holding its stdout and stderr (a CLI's
    detached helper), still ends when it exits or is stopped: Python 3.11's `Process.wait()` alone
    would wait for the grandchild too."""
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True); "
        "print(p.pid, flush=True); " + ("time.sleep(60)" if stopped else "sys.exit(4)")
    )
    log = AgentLog()
    handle = await ProcessRuntime(now).launch(spec(code, tmp_path), log)
    await wait_until(lambda: log.lines, what="the grandchild's pid")
    grandchild = int(log.lines[0].text)
    try:
        async with asyncio.timeout(15):
            code_seen = await (handle.stop(grace=5) if stopped else handle.wait())
        assert code_seen == (-15 if stopped else 4)
    finally:
        os.kill(grandchild, signal.SIGKILL)
