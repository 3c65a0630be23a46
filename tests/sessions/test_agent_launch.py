"""Whatever stops an agent's launch shows in its state (status failed, the reason), never `pending`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from coral_server.clock import SystemClock
from coral_server.registry import AgentManifest
from coral_server.runtimes import AgentHandle, AgentLog, LaunchSpec, Owner, Runtime
from coral_server.runtimes.process import ProcessRuntime
from coral_server.sessions import Session, SessionAgent
from coral_server.sessions.model import now_ms
from coral_server.supervision import Supervisor


async def _closed(session: Session) -> None:
    return None


def one_agent_session(tmp_path: Path, runtime: Runtime, env: dict[str, str]) -> Session:
    manifest = AgentManifest("x", "1", None, None, None, tmp_path, tmp_path / "coral-agent.toml")

    def build_spec(session: Session, agent: SessionAgent, files: Path) -> LaunchSpec:
        return LaunchSpec(session.crew.owner, agent.name, [sys.executable, "-c", "pass"], tmp_path, env)

    supervisor = Supervisor(
        {"executable": runtime}, SystemClock(), work_root=tmp_path / "work", stop_grace_s=0.5
    )
    return Session(
        session_id="sid",
        namespace="ns",
        agents=[SessionAgent("a", manifest, "executable", "", "secret")],
        crew=supervisor.crew(Owner("session", "sid", "ns")),
        build_spec=build_spec,
        ttl_ms=None,
        on_closed=_closed,
    )


async def ended(session: Session) -> SessionAgent:
    agent = session.agents["a"]
    async with asyncio.timeout(15):
        assert agent.unit is not None
        await agent.unit.ended.wait()
        await session.wait_closed()  # its only agent ended: the session closed itself
    return agent


async def test_an_environment_the_system_refuses_fails_the_agent(tmp_path: Path) -> None:
    session = one_agent_session(tmp_path, ProcessRuntime(now_ms), {"PROMPT": "a\0b"})
    session.start()
    agent = await ended(session)
    assert agent.status == "failed"
    assert agent.error is not None and "embedded null byte" in agent.error
    assert session.close_reason == "all_agents_exited"


class BrokenRuntime:
    """A runtime that fails in a way nobody planned for (an engine answering nonsense, a bug)."""

    name = "executable"

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        raise RuntimeError("the engine answered nonsense")


async def test_any_exception_of_a_runtime_fails_the_agent(tmp_path: Path) -> None:
    session = one_agent_session(tmp_path, BrokenRuntime(), {})
    session.start()
    agent = await ended(session)
    assert (agent.status, agent.error) == (
        "failed",
        "launch failed: RuntimeError: the engine answered nonsense",
    )
