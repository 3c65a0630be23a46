"""A mention's receiver is answered before its sender: the woken wait's reply goes out first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from coral_server.mcp.generations import surface_for
from coral_server.mcp.request_waits import RequestWaits
from coral_server.mcp.surface import Caller, call_tool
from coral_server.registry import AgentManifest, Generation
from coral_server.sessions import Session, SessionAgent
from tests.conftest import wait_until
from tests.mcp.sessions import unlaunched_session


@pytest.fixture
def session(tmp_path: Path) -> Session:
    """Agents a, b and c, all linked."""

    def make(manifest: AgentManifest) -> list[SessionAgent]:
        agents = [SessionAgent(n, manifest, "external", "", f"s{n}") for n in ("a", "b", "c")]
        for agent in agents:
            agent.links = {n for n in ("a", "b", "c") if n != agent.name}
        return agents

    return unlaunched_session(tmp_path, make)


def caller(session: Session, name: str) -> Caller:
    return Caller(session, session.agents[name], 5_000, RequestWaits(), surface_for(Generation.CURRENT))


async def call(c: Caller, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await call_tool(c, tool, arguments)
    assert not result.is_error, result
    return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]


async def test_woken_waits_finish_before_the_senders_call(session: Session) -> None:
    a, b, c = (caller(session, n) for n in ("a", "b", "c"))
    thread = (await call(a, "coral_create_thread", threadName="t", participantNames=["b", "c"]))["thread"]
    finished: list[str] = []

    async def wait(who: Caller, tool: str) -> None:
        got = await call(who, tool, maxWaitMs=5_000)
        assert got["message"]["text"] == "hi"
        finished.append(who.agent.name)

    waits = [
        asyncio.create_task(wait(b, "coral_wait_for_mention")),
        asyncio.create_task(wait(c, "coral_wait_for_message")),
    ]
    await wait_until(lambda: session.agents["b"].mailbox.waiting == session.agents["c"].mailbox.waiting == 1)
    await call(a, "coral_send_message", threadId=thread["id"], content="hi", mentions=["b"])
    finished.append("a")
    await asyncio.gather(*waits)
    # Each woken wait's handler ran to its end (where a transport writes its answer) before the
    # sender's call returned: the hand-over yields exactly as many loop steps as a wake takes.
    assert finished == ["b", "c", "a"]


async def test_no_hand_over_when_nobody_waits(session: Session) -> None:
    a = caller(session, "a")
    thread = (await call(a, "coral_create_thread", threadName="t", participantNames=["b"]))["thread"]
    message = session.send_message(session.agents["a"], thread["id"], "queued", ["b"])
    with pytest.raises(StopIteration):  # finished on its first step: no loop step was spent
        session.hand_over(message).send(None)
