"""Real sessions for MCP surface tests, built in memory: nothing is launched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from coral_server.registry import AgentManifest
from coral_server.sessions import Session, SessionAgent


async def _closed(session: Session) -> None:
    return None


def _unlaunched(session: Session, agent: SessionAgent) -> Any:
    raise AssertionError("these tests launch nothing")


def unlaunched_session(tmp_path: Path, make: Callable[[AgentManifest], list[SessionAgent]]) -> Session:
    """A session of the agents `make` builds (from one placeholder manifest)."""
    manifest = AgentManifest("x", "1", None, None, None, tmp_path, tmp_path / "coral-agent.toml")
    return Session(
        session_id="sid",
        namespace="ns",
        agents=make(manifest),
        runtimes={},
        build_spec=_unlaunched,
        work_dir=tmp_path / "work",
        ttl_ms=None,
        stop_grace_s=0.1,
        on_closed=_closed,
    )
