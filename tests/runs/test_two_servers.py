"""Two servers on one store (a real SQLite file, two writers): a kill or an answer sent to the server
that does not execute a run is carried out by the one that does, at its next dispatcher pass; the runs
of a server that stops are ended by the other (once), so they hold no slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coral_server.clock import SystemClock
from coral_server.events import EventBus
from coral_server.runs import service
from coral_server.runs.service import Outcome, RunContext, RunNotActive, RunNotWaiting, Runs
from coral_server.store import SqliteStore
from coral_server.store.runs import Run
from tests.conftest import wait_until
from tests.fakes.pipeline import FakePipeline, done_unless_killed

SPEC = {"pipeline": [{"uses": "webhook"}]}
POLL_S = 0.2  # each dispatcher's pass for other servers' runs and requests
WATCH_S = 0.2  # each server's look for servers that stopped, where a test watches (else an hour)
GONE = "a:999999999:1"  # a server process that does not exist


class Recovering(FakePipeline):
    """Counts the runs it is asked to tidy up after their server stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.recovered: list[int] = []

    async def recover(self, run: Run) -> dict[str, Any] | None:
        self.recovered.append(run.id)
        return {"recovered_by": "this server"}


class Asking(Recovering):
    """Runs that ask a question, then complete with the answer they got as their result."""

    async def execute(self, run: Run, ctx: RunContext) -> Outcome:
        await ctx.running()
        self.started.append(run)
        asked = asyncio.ensure_future(ctx.wait_input("Proceed?"))
        if not await done_unless_killed(asked, ctx):
            asked.cancel()
            return Outcome("killed", ctx.kill_reason)
        return Outcome("completed", "agent_done", result={"answer": asked.result()})


@dataclass
class Server:
    runs: Runs
    store: SqliteStore
    pipeline: Recovering


@pytest.fixture
async def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Server, Server]]:
    """Servers `a` and `b` (two instances, so two owners) on one database file. Only `a` dispatches,
    so every run executes there and `b` is the server that is asked."""
    monkeypatch.setattr(service, "POLL_S", POLL_S)
    # A test that plays a server's death must not race the watchers: they look once an hour, unless
    # a test starts one with `WATCH_S` (read at each look).
    monkeypatch.setattr(service, "WATCH_S", 3600.0)
    made: list[Server] = []
    try:
        for instance in ("a", "b"):
            clock = SystemClock()
            store = await SqliteStore.open(tmp_path / "coral.db", clock=clock)
            pipeline = Asking() if instance == "a" else Recovering()
            runs = Runs(
                lambda s=store: s.runs,
                EventBus(clock=clock),
                clock,
                {"pipeline": pipeline},
                instance=instance,
            )
            made.append(Server(runs, store, pipeline))
        await made[0].runs.start()
        yield made[0], made[1]
    finally:
        for server in made:
            await server.runs.close()
            await server.store.close()


async def status_of(server: Server, run_id: int, *statuses: str) -> Run | None:
    run = await server.store.runs.get(run_id)
    return run if run is not None and run.status in statuses else None


async def waiting(a: Server, b: Server) -> Run:
    run = await a.runs.submit("pipeline", SPEC)
    await wait_until(
        lambda: status_of(b, run.id, "waiting_input"), what=f"run {run.id} waiting, as b sees it"
    )
    return run


