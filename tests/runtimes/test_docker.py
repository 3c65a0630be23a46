"""Docker runtime on a real engine: a launch is create + start, one watcher copies output and exit."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from coral_server.registry.manifest import ContainerRequests
from coral_server.runtimes import AgentLog, LaunchFailed, LaunchSpec, Owner
from coral_server.runtimes.docker import DockerEngine, DockerRuntime, DockerSettings, Hardening, hardening
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


# -- hardening ---------------------------------------------------------------------------------------

STATUS_CODE = (
    "import os\n"
    "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
    "for key in ('NoNewPrivs', 'CapEff', 'CapBnd'):\n"
    "    print(key + '=' + status[key].strip())\n"
    "print('uid=' + str(os.getuid()))\n"
)


def printed(log: AgentLog) -> dict[str, str]:
    """The KEY=VALUE lines a container printed."""
    return dict(ln.text.split("=", 1) for ln in log.lines if "=" in ln.text)


async def run_to_end(runtime: DockerRuntime, launch: LaunchSpec) -> tuple[int, AgentLog]:
    log = AgentLog()
    handle = await runtime.launch(launch, log)
    async with asyncio.timeout(60):
        return await handle.wait(), log


@pytest.fixture
async def hardened(client: Any) -> AsyncIterator[Callable[..., DockerEngine]]:
    """Engines with hardening settings of the test's choosing (swept and closed afterwards)."""
    made: list[DockerEngine] = []

    def make(**settings: Any) -> DockerEngine:
        instance = f"hard{os.getpid()}-{uuid.uuid4().hex[:8]}"
        engine = DockerEngine(DockerSettings(network="host", instance=instance, **settings))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.sweep()
        engine.close()


async def test_containers_run_without_privileges_or_capabilities(engine: DockerEngine) -> None:
    code, log = await run_to_end(DockerRuntime(engine, now), spec(STATUS_CODE))
    assert code == 0, log.lines
    out = printed(log)
    # No setuid or file capability can raise privileges, and not one capability is held, even by root.
    assert out["NoNewPrivs"] == "1"
    assert out["CapEff"] == out["CapBnd"] == "0000000000000000"
    assert out["uid"] == "0"  # the image's user (no docker.user): root, but a powerless one


async def test_the_pids_limit_caps_processes_and_threads(hardened: Callable[..., DockerEngine]) -> None:
    code = (
        "import threading, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError:\n"
        "    pass\n"
        "print('started=' + str(started), flush=True)\n"
        "import os; os._exit(0)\n"
    )
    status, log = await run_to_end(DockerRuntime(hardened(pids_limit=16), now), spec(code))
    assert status == 0, log.lines
    # 16 tasks in all: the container's init, python's main thread, and at most 14 more.
    assert 0 < int(printed(log)["started"]) <= 14


async def test_read_only_root_and_user(hardened: Callable[..., DockerEngine], tmp_path: Path) -> None:
    secret = tmp_path / "files"
    secret.mkdir(mode=0o700)
    option = secret / "CONFIG-x.txt"
    option.write_text("from-a-file")
    option.chmod(0o600)  # as the option writer leaves it, owned by the server's user
    code = (
        "import os\n"
        "print('uid=%d:%d' % (os.getuid(), os.getgid()), flush=True)\n"
        "print('option=' + open(os.environ['CONFIG']).read(), flush=True)\n"
        "for path in ('/etc/coral-test', '/tmp/coral-test'):\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print(path + '=written', flush=True)\n"
        "    except OSError as exc:\n"
        "        print(path + '=' + exc.strerror, flush=True)\n"
    )
    launch = LaunchSpec(
        owner=Owner("session", "ro", "n"),
        name="a",
        command=["python", "-c", code],
        cwd=Path("/"),
        env={"CONFIG": str(option)},
        image=AGENT_IMAGE,
        files=(option,),
    )
    status, log = await run_to_end(DockerRuntime(hardened(read_only=True, user="1000:1000"), now), launch)
    assert status == 0, log.lines
    out = printed(log)
    assert out["uid"] == "1000:1000"
    assert out["option"] == "from-a-file"  # readable by a user that does not own it
    assert out["/etc/coral-test"] == "Read-only file system"
    assert out["/tmp/coral-test"] == "written"  # a tmpfs
    assert secret.stat().st_mode & 0o777 == 0o700  # on the host, its folder keeps it private


async def test_manifest_overrides_apply_only_where_allowed(
    client: Any, hardened: Callable[..., DockerEngine]
) -> None:
    asked = ContainerRequests(cap_add=("NET_BIND_SERVICE",), user="0:0", pids_limit=0)
    launch = replace(spec(STATUS_CODE, session="asks"), container=asked)
    strict = hardened()
    with pytest.raises(LaunchFailed, match=r"sets capAdd, pidsLimit, user.*docker\.manifestOverrides"):
        await DockerRuntime(strict, now).launch(launch, AgentLog())
    assert containers(client, strict, "asks") == []
    partial = hardened(overrides=frozenset({"capAdd", "user"}))
    with pytest.raises(LaunchFailed, match=r"sets pidsLimit,"):
        await DockerRuntime(partial, now).launch(launch, AgentLog())
    allowed = hardened(overrides=frozenset({"capAdd", "user", "pidsLimit"}), user="1000")
    status, log = await run_to_end(DockerRuntime(allowed, now), launch)
    assert status == 0, log.lines
    out = printed(log)
    assert out["CapEff"] == f"{1 << 10:016x}"  # CAP_NET_BIND_SERVICE (10) and nothing else
    assert out["uid"] == "0" and out["NoNewPrivs"] == "1"  # the manifest's user; the rest stays


def test_hardening_takes_the_manifest_only_where_allowed() -> None:
    settings = DockerSettings(pids_limit=64, read_only=True, user="app", overrides=frozenset({"readOnly"}))
    assert hardening(settings, None) == Hardening(True, (), 64, True, "app")
    assert hardening(settings, ContainerRequests(read_only=False)) == Hardening(True, (), 64, False, "app")
    with pytest.raises(LaunchFailed, match="noNewPrivileges"):
        hardening(settings, ContainerRequests(no_new_privileges=False))


async def test_without_an_engine_the_launch_fails_and_no_socket_is_left_open(tmp_path: Path) -> None:
    # Every server start probes the engine (its orphan sweep): without one, that must not leak.
    engine = DockerEngine(DockerSettings(base_url=f"unix://{tmp_path}/no-engine.sock"))
    try:
        with pytest.raises(LaunchFailed, match="docker engine not reachable"):
            await engine.client()
        gc.collect()  # an unclosed socket warns when collected (warnings fail the test)
    finally:
        engine.close()
