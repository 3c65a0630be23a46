"""The session core on a fake runtime and a fake clock: lifecycle, TTL, stops, close reasons, holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coral_server.clock import FakeClock
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.registry import AgentManifest
from coral_server.runtimes import LaunchSpec, Owner
from coral_server.sessions import Session, SessionAgent
from coral_server.supervision import Supervisor
from tests.conftest import loop_steps
from tests.fakes.runtime import FakeRuntime

START = 1_800_000_000.0


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(START)
        self.runtime = FakeRuntime(self.clock)
        self.supervisor = Supervisor(
            {"fake": self.runtime, "external": self.runtime},
            self.clock,
            work_root=tmp_path / "work",
            stop_grace_s=5.0,
        )
        self.events = EventBus()
        self.closed: list[Session] = []
        self.manifest = AgentManifest("x", "1", None, None, None, tmp_path, tmp_path / "coral-agent.toml")

    def agent(self, name: str, *, runtime: str = "fake", blocking: bool = False) -> SessionAgent:
        return SessionAgent(name, self.manifest, runtime, "", f"secret-{name}", blocking=blocking)

    def session(
        self, *agents: SessionAgent, ttl_ms: int | None = None, hold_ms: int = 0, minimum_ms: int = 0
    ) -> Session:
        async def closed(session: Session) -> None:
            self.closed.append(session)

        def spec(session: Session, agent: SessionAgent, files: Path) -> LaunchSpec:
            return LaunchSpec(session.crew.owner, agent.name, ["agent"], files, {})

        session = Session(
            session_id="sid",
            namespace="ns",
            agents=agents,
            crew=self.supervisor.crew(Owner("session", "sid", "ns")),
            build_spec=spec,
            ttl_ms=ttl_ms,
            on_closed=closed,
            clock=self.clock,
            hold_ms=hold_ms,
            minimum_ms=minimum_ms,
        )
        session.events = self.events
        session.start()
        return session


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


async def test_agents_start_and_the_session_closes_when_all_exit(h: Harness) -> None:
    session = h.session(h.agent("a"), h.agent("b"))
    a, b = await h.runtime.started("a", "b")
    assert [x.status for x in session.agents.values()] == ["running", "running"]
    assert session.agents["a"].started_at == int(START * 1000)
    a.exit(0)
    await session.agents["a"].unit.ended.wait()  # type: ignore[union-attr]
    assert not session.closing
    h.clock.advance(3)
    b.exit(2)
    await asyncio.wait_for(session.wait_closed(), 5)
    assert session.close_reason == "all_agents_exited"
    assert session.agents["b"].exit_code == 2
    assert session.agents["b"].ended_at == int((START + 3) * 1000)
    assert session.closed_at == int((START + 3) * 1000)
    assert h.closed == [session]


async def test_ttl_closes_the_session_at_its_time_and_not_before(h: Harness) -> None:
    session = h.session(h.agent("a"), ttl_ms=10_000)
    (a,) = await h.runtime.started("a")
    await h.clock.sleepers(1)
    h.clock.advance(9.999)
    await loop_steps()
    assert not session.closing
    h.clock.advance(0.001)
    await asyncio.wait_for(session.wait_closed(), 5)
    assert (session.close_reason, session.close_detail) == ("ttl", "time to live of 10000 ms ran out")
    assert a.signals == ["TERM"]
    assert session.agents["a"].exit_code == -15


async def test_an_agent_deaf_to_sigterm_is_killed_after_the_grace_period(h: Harness) -> None:
    h.runtime.deaf.add("deaf")
    session = h.session(h.agent("deaf"), h.agent("polite"))
    deaf, polite = await h.runtime.started("deaf", "polite")
    closing = asyncio.create_task(session.close("deleted"))
    await h.clock.sleepers(1)  # the grace period of the deaf one
    assert polite.signals == ["TERM"] and deaf.signals == ["TERM"]
    assert not closing.done()
    h.clock.advance(4.9)
    await loop_steps()
    assert not closing.done()
    h.clock.advance(0.1)
    await asyncio.wait_for(closing, 5)
    assert deaf.signals == ["TERM", "KILL"]
    assert session.agents["deaf"].exit_code == -9
    assert session.close_reason == "deleted"


async def test_a_launch_failure_ends_the_agent_with_its_error(h: Harness) -> None:
    h.runtime.fail["bad"] = "image 'x' not found"
    session = h.session(h.agent("bad"), h.agent("good"))
    await h.runtime.started("good")
    bad = session.agents["bad"]
    await bad.unit.ended.wait()  # type: ignore[union-attr]
    assert (bad.status, bad.error) == ("failed", "image 'x' not found")
    assert not session.closing  # another agent still runs


async def test_a_launch_that_cannot_start_is_never_left_pending_when_the_session_closes(h: Harness) -> None:
    h.runtime.hold = asyncio.Event()  # the launch never completes
    session = h.session(h.agent("slow"))
    await h.runtime.holding("slow")
    await session.close("deleted")
    assert session.agents["slow"].status == "exited"


async def test_closing_by_an_agent_and_events_on_the_server_feed(h: Harness) -> None:
    feed = h.events.subscribe(SERVER_TOPIC)
    session = h.session(h.agent("a"))
    await h.runtime.started("a")
    session.request_close("closed_by_agent", "done")
    await asyncio.wait_for(session.wait_closed(), 5)
    assert (session.close_reason, session.close_detail) == ("closed_by_agent", "done")
    seen = []
    while True:
        event = await feed.next(0.5)
        seen.append((event.type, event.data.get("name"), event.data.get("reason")))
        if event.type == "session_closed":
            break
    feed.close()
    assert seen == [
        ("session_created", None, None),
        ("session_running", None, None),
        ("runtime_started", "a", None),
        ("session_closing", None, "closed_by_agent"),
        ("runtime_stopped", "a", None),
        ("session_closed", None, "closed_by_agent"),
    ]


async def test_blocking_agents_hold_their_linked_agents_until_they_connect(h: Harness) -> None:
    blocker = h.agent("blocker", blocking=True)
    waiter = h.agent("waiter")
    waiter.links.add("blocker")
    session = h.session(blocker, waiter)
    ready = asyncio.create_task(session.ready(waiter))
    await loop_steps()
    assert not ready.done()
    await session.mark_connected(blocker)
    await asyncio.wait_for(ready, 5)


async def test_persistence_windows_count_from_close_and_creation(h: Harness) -> None:
    session = h.session(h.agent("a"), hold_ms=2_000, minimum_ms=60_000)
    await h.runtime.started("a")
    h.clock.advance(10)
    await session.close("deleted")
    # Kept at least 60 s after creation (50 s more), and at least 2 s after closing.
    assert session.forget_after_ms() == 50_000
    late = h.session(h.agent("b"), hold_ms=2_000, minimum_ms=1_000)
    h.clock.advance(10)
    await late.close("deleted")
    assert late.forget_after_ms() == 2_000
