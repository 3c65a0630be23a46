"""Black-box: a full disk (a real ENOSPC, see tests/fulldisk.py) loses nothing accepted, silently.

Operations that need the store answer 503; what was accepted before the disk filled (a session's
end report, a run's last status and its webhook, a session's journal) waits for the store, is shown
in `/health`, an event and an ERROR line, and is stored and delivered once there is room again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coral_server.api.keys import EVENTS, RUNS
from coral_server.app import DATABASE
from coral_server.events import SERVER_TOPIC, Subscription
from coral_server.runs.model import Run
from tests.conftest import Coral, agent_spec, session_body, start_coral, wait_until
from tests.fulldisk import FullDisk, small_filesystem
from tests.jobs.clis import agent_repo

__all__ = ["agent_repo"]  # a fixture, imported so pytest finds it


class Receiver:
    """The app's webhook endpoint: keeps every body it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.bodies.append(json.loads(await request.read()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of_type(self, key: str, value: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get(key) == value]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[FullDisk]:
    with small_filesystem(tmp_path / "small") as disk:
        yield disk


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def reporting(receiver: Receiver, *names: str) -> dict[str, Any]:
    agents = [agent_spec(n, runtime="external") for n in names or ("me",)]
    return session_body(agents, webhooks={"sessionEnd": {"url": receiver.url}})


async def next_of(feed: Subscription, type: str) -> dict[str, Any]:
    while True:
        event = await feed.next(timeout=30)
        assert event is not None, f"no {type} event"
        if event.type == type:
            return event.to_json()


async def test_full_disk_503s_and_keeps_what_was_accepted(
    disk: FullDisk, receiver: Receiver, agent_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="coral_server")
    async for coral in start_coral(disk.root, data_dir=disk.root / "data"):
        await full_disk_scenario(coral, disk, receiver, agent_repo, caplog)


async def full_disk_scenario(
    coral: Coral, disk: FullDisk, receiver: Receiver, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = coral.app[EVENTS].subscribe(SERVER_TOPIC)
    ns, ended = await coral.create_session(reporting(receiver))
    _, talking = await coral.create_session(reporting(receiver, "me", "you"))
    run = {"prompt": "p", "repo_path": str(repo), "agent_type": "coral", "webhook_url": receiver.url}
    worker = session_body([agent_spec("w", runtime="external")], namespace="jobs")
    status, out = await coral.request("POST", "/api/tasks/run", {**run, "session": worker})
    assert status == 200, out
    run_id = out["run_id"]
    await wait_until(lambda: stored_run(coral, run_id, "running"), what="the run running")
    disk.fill()

    # What needs the store is refused, with a 503 that says why; nothing starts.
    status, out = await coral.request("POST", "/api/v1/local/session", reporting(receiver))
    assert status == 503 and "disk is full" in out["message"], out
    status, out = await coral.request("POST", "/api/tasks/run", {**run, "session": worker})
    assert status == 503 and "disk is full" in out["message"], out
    status, listing = await coral.request("GET", f"/api/v1/session/{ns}")
    assert sorted(s["sessionId"] for s in listing) == sorted([ended, talking])
    assert (await next_of(feed, "store_unavailable"))["error"] == "database or disk is full"

    # What was accepted before waits: an end report, a run's end and its webhook, a journal entry.
    assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{ended}"))[0] == 200
    assert (await coral.request("POST", f"/api/tasks/runs/{run_id}/kill"))[0] == 200
    new_thread = {"threadName": "t", "participantNames": ["you"]}
    status, out = await coral.request("POST", f"/api/v1/puppet/{ns}/{talking}/me/thread", new_thread)
    assert status == 200, out
    await wait_until(lambda: logged(caplog, "run.status_unstored "), what="the run's end held")
    status, health = await coral.request("GET", "/health")
    assert status == 200 and health["status"] == "degraded", health
    assert health["store"]["available"] is False and health["store"]["failedWrites"] >= 2
    assert health["unstoredWebhooks"] == 1  # the end report (the run's webhook waits for its status)
    assert receiver.of_type("sessionId", ended) == [] and receiver.of_type("status", "killed") == []
    assert logged(caplog, "webhook.unstored ") and logged(caplog, "session.journal_unstored ")

    disk.free()
    await wait_until(lambda: receiver.of_type("sessionId", ended), what="the held end report")
    await next_of(feed, "store_available")
    killed = await wait_until(lambda: stored_run(coral, run_id, "killed"), what="the run's end stored")
    assert killed.exit_reason == "user_cancelled"
    await wait_until(lambda: receiver.of_type("status", "killed"), what="the run's last webhook")
    journal = await wait_until(
        lambda: coral.app[DATABASE].store.sessions.journal(talking), what="the journal written"
    )
    assert [e.kind for e in journal] == ["thread"]
    await coral.create_session(reporting(receiver))  # room again: sessions are recorded
    [report] = receiver.of_type("sessionId", ended)
    assert report["reason"] == "deleted"
    status, deliveries = await coral.request("GET", "/api/v1/webhooks/deliveries?kind=session_end")
    assert [d["status"] for d in deliveries] == ["delivered"]
    await wait_until(lambda: health_ok(coral), what="/health ok again")
    feed.close()


def logged(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.getMessage().startswith(prefix)
    ]


async def health_ok(coral: Coral) -> bool:
    return await coral.request("GET", "/health") == (200, {"status": "ok"})


async def stored_run(coral: Coral, run_id: int, status: str) -> Run | None:
    """The run as the store has it, once it shows `status` (the live record may be ahead of it)."""
    run = await coral.app[RUNS].store.get(run_id)
    return run if run is not None and run.status == status else None


async def test_a_report_the_store_never_took_is_sent_at_shutdown(disk: FullDisk, receiver: Receiver) -> None:
    async for coral in start_coral(disk.root, data_dir=disk.root / "data"):
        ns, sid = await coral.create_session(reporting(receiver, "me", "you"))
        disk.fill()
        new_thread = {"threadName": "late", "participantNames": ["you"]}
        status, out = await coral.request("POST", f"/api/v1/puppet/{ns}/{sid}/me/thread", new_thread)
        assert status == 200, out  # its journal entry cannot be written
        started = time.monotonic()
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        assert time.monotonic() - started < 8  # the close does not sit out the journal (10 s)
        _, health = await coral.request("GET", "/health")
        assert health["unstoredWebhooks"] == 1, health
    # The server stopped with the disk still full: the held report had its one attempt then, with
    # the thread the journal could not keep.
    [report] = receiver.bodies
    assert report["sessionId"] == sid and [t["name"] for t in report["threads"]] == ["late"]
