"""Load, as a user makes it: many echo agents launched at once, and sessions deleted as soon as they
are created. Every agent starts and connects, none stays `pending`, nothing is left running."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Coral, agent_spec, session_body, wait_until
from tests.processes import marked

# An agent leaves `pending` as soon as its process runs. The 100 agents' own start-up is what takes
# the time (they are forked one after another from the zygote while those already forked take the
# CPU): 7.0-8.6 s on an idle 2-core machine, 7.6-9.4 s beside a CPU hog, the same before and after the
# supervision marks (session 7). So 20 s, and proportionally more on a machine shared with other work.
# Connecting takes longer under load.
STARTED_WITHIN_S = 20
CONNECTED_WITHIN_S = 180


def started_within_s() -> float:
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return STARTED_WITHIN_S * max(1.0, load)


def statuses(state: dict[str, Any]) -> list[str]:
    return [a["status"] for a in state["agents"]]


def counts(states: list[dict[str, Any]]) -> dict[str, int]:
    """How many agents are in each status, and how many are connected (a short failure message)."""
    found = Counter(a["status"] for s in states for a in s["agents"])
    found["connected"] = sum(a["isConnected"] for s in states for a in s["agents"])
    return dict(found)


async def wait_all(
    coral: Coral, sessions: list[tuple[str, str]], done: Callable[[dict[str, Any]], bool], deadline: float
) -> list[dict[str, Any]]:
    """The sessions' states once every agent is `done`; fails with the counts at `deadline`."""
    while True:
        states = await asyncio.gather(*(coral.state(ns, sid) for ns, sid in sessions))
        if all(done(a) for s in states for a in s["agents"]):
            return list(states)
        assert time.monotonic() < deadline, counts(list(states))
        await asyncio.sleep(0.1)


async def all_start_and_connect(
    coral: Coral, sessions: list[tuple[str, str]], created: float
) -> tuple[float, float]:
    """Seconds from `created` until no agent was pending, and until every one was connected."""
    states = await wait_all(coral, sessions, lambda a: a["status"] != "pending", created + started_within_s())
    started = time.monotonic() - created
    assert set(counts(states)) <= {"running", "connected"}, counts(states)  # none failed or exited
    states = await wait_all(coral, sessions, lambda a: a["isConnected"], created + CONNECTED_WITHIN_S)
    agents = sum(len(s["agents"]) for s in states)
    assert counts(states) == {"running": agents, "connected": agents}
    return started, time.monotonic() - created


async def delete_all(coral: Coral, sessions: list[tuple[str, str]]) -> None:
    answers = await asyncio.gather(
        *(coral.request("DELETE", f"/api/v1/session/{ns}/{sid}") for ns, sid in sessions)
    )
    assert [status for status, _ in answers] == [200] * len(sessions)


async def test_100_echo_agents_in_one_session_all_connect(coral: Coral) -> None:
    created = time.monotonic()
    session = await coral.create_session(
        session_body([agent_spec(f"echo-{i}") for i in range(100)], namespace="hundred")
    )
    started, connected = await all_start_and_connect(coral, [session], created)
    print(f"100 agents in one session: none pending after {started:.1f} s, connected after {connected:.1f} s")
    await delete_all(coral, [session])


async def test_50_sessions_of_2_created_at_once_all_connect(coral: Coral) -> None:
    created = time.monotonic()
    sessions = await asyncio.gather(
        *(
            coral.create_session(session_body([agent_spec("a"), agent_spec("b")], namespace=f"pair{i}"))
            for i in range(50)
        )
    )
    started, connected = await all_start_and_connect(coral, list(sessions), created)
    print(
        f"50 sessions x 2 agents: none pending after {started:.1f} s, all connected after {connected:.1f} s"
    )
    await delete_all(coral, list(sessions))


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().split(") ", 1)[1].split()[1])


def zygotes(marker: str) -> set[int]:
    """This server's zygotes: its children that run the zygote module."""
    found = set()
    for pid in marked(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"coral_server.runtimes.zygote" in f.read() and parent_of(pid) == os.getpid():
                    found.add(pid)
        except OSError:
            continue
    return found


async def test_sessions_deleted_as_soon_as_created_leave_nothing_running(
    coral: Coral, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started after this, the zygote and every agent carry the marker (the server runs in this process).
    marker = f"CORAL_TEST_MARK={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    first = await coral.create_session(session_body([agent_spec("a")], namespace="first"))
    await all_start_and_connect(coral, [first], time.monotonic())
    [zygote] = zygotes(marker)

    async def churn(worker: int) -> None:
        for _ in range(8):
            ns, sid = await coral.create_session(
                session_body([agent_spec("a"), agent_spec("b")], namespace=f"churn{worker}")
            )
            status, _ = await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
            assert status == 200

    await asyncio.gather(*(churn(w) for w in range(5)))
    await delete_all(coral, [first])
    await wait_until(
        lambda: not marked(marker) - {zygote},
        20,
        interval=0.05,
        what=lambda: f"still running after every session was deleted: {sorted(marked(marker) - {zygote})}",
    )
    # The same zygote survived the churn and still forks the next agents.
    assert zygotes(marker) == {zygote}
    last = await coral.create_session(session_body([agent_spec("a"), agent_spec("b")], namespace="last"))
    await all_start_and_connect(coral, [last], time.monotonic())
    assert {parent_of(pid) for pid in marked(marker) - {zygote}} == {zygote}
    await delete_all(coral, [last])


async def test_a_session_deleted_while_its_agents_start_stops_every_one(
    coral: Coral, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = f"CORAL_TEST_MARK={uuid.uuid4().hex}"
    monkeypatch.setenv(*marker.split("="))
    # Deaf to SIGTERM, so stopping the first ones takes the grace period while the rest still start.
    sleepers = [
        agent_spec(f"s{i}", "sleeper", options={"PID_FILE": {"value": str(tmp_path / f"s{i}.pid")}})
        for i in range(30)
    ]
    ns, sid = await coral.create_session(session_body(sleepers, namespace="starting"))

    async def one_running() -> dict[str, Any] | None:
        state = await coral.state(ns, sid)
        return state if "running" in statuses(state) else None

    state = await wait_until(one_running, 60, interval=0.01, what="an agent running")
    still_starting = statuses(state).count("pending")
    status, _ = await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    assert status == 200
    await wait_until(
        lambda: not marked(marker) - zygotes(marker),
        15,
        interval=0.05,
        what=lambda: (
            f"{len(marked(marker) - zygotes(marker))} processes outlived their session"
            f" ({still_starting} agents were starting)"
        ),
    )