async def test_a_kill_sent_to_the_other_server_is_carried_out_where_the_run_executes(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    run = await waiting(a, b)
    seen = await b.runs.kill(run.id)  # before: RunNotActive("waiting_input on another server")
    assert seen.id == run.id and seen.owner == a.runs.owner
    ended = await wait_until(
        lambda: status_of(b, run.id, "killed", "completed", "failed"), what="the run's end"
    )
    assert (ended.status, ended.exit_reason) == ("killed", "user_cancelled")
    assert (await a.runs.get(run.id)).status == "killed"
    with pytest.raises(RunNotActive):  # ended: a second kill finds nothing to kill
        await b.runs.kill(run.id)


async def test_an_answer_sent_to_the_other_server_reaches_the_run(servers: tuple[Server, Server]) -> None:
    a, b = servers
    run = await waiting(a, b)
    await b.runs.answer(run.id, "yes, go on")
    with pytest.raises(RunNotWaiting, match="already on its way"):
        await b.runs.answer(run.id, "a second answer")  # before the first was taken
    done = await wait_until(
        lambda: status_of(b, run.id, "completed", "killed", "failed"), what="the run's end"
    )
    assert (done.status, done.result) == ("completed", {"answer": "yes, go on"})
    with pytest.raises(RunNotWaiting):
        await b.runs.answer(run.id, "too late")


async def test_requests_are_taken_once_and_only_by_the_server_asked(servers: tuple[Server, Server]) -> None:
    a, b = servers
    run = await waiting(a, b)
    owner = a.runs.owner
    assert await b.store.runs.request_kill(run.id, "someone-else", "user_cancelled") is False  # not its run
    assert await b.store.runs.request_answer(run.id, owner, "first") is True
    assert await b.store.runs.request_answer(run.id, owner, "second") is False  # one on its way
    _, _, for_b = await b.store.runs.claim_next(b.runs.owner, 1, 1, now=0.0)
    assert for_b == []  # b holds no run: nothing is taken for it
    done = await wait_until(lambda: status_of(b, run.id, "completed"), what="the run answered")
    assert done.result == {"answer": "first"}
    _, _, again = await a.store.runs.claim_next(owner, 1, 1, now=0.0)
    assert again == []  # taken once, by a's pass
    assert await b.store.runs.request_kill(run.id, owner, "user_cancelled") is False  # ended


async def test_a_run_of_a_stopped_server_is_not_asked_in_vain(servers: tuple[Server, Server]) -> None:
    a, b = servers
    run = await waiting(a, b)
    stored = await b.store.runs.get(run.id)
    assert stored is not None
    stored.owner = GONE
    await b.store.runs.update(stored)
    with pytest.raises(RunNotActive, match="has stopped"):
        await b.runs.kill(run.id)
    with pytest.raises(RunNotWaiting, match="has stopped"):
        await b.runs.answer(run.id, "yes")
    stored.owner = a.runs.owner  # give it back, so that a ends it at close
    await b.store.runs.update(stored)


async def orphan(server: Server) -> Run:
    """A run that a server process now gone was executing, as the store has it after a crash."""
    run = Run(
        id=0,
        kind="pipeline",
        trigger="api",
        status="running",
        spec=SPEC,
        display_name="orphan",
        created_at=server.runs.clock.time(),
    )
    await server.store.runs.admit(run, None)
    run.owner, run.started_at = GONE, run.created_at
    await server.store.runs.update(run)
    return run


async def test_the_runs_of_a_server_that_stopped_are_ended_by_a_live_one_once(
    servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of a server that is gone is taken over and ended by a live server that watches, once
    (before: it stayed running, holding a slot, until that server started again)."""
    a, b = servers
    monkeypatch.setattr(service, "WATCH_S", WATCH_S)
    await b.runs.start()
    run = await orphan(b)
    assert GONE in await b.store.runs.busy_owners()

    ended = await wait_until(lambda: status_of(b, run.id, "failed"), what="the orphan ended")
    assert (ended.exit_reason, ended.result) == ("server_restart", {"recovered_by": "this server"})
    assert ended.owner == b.runs.owner  # a's watcher sleeps its first hour
    assert a.pipeline.recovered + b.pipeline.recovered == [run.id]  # tidied up once
    assert GONE not in await b.store.runs.busy_owners()


async def test_a_run_is_taken_over_by_one_server_only(servers: tuple[Server, Server]) -> None:
    a, b = servers
    run = await waiting(a, b)
    assert await b.store.runs.take_over(run.id, "someone-else", b.runs.owner) is None  # not theirs
    taken = await b.store.runs.take_over(run.id, a.runs.owner, b.runs.owner)
    assert taken is not None and taken.owner == b.runs.owner and taken.status == "waiting_input"
    assert await a.store.runs.take_over(run.id, a.runs.owner, a.runs.owner) is None  # already taken
    taken.owner = a.runs.owner  # give it back, so that a ends it at close
    await b.store.runs.update(taken)
