"""Black-box: the signed session-end report, durable delivery across restarts, and the deliveries API."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coral_server.webhooks.verify import verify_coral_signature, verify_webhook
from tests.conftest import WAIT_S, Coral, agent_spec, session_body, start_coral, wait_until
from tests.e2e.mcp_client import connect

SECRET = "end-report-secret"
FAST = {"webhook_secrets": (SECRET,), "webhook_retry_max_s": 0.2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EndReceiver:
    """The app's session-end endpoint: verifies both signatures, records reports, may fail on purpose."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/coral/session-end"
        self.reports: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.failures = 0  # answer 503 to this many requests first
        self.seen: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verify_coral_signature(request.headers, body, [SECRET])
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=503, text="busy")
        verify_webhook(request.headers, body, [SECRET], seen_ids=self.seen)  # a replay would raise
        self.reports.append(json.loads(body))
        self.headers.append(dict(request.headers))
        self.arrived.set()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/coral/session-end", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_report(self, timeout: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not self.reports:
                self.arrived.clear()
                await self.arrived.wait()
        return self.reports.pop(0)


@pytest.fixture
async def receiver() -> AsyncIterator[EndReceiver]:
    rec = EndReceiver(free_port())
    await rec.start()
    yield rec
    await rec.stop()


@pytest.fixture
async def ecoral(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, **FAST):
        yield server


def end_body(agents: list[dict[str, Any]], url: str, **settings: Any) -> dict[str, Any]:
    return session_body(agents, webhooks={"sessionEnd": {"url": url}}, **settings)


async def deliveries(coral: Coral, query: str = "") -> list[dict[str, Any]]:
    status, out = await coral.request("GET", f"/api/v1/webhooks/deliveries{query}")
    assert status == 200, out
    return out  # type: ignore[no-any-return]


async def wait_delivery(coral: Coral, query: str, check: Any, timeout: float = WAIT_S) -> dict[str, Any]:
    """The newest delivery `query` lists, once `check` accepts it."""
    found: list[dict[str, Any]] = []

    async def matching() -> dict[str, Any] | None:
        nonlocal found
        found = await deliveries(coral, query)
        return found[0] if found and check(found[0]) else None

    return await wait_until(matching, timeout, interval=0.05, what=lambda: f"a matching delivery in {found}")


async def test_report_on_delete_carries_threads_messages_and_agents(
    ecoral: Coral, receiver: EndReceiver
) -> None:
    agents = [agent_spec("writer", runtime="external"), agent_spec("reader", runtime="external")]
    body = end_body(agents, receiver.url)
    body["annotations"] = {"tenant": "acme"}
    ns, sid = await ecoral.create_session(body)
    async with connect(await ecoral.connection_url(ns, sid, "writer")) as writer:
        thread = await writer.ok("coral_create_thread", threadName="plan", participantNames=["reader"])
        thread_id = thread["thread"]["id"]
        await writer.ok("coral_send_message", threadId=thread_id, content="hello reader", mentions=["reader"])
    status, _ = await ecoral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    assert status == 200
    report = await receiver.next_report()
    assert (report["type"], report["sessionId"], report["namespace"]) == ("session_end", sid, ns)
    assert report["reason"] == "deleted" and report["annotations"] == {"tenant": "acme"}
    assert report["closedAt"] >= report["createdAt"] > 0
    [t] = report["threads"]
    assert (t["id"], t["name"], t["participants"]) == (thread_id, "plan", ["writer", "reader"])
    [m] = t["messages"]
    assert (m["senderName"], m["text"], m["mentionNames"]) == ("writer", "hello reader", ["reader"])
    by_name = {a["name"]: a for a in report["agents"]}
    assert set(by_name) == {"writer", "reader"}
    assert by_name["writer"]["status"] == "exited" and by_name["writer"]["runtime"] == "external"
    # The reference server's fields, for receivers written against it.
    assert report["namespaceState"]["name"] == ns
    assert report["sessionState"] == {
        "type": "base",
        "state": {
            "id": sid,
            "timestamp": report["createdAt"],
            "namespace": ns,
            "annotations": {"tenant": "acme"},
        },
    }
    assert [s["name"] for s in report["agentStats"]] == ["writer", "reader"]
    # The delivery is listed, with its one successful attempt; webhook-id names it.
    listed = await wait_delivery(
        ecoral, f"?namespace={ns}&sessionId={sid}", lambda d: d["status"] == "delivered"
    )
    assert listed["id"] == receiver.headers[0]["webhook-id"]
    assert (listed["kind"], listed["subject"], listed["attempts"], listed["url"]) == (
        "session_end",
        f"{ns}/{sid}",
        1,
        receiver.url,
    )
    status, detail = await ecoral.request("GET", f"/api/v1/webhooks/deliveries/{listed['id']}")
    assert status == 200
    assert detail["payload"]["sessionId"] == sid
    [attempt] = detail["attemptLog"]
    assert attempt["number"] == 1 and attempt["status"] == 204 and attempt["error"] is None


