"""Real sessions for MCP surface tests, built in memory: nothing is launched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from coral_server.clock import SystemClock
from coral_server.registry import AgentManifest
from coral_server.runtimes import Owner
from coral_server.sessions import Session, SessionAgent
from coral_server.supervision import Supervisor


async def _closed(session: Session) -> None:
    return None


def _unlaunched(session: Session, agent: SessionAgent, files: Path) -> Any:
    raise AssertionError("these tests launch nothing")


def unlaunched_session(tmp_path: Path, make: Callable[[AgentManifest], list[SessionAgent]]) -> Session:
    """A session of the agents `make` builds (from one placeholder manifest)."""
    manifest = AgentManifest("x", "1", None, None, None, tmp_path, tmp_path / "coral-agent.toml")
    return Session(
        session_id="sid",
        namespace="ns",
        agents=make(manifest),
        crew=Supervisor({}, SystemClock(), work_root=tmp_path / "work").crew(Owner("session", "sid", "ns")),
        build_spec=_unlaunched,
        ttl_ms=None,
        on_closed=_closed,
    )
