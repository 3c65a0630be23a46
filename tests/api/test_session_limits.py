"""Size limits of sessions on a real server: each one broken is a 400 naming its field, the cap on live
sessions a 429; and a large state is read in steps that let the server go on meanwhile."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from coral_server.api import views
from coral_server.api.errors import BadRequest
from coral_server.api.keys import SESSIONS
from coral_server.api.sessions import parse_session
from tests.conftest import Coral, agent_spec, session_body, start_coral

CREATE = "/api/v1/local/session"


def ext(name: str, **extra: Any) -> dict[str, Any]:
    return agent_spec(name, runtime="external", **extra)


def prefix(value: str) -> dict[str, Any]:
    return {"PREFIX": {"type": "string", "value": value}}


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Coral]:
    """A server with tiny limits, so each is met and passed by a small request."""
    async for server in start_coral(
        tmp_path,
        max_sessions=2,
        max_agents_per_session=3,
        max_group_size=2,
        max_ttl_ms=1000,
        max_hold_ms=500,
        max_option_bytes=100,
        max_agent_options_bytes=150,
    ):
        yield server


async def refused(coral: Coral, body: dict[str, Any]) -> dict[str, str]:
    """The 400's problems, field -> message."""
    # Streamed from a file-like object: aiohttp warns about a large body in one piece.
    data = io.BytesIO(orjson.dumps(body))
    status, out = await coral.request("POST", CREATE, data=data, headers={"Content-Type": "application/json"})
    assert status == 400, out
    return {p["field"]: p["message"] for p in out["errors"]}


async def test_each_limit_is_met_then_passed(small: Coral) -> None:
    three = [ext("a"), ext("b"), ext("c")]
    cases: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
        (
            session_body(three, [["a", "b"], ["b", "c"]]),
            session_body([*three, ext("d")], [["a", "b"]]),
            "agentGraphRequest.agents",
            "max_agents_per_session",
        ),
        (
            session_body(three, [["a", "b"]]),
            session_body(three, [["a", "b"], ["a", "b", "c"]]),
            "agentGraphRequest.groups[1]",
            "max_group_size",
        ),
        (
            session_body([ext("a")], ttl=1000),
            session_body([ext("a")], ttl=1001),
            "execution.runtimeSettings.ttl",
            "max_ttl_ms",
        ),
        (
            session_body([ext("a", options=prefix("x" * 100))]),
            session_body([ext("a", options=prefix("é" * 50 + "x"))]),  # bytes, not characters
            "agentGraphRequest.agents[0].options.PREFIX.value",
            "max_option_bytes",
        ),
        (
            session_body([ext("a", systemPrompt="p" * 100)]),
            session_body([ext("a", systemPrompt="p" * 101)]),
            "agentGraphRequest.agents[0].systemPrompt",
            "max_option_bytes",
        ),
        (  # with MAX_REPLIES's default, "1000": 4 bytes
            session_body([ext("a", systemPrompt="p" * 71, options=prefix("x" * 75))]),
            session_body([ext("a", systemPrompt="p" * 71, options=prefix("x" * 76))]),
            "agentGraphRequest.agents[0].options",
            "max_agent_options_bytes",
        ),
    ]
    for fits, too_big, field, setting in cases:
        status, out = await small.request("POST", CREATE, fits)
        assert status == 200, (field, out)
        assert (await small.request("DELETE", f"/api/v1/session/{out['namespace']}/{out['sessionId']}"))[
            0
        ] == 200
        problems = await refused(small, too_big)
        assert list(problems) == [field], problems
        assert setting in problems[field]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"persistenceMode": {"mode": "hold_after_exit", "duration": 501}}, "persistenceMode.duration"),
        ({"persistenceMode": {"type": "HoldAfterExit", "holdTime": 501}}, "persistenceMode.holdTime"),
        ({"persistenceMode": {"mode": "minimum_time", "time": 501}}, "persistenceMode.time"),
    ],
)
async def test_hold_times_name_the_field_that_gave_them(
    small: Coral, settings: dict[str, Any], field: str
) -> None:
    problems = await refused(small, session_body([ext("a")], **settings))
    assert list(problems) == [f"execution.runtimeSettings.{field}"]
    assert "max_hold_ms" in problems[f"execution.runtimeSettings.{field}"]
    # The other spelling of the settings is named as it was sent.
    body = session_body([ext("a")])
    body["sessionRuntimeSettings"] = {"ttl": 5000, **settings}
    problems = await refused(small, body)
    assert set(problems) == {"sessionRuntimeSettings.ttl", f"sessionRuntimeSettings.{field}"}