async def test_extended_report_carries_the_full_state(ecoral: Coral, receiver: EndReceiver) -> None:
    body = end_body([agent_spec("solo", runtime="external")], receiver.url, extendedEndReport=True)
    ns, sid = await ecoral.create_session(body)
    await ecoral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
    report = await receiver.next_report()
    assert report["sessionState"]["type"] == "extended"
    state = report["sessionState"]["state"]
    assert state["id"] == sid and state["closeReason"] == "deleted" and state["agents"][0]["name"] == "solo"


async def test_reason_ttl(ecoral: Coral, receiver: EndReceiver) -> None:
    await ecoral.create_session(end_body([agent_spec("a", runtime="external")], receiver.url, ttl=300))
    report = await receiver.next_report()
    assert report["reason"] == "ttl" and "300 ms" in report["detail"]


async def test_reason_closed_by_agent(ecoral: Coral, receiver: EndReceiver) -> None:
    agent = agent_spec("boss", runtime="external", plugins=[{"type": "close_session_tool"}])
    ns, sid = await ecoral.create_session(end_body([agent], receiver.url))
    async with connect(await ecoral.connection_url(ns, sid, "boss")) as boss:
        await boss.session.list_tools()  # the SDK checks results against the listed tools
        await boss.ok("coral_close_session", reason="work is done")
        report = await receiver.next_report()
    assert report["reason"] == "closed_by_agent" and report["detail"] == "boss: work is done"


async def test_reason_all_agents_exited_with_exit_status(
    ecoral: Coral, receiver: EndReceiver, tmp_path: Path
) -> None:
    options = {
        "PID_FILE": {"type": "string", "value": str(tmp_path / "q.pid")},
        "EXIT_AFTER_S": {"type": "f64", "value": 0.1},
    }
    await ecoral.create_session(end_body([agent_spec("q", "sleeper", options=options)], receiver.url))
    report = await receiver.next_report()
    assert report["reason"] == "all_agents_exited"
    [agent] = report["agents"]
    assert (agent["name"], agent["status"], agent["exitCode"]) == ("q", "exited", 7)
    assert agent["endTime"] >= agent["startTime"] > 0


async def test_receiver_down_loses_nothing_across_a_restart(tmp_path: Path) -> None:
    receiver = EndReceiver(free_port())  # not listening yet: connections are refused
    async for first in start_coral(tmp_path, **FAST):
        ns, sid = await first.create_session(end_body([agent_spec("a", runtime="external")], receiver.url))
        await first.request("DELETE", f"/api/v1/session/{ns}/{sid}")
        pending = await wait_delivery(first, "?kind=session_end", lambda d: d["attempts"] >= 2)
        assert pending["status"] == "pending" and pending["lastError"] is not None
    # The first server is gone; the receiver comes back; a new server on the same data dir delivers.
    await receiver.start()
    try:
        async for second in start_coral(tmp_path, **FAST):
            report = await receiver.next_report()
            assert (report["sessionId"], report["reason"]) == (sid, "deleted")
            done = await wait_delivery(second, f"?namespace={ns}", lambda d: d["status"] == "delivered")
            assert done["id"] == pending["id"] == receiver.headers[0]["webhook-id"]
            _, detail = await second.request("GET", f"/api/v1/webhooks/deliveries/{done['id']}")
            log = detail["attemptLog"]
            assert len(log) == done["attempts"] >= 3
            assert all(a["status"] is None and a["error"] for a in log[:-1])  # refused while down
            assert log[-1]["status"] == 204
    finally:
        await receiver.stop()
    assert len(receiver.reports) == 0  # exactly one report arrived (popped above), none twice


