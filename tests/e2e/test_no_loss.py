"""Black-box: a wait the client gives up on never swallows a message."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.conftest import Coral, agent_spec, session_body
from tests.e2e.mcp_client import HEADERS, INIT, connect


def call(i: int, tool: str, **args: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": tool, "arguments": args}}


async def test_abandoned_wait_gives_the_message_to_the_next_wait(coral: Coral) -> None:
    ext = [agent_spec("a", runtime="external"), agent_spec("b", runtime="external")]
    ns, sid = await coral.create_session(session_body(ext))
    url_a = await coral.connection_url(ns, sid, "a")
    url_b = await coral.connection_url(ns, sid, "b")
    async with aiohttp.ClientSession() as http, connect(url_a) as a:
        async with http.post(url_b, json=INIT, headers=HEADERS) as r:
            headers = {
                **HEADERS,
                "mcp-session-id": r.headers["mcp-session-id"],
                "mcp-protocol-version": "2025-06-18",
            }
        await http.post(
            url_b, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
        )
        tid = (await a.ok("coral_create_thread", threadName="t", participantNames=["b"]))["thread"]["id"]

        # b waits, then gives up: once its wait is running, its client closes the request.
        async with aiohttp.ClientSession() as impatient:
            # (60 s: longer than wait_for's timeout below, so a wait that is not stopped fails the test.)
            request = asyncio.ensure_future(
                impatient.post(
                    url_b, json=call(2, "coral_wait_for_mention", maxWaitMs=60_000), headers=headers
                )
            )
            await coral.wait_for(ns, sid, lambda s: s["agents"][1]["isWaiting"])
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
        # Sent while the abandoned wait would still be running, once the server has seen the client
        # go and stopped it: it must not swallow the message.
        await coral.wait_for(ns, sid, lambda s: not s["agents"][1]["isWaiting"])
        await a.ok("coral_send_message", threadId=tid, content="are you there?", mentions=["b"])
        async with http.post(
            url_b, json=call(3, "coral_wait_for_mention", maxWaitMs=2000), headers=headers
        ) as r:
            result = (await r.json())["result"]
        payload = json.loads(result["content"][0]["text"])
        assert payload["status"] == "Message received"
        assert payload["message"]["text"] == "are you there?"
    state = await coral.state(ns, sid)
    assert state["agents"][1]["isWaiting"] is False