async def test_the_defaults_refuse_what_the_audit_sent(coral: Coral) -> None:
    """3,000 agents in one group (a 68 MB state), a ttl of 1e18 ms, a 1 MB option value: all 400s."""
    names = [f"a{i}" for i in range(3000)]
    problems = await refused(coral, session_body([ext(n) for n in names], [names]))
    assert set(problems) == {"agentGraphRequest.agents", "agentGraphRequest.groups[0]"}
    problems = await refused(coral, session_body([ext("a")], ttl=10**18))
    assert set(problems) == {"execution.runtimeSettings.ttl"}
    body = session_body([ext("a")], persistenceMode={"mode": "hold_after_exit", "duration": 10**18})
    assert set(await refused(coral, body)) == {"execution.runtimeSettings.persistenceMode.duration"}
    # Accepted before, then "Argument list too long" at launch: now refused, whatever the runtime.
    for runtime in ("executable", "external"):
        agent = agent_spec("a", runtime=runtime, options=prefix("x" * 1024 * 1024))
        assert set(await refused(coral, session_body([agent]))) == {
            "agentGraphRequest.agents[0].options.PREFIX.value"
        }


async def test_a_jobs_session_is_held_to_the_same_limits(small: Coral) -> None:
    body = session_body([ext("a"), ext("b"), ext("c"), ext("d")], [])
    with pytest.raises(BadRequest) as info:
        parse_session(small.app[SESSIONS], body, prefix="session.")
    assert [field for field, _ in info.value.problems] == ["session.agentGraphRequest.agents"]


async def test_live_sessions_are_capped_with_a_429(small: Coral) -> None:
    """Beyond max_sessions a 429 with Retry-After (the request is fine: it succeeds once one ends),
    even for requests that arrive together; closed sessions kept for their hold time do not count."""
    answers = await asyncio.gather(
        *(small.request("POST", CREATE, session_body([ext("a")], namespace=f"n{i}")) for i in range(5))
    )
    assert sorted(status for status, _ in answers) == [200, 200, 429, 429, 429]
    refusal = next(out for status, out in answers if status == 429)
    assert "max_sessions" in refusal["message"]
    async with small.http.post(small.base_url + CREATE, json=session_body([ext("a")])) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "5"
    first = next(out for status, out in answers if status == 200)
    assert (await small.request("DELETE", f"/api/v1/session/{first['namespace']}/{first['sessionId']}"))[
        0
    ] == 200
    held = session_body([ext("a")], persistenceMode={"mode": "hold_after_exit", "duration": 500})
    ns, sid = await small.create_session(held)
    assert (await small.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
    assert (await small.request("GET", f"/api/v1/session/{ns}/{sid}"))[0] == 200  # closed, still held
    await small.create_session(session_body([ext("a")]))


async def test_a_large_state_is_read_in_steps_as_of_one_instant(coral: Coral) -> None:
    ns, sid = await coral.create_session(session_body([ext("a"), ext("b")]))
    session = coral.app[SESSIONS].get(ns, sid)
    a = session.agent("a")
    threads = [session.create_thread(a, f"t{i}", ["b"]) for i in range(3)]
    count = 5 * views.STATE_STEP
    for i in range(count):
        session.send_message(a, threads[i % 3].id, f"message {i}", ["b"])
    expected = orjson.dumps(views.session_state(session))

    read = views.session_state_later(session)  # what it holds is fixed here
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            session.send_message(a, threads[ticks % 3].id, "sent while the state is read", ["b"])
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    state = await read()
    running.cancel()
    assert orjson.dumps(state) == expected  # none of what came meanwhile
    assert ticks >= count // views.STATE_STEP - 1  # the loop ran between the steps
    # The route serves it so: the state as it is when the request is handled.
    async with coral.http.get(f"{coral.base_url}/api/v1/session/{ns}/{sid}") as resp:
        assert await resp.read() == orjson.dumps(views.session_state(session))


async def test_executing_a_deferred_session_is_held_to_the_time_limits(small: Coral) -> None:
    body = session_body([ext("a")])
    body["execution"] = {"mode": "defer"}
    ns, sid = await small.create_session(body)
    path = f"/api/v1/local/session/{ns}/{sid}"
    status, out = await small.request(
        "POST", path, json={"ttl": 5000, "persistenceMode": {"mode": "hold_after_exit", "duration": 900}}
    )
    assert status == 400, out
    fields = {p["field"] for p in out["errors"]}
    assert fields == {"ttl", "persistenceMode"}, out
    state = (await small.request("GET", path))[1]
    assert state["status"] == {"type": "pending_execution"}  # refused: nothing ran
    assert (await small.request("POST", path, json={"ttl": 900}))[0] == 200