async def test_failed_delivery_is_retried_on_request(tmp_path: Path, receiver: EndReceiver) -> None:
    receiver.failures = 1
    async for coral in start_coral(tmp_path, webhook_max_attempts=1, **FAST):
        ns, sid = await coral.create_session(end_body([agent_spec("a", runtime="external")], receiver.url))
        await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}")
        failed = await wait_delivery(coral, "?status=failed", lambda d: True)
        assert failed["lastStatus"] == 503 and failed["lastError"] == "HTTP 503"
        assert failed["nextAttemptAt"] is None
        status, out = await coral.request("POST", f"/api/v1/webhooks/deliveries/{failed['id']}/retry", {})
        assert status == 202 and out["status"] == "pending" and out["maxAttempts"] == 2
        report = await receiver.next_report()
        assert report["sessionId"] == sid
        done = await wait_delivery(coral, "", lambda d: d["status"] == "delivered")
        _, detail = await coral.request("GET", f"/api/v1/webhooks/deliveries/{done['id']}")
        assert [a["status"] for a in detail["attemptLog"]] == [503, 204]
        # Only a failed delivery can be retried.
        status, out = await coral.request("POST", f"/api/v1/webhooks/deliveries/{done['id']}/retry")
        assert status == 409 and "delivered" in out["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=bogus", "status"),
        ("?limit=0", "limit"),
        ("?limit=many", "limit"),
        ("?sessionId=abc", "namespace"),
    ],
)
async def test_bad_delivery_filters_are_400s_naming_the_field(coral: Coral, query: str, field: str) -> None:
    status, out = await coral.request("GET", f"/api/v1/webhooks/deliveries{query}")
    assert status == 400 and [e["field"] for e in out["errors"]] == [field]


async def test_unknown_delivery_and_bad_retry_bodies(coral: Coral) -> None:
    status, out = await coral.request("GET", "/api/v1/webhooks/deliveries/nope")
    assert status == 404 and "nope" in out["message"]
    status, out = await coral.request("POST", "/api/v1/webhooks/deliveries/nope/retry")
    assert status == 404
    status, out = await coral.request("POST", "/api/v1/webhooks/deliveries/nope/retry", {"attempts": 0})
    assert status == 400 and out["errors"][0]["field"] == "attempts"
    status, out = await coral.request("POST", "/api/v1/webhooks/deliveries/nope/retry", data=b"{oops")
    assert status == 400
    assert await deliveries(coral) == []


async def test_bad_session_end_url_is_a_400(coral: Coral) -> None:
    body = end_body([agent_spec("a", runtime="external")], "ftp://example.invalid/x")
    status, out = await coral.request("POST", "/api/v1/session", body)
    assert status == 400
    assert out["errors"][0]["field"] == "execution.runtimeSettings.webhooks.sessionEnd.url"


async def test_minimum_time_keeps_a_closed_session_readable(coral: Coral, tmp_path: Path) -> None:
    # The window runs from creation and the agent must exit well inside it: no zygote start in it.
    await coral.warm_python_agents()
    options = {
        "PID_FILE": {"type": "string", "value": str(tmp_path / "m.pid")},
        "EXIT_AFTER_S": {"type": "f64", "value": 0.05},
    }
    ns, sid = await coral.create_session(
        session_body(
            [agent_spec("m", "sleeper", options=options)],
            persistenceMode={"mode": "minimum_time", "time": 2500},
        )
    )
    state = await coral.wait_for(ns, sid, lambda s: s["closing"] and "closedAt" in s)
    assert state["closeReason"] == "all_agents_exited"
    assert state["agents"][0]["exitCode"] == 7
    await coral.wait_gone(ns, sid)
    # Gone only once the minimum time since creation has passed (it closed long before).
    assert time.time() * 1000 - state["timestamp"] >= 2400
    assert state["closedAt"] - state["timestamp"] < 2000


async def test_persistence_none_forgets_at_once(coral: Coral, tmp_path: Path) -> None:
    options = {
        "PID_FILE": {"type": "string", "value": str(tmp_path / "n.pid")},
        "EXIT_AFTER_S": {"type": "f64", "value": 0.05},
    }
    ns, sid = await coral.create_session(
        session_body([agent_spec("n", "sleeper", options=options)], persistenceMode={"type": "None"})
    )
    await coral.wait_gone(ns, sid)
