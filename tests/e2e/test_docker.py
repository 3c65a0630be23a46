"""Black-box against a real Docker engine: dockerised agents live and die with their session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT_IMAGE, Coral, agent_spec, docker_engine, session_body, start_coral
from tests.e2e.mcp_client import connect

IMAGE = AGENT_IMAGE


@pytest.fixture
def engine() -> Iterator[Any]:
    engine = docker_engine()
    yield engine
    engine.close()


@pytest.fixture
async def dcoral(tmp_path: Path, engine: Any) -> AsyncIterator[Coral]:
    async for server in start_coral(
        tmp_path, docker_network="host", instance_id=f"t{os.getpid()}{id(tmp_path)}"
    ):
        yield server


def labelled(engine: Any, **labels: str) -> list[Any]:
    filters = {"label": [f"coral.{k}={v}" for k, v in labels.items()]}
    return list(engine.containers.list(all=True, filters=filters))


HOLD = {"mode": "hold_after_exit", "duration": 10000}


async def test_docker_echo_agents_converse_with_a_local_one(dcoral: Coral, engine: Any) -> None:
    agents = [
        agent_spec("echo-a", runtime="docker", options={"PREFIX": {"value": "A: "}}),
        agent_spec("echo-b", runtime="docker", options={"PREFIX": {"value": "B: "}}),
        agent_spec("local", runtime="executable", options={"PREFIX": {"value": "L: "}}),
        agent_spec("tester", runtime="external"),
    ]
    ns, sid = await dcoral.create_session(session_body(agents, ttl=60000))
    await dcoral.wait_for(ns, sid, lambda s: all(a["isConnected"] for a in s["agents"][:3]), timeout=60)
    assert len(labelled(engine, session=sid)) == 2
    async with connect(await dcoral.connection_url(ns, sid, "tester")) as tester:
        names = ["echo-a", "echo-b", "local"]
        tid = (await tester.ok("coral_create_thread", threadName="hi", participantNames=names))["thread"][
            "id"
        ]
        await tester.ok("coral_send_message", threadId=tid, content="ping", mentions=names)
        replies = {
            (await tester.ok("coral_wait_for_mention", maxWaitMs=20000))["message"]["text"] for _ in names
        }
    assert replies == {"A: ping", "B: ping", "L: ping"}
    _, logs = await dcoral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/echo-a/logs")
    assert logs["agent"] == "echo-a"
    status, _ = await dcoral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    assert status == 200
    assert labelled(engine, session=sid) == []


async def test_ttl_removes_every_container(dcoral: Coral, engine: Any) -> None:
    agents = [agent_spec(f"e{i}", runtime="docker") for i in range(2)]
    ns, sid = await dcoral.create_session(session_body(agents, ttl=8000))
    # Running (the containers exist), not connected: the TTL counts from creation, and a container's
    # SDK import under load can take most of it.
    await dcoral.wait_for(ns, sid, lambda s: all(a["status"] == "running" for a in s["agents"]))
    assert len(labelled(engine, session=sid)) == 2
    await dcoral.wait_gone(ns, sid, timeout=30)
    assert labelled(engine, session=sid) == []


async def test_exit_code_last_lines_and_fs_options(dcoral: Coral, engine: Any) -> None:
    options = {"CONFIG": {"type": "string", "value": "from-the-request"}}
    ns, sid = await dcoral.create_session(
        session_body(
            [agent_spec("probe", "docker-probe", runtime="docker", options=options)], persistenceMode=HOLD
        )
    )
    state = await dcoral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] == "exited", timeout=60)
    agent = state["agents"][0]
    assert agent["exitCode"] == 3
    assert "probe failing on purpose" in agent["lastLogLines"]
    _, logs = await dcoral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/probe/logs")
    streams = {ln["text"]: ln["stream"] for ln in logs["lines"]}
    assert streams["probe up"] == "stdout" and streams["probe failing on purpose"] == "stderr"
    out = dict(ln["text"].split("=", 1) for ln in logs["lines"] if "=" in ln["text"])
    assert out["CONFIG_CONTENT"] == "from-the-request"
    assert out["CONFIG_PATH"].startswith("/tmp/")  # the file is mounted read-only inside the container
    assert out["RUNTIME"] == "docker" and out["URL"].startswith("http://127.0.0.1:")
    assert out["HOME_SET"] == "False"  # the server's own environment never reaches containers
    assert labelled(engine, session=sid) == []


async def test_missing_image_fails_clearly(dcoral: Coral, engine: Any) -> None:
    ns, sid = await dcoral.create_session(
        session_body([agent_spec("x", "docker-missing", runtime="docker")], persistenceMode=HOLD)
    )
    state = await dcoral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] == "failed", timeout=30)
    assert "coral-no-such-image:9.9.9" in state["agents"][0]["error"]
    assert "pull policy is 'never'" in state["agents"][0]["error"]
    assert labelled(engine, session=sid) == []


async def test_bad_command_shows_exit_code_and_reason(dcoral: Coral, engine: Any) -> None:
    ns, sid = await dcoral.create_session(
        session_body([agent_spec("x", "docker-badcmd", runtime="docker")], persistenceMode=HOLD)
    )
    ended = ("exited", "failed")
    state = await dcoral.wait_for(ns, sid, lambda s: s["agents"][0]["status"] in ended, timeout=30)
    agent = state["agents"][0]
    # The container's init reports the missing program and exits 127, like a shell would.
    assert agent["status"] == "exited" and agent["exitCode"] == 127
    assert any("/definitely/not/here" in line for line in agent["lastLogLines"]), agent
    assert labelled(engine, session=sid) == []


async def test_restart_sweeps_orphans_of_the_same_instance(tmp_path: Path, engine: Any) -> None:
    instance = f"crash{os.getpid()}"
    orphan = engine.containers.create(
        IMAGE,
        ["python", "-c", "import time; time.sleep(600)"],
        labels={"coral.instance": instance, "coral.session": "old"},
        network_mode="host",
    )
    orphan.start()
    other = engine.containers.create(
        IMAGE, ["python", "-c", "import time; time.sleep(600)"], labels={"coral.instance": "someone-else"}
    )
    try:
        async for _server in start_coral(tmp_path, docker_network="host", instance_id=instance):
            assert labelled(engine, instance=instance) == []
            assert len(labelled(engine, instance="someone-else")) == 1
    finally:
        other.remove(force=True)


async def test_memory_and_cpu_limits_apply(tmp_path: Path, engine: Any) -> None:
    limits = {"docker_memory": "256m", "docker_cpus": 0.5}
    async for coral in start_coral(
        tmp_path, docker_network="host", instance_id=f"lim{os.getpid()}", **limits
    ):
        ns, sid = await coral.create_session(session_body([agent_spec("e", runtime="docker")], ttl=60000))
        await coral.wait_for(ns, sid, lambda s: s["agents"][0]["isConnected"], timeout=60)
        [container] = labelled(engine, session=sid)
        host = container.attrs["HostConfig"]
        assert host["Memory"] == 256 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["NetworkMode"] == "host" and host["Init"] is True
        assert container.labels["coral.agent"] == "e" and container.labels["coral.namespace"] == ns
        # The hardening every agent container gets by default.
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["PidsLimit"] == 512 and host["ReadonlyRootfs"] is False


async def test_hardening_settings_reach_the_containers(tmp_path: Path, engine: Any) -> None:
    """A read-only root, another user and a tighter pids limit, set as an operator would: the echo
    agent still connects and answers, and the probe reads its fs option as that user."""
    hardening = {"docker_read_only": True, "docker_user": "1000:1000", "docker_pids_limit": 64}
    async for coral in start_coral(
        tmp_path, docker_network="host", instance_id=f"hard{os.getpid()}", **hardening
    ):
        ns, sid = await coral.create_session(
            session_body(
                [
                    agent_spec("echo", runtime="docker"),
                    agent_spec("me", runtime="external"),
                    agent_spec("probe", "docker-probe", runtime="docker"),
                ],
                groups=[["echo", "me"]],
                persistenceMode=HOLD,
            )
        )
        await coral.wait_for(ns, sid, lambda s: s["agents"][0]["isConnected"], timeout=60)
        [container] = labelled(engine, session=sid, agent="echo")
        host = container.attrs["HostConfig"]
        assert (host["ReadonlyRootfs"], host["PidsLimit"]) == (True, 64)
        assert "/tmp" in host["Tmpfs"] and container.attrs["Config"]["User"] == "1000:1000"
        async with connect(await coral.connection_url(ns, sid, "me")) as me:
            thread = (await me.ok("coral_create_thread", threadName="t", participantNames=["echo"]))["thread"]
            await me.ok("coral_send_message", threadId=thread["id"], content="ping", mentions=["echo"])
            reply = await me.ok("coral_wait_for_agent", agentName="echo", maxWaitMs=30000)
            assert reply["message"]["text"] == "echo: ping"
        state = await coral.wait_for(ns, sid, lambda s: s["agents"][2]["status"] == "exited", timeout=60)
        assert state["agents"][2]["exitCode"] == 3
        _, logs = await coral.request("GET", f"/api/v1/session/{ns}/{sid}/agents/probe/logs")
        assert "CONFIG_CONTENT=settings-from-a-file" in [ln["text"] for ln in logs["lines"]]
