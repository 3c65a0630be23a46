"""Docker runtime on a real engine: a launch is create + start, one watcher copies output and exit."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from coral_server.runtimes import AgentLog, LaunchFailed, LaunchSpec, Owner
from coral_server.runtimes.docker import DockerEngine, DockerRuntime, DockerSettings
from tests.conftest import AGENT_IMAGE, docker_engine, wait_until


@pytest.fixture
def client() -> Iterator[Any]:
    engine = docker_engine()
    yield engine
    engine.close()


@pytest.fixture
async def engine(client: Any) -> AsyncIterator[DockerEngine]:
    instance = f"rt{os.getpid()}-{uuid.uuid4().hex[:8]}"
    engine = DockerEngine(DockerSettings(network="host", instance=instance))
    try:
        yield engine
    finally:
        await engine.sweep()
        engine.close()


def now() -> int:
    return int(time.time() * 1000)


def spec(code: str, image: str = AGENT_IMAGE, session: str = "s") -> LaunchSpec:
    return LaunchSpec(
        owner=Owner("session", session, "n"),
        name="a",
        command=["python", "-c", code],
        cwd=Path("/"),
        env={},
        image=image,
    )


def containers(client: Any, engine: DockerEngine, session: str) -> list[Any]:
    labels = [f"coral.instance={engine.settings.instance}", f"coral.session={session}"]
    return list(client.containers.list(all=True, filters={"label": labels}))


async def test_both_streams_every_line_and_the_exit_code(client: Any, engine: DockerEngine) -> None:
    code = (
        "import sys\n"
        "print('out 1'); print('err 1', file=sys.stderr); print('x' * 40000); print('out 2')\n"
        "sys.stderr.write('err tail'); sys.stdout.write('out tail'); sys.exit(3)\n"
    )
    log = AgentLog()
    handle = await DockerRuntime(engine, now).launch(spec(code), log)
    async with asyncio.timeout(30):
        assert await handle.wait() == 3
    # Every line is in the log when the exit is reported, each with the stream it was written to: a
    # long line (the engine splits it in pieces) and a last one without a newline too.
    lines = [(ln.stream, ln.text) for ln in log.lines]
    assert [t for s, t in lines if s == "stdout"] == ["out 1", "x" * 40000, "out 2", "out tail"]
    assert [t for s, t in lines if s == "stderr"] == ["err 1", "err tail"]
    assert containers(client, engine, "s") == []  # removed once it ended


async def test_stop_forwards_sigterm_and_removes(client: Any, engine: DockerEngine) -> None:
    logs = [AgentLog() for _ in range(3)]
    runtime = DockerRuntime(engine, now)
    code = "import time; print('up', flush=True); time.sleep(60)"
    handles = await asyncio.gather(*(runtime.launch(spec(code, session="stop"), log) for log in logs))
    await wait_until(lambda: all(log.lines for log in logs), what="every container printed 'up'")
    async with asyncio.timeout(30):
        codes = await asyncio.gather(*(h.stop(grace=5) for h in handles))
    assert codes == [143, 143, 143]  # the container's init passed SIGTERM on: no SIGKILL was needed
    assert containers(client, engine, "stop") == []


async def test_an_image_removed_after_a_launch_fails_the_next(client: Any, engine: DockerEngine) -> None:
    # Nothing caches the image's presence: create is asked on every launch.
    image = f"coral-test-vanishing-{uuid.uuid4().hex[:8]}:1"
    client.images.get(AGENT_IMAGE).tag(image)
    runtime = DockerRuntime(engine, now)
    try:
        handle = await runtime.launch(spec("print('there')", image), AgentLog())
        async with asyncio.timeout(30):
            assert await handle.wait() == 0
    finally:
        client.images.remove(image)  # only the tag: the agents' image stays
    with pytest.raises(LaunchFailed, match=r"is not present and the pull policy is 'never'"):
        await runtime.launch(spec("print('gone')", image, session="gone"), AgentLog())
    assert containers(client, engine, "gone") == []


async def test_if_missing_pulls_and_reports_a_failed_pull(client: Any) -> None:
    # A registry on a closed local port: the pull is tried and refused at once, nothing leaves the host.
    settings = DockerSettings(network="host", pull="if-missing", instance=f"pull{os.getpid()}")
    engine = DockerEngine(settings)
    try:
        runtime = DockerRuntime(engine, now)
        image = "127.0.0.1:9/coral-no-such-image:1"
        results = await asyncio.gather(
            *(runtime.launch(spec("pass", image), AgentLog()) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, LaunchFailed) and "could not be pulled" in str(r) for r in results), results
    finally:
        engine.close()
