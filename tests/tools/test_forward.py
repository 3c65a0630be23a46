"""The custom tool forwarder against a real app on 127.0.0.1: where it may call (issue 15.11)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from coral_server.sessions import CustomToolSpec
from coral_server.tools import CustomToolError, CustomToolForwarder
from coral_server.webhooks.destinations import DestinationPolicy


def unsigned(body: bytes, header: str, msg_id: str) -> dict[str, str]:
    return {}


@pytest.fixture
async def app_calls() -> AsyncIterator[tuple[int, list[str]]]:
    """An app answering every call with {"ok": true}; yields its port and the paths it was called on."""
    calls: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield runner.addresses[0][1], calls
    await runner.cleanup()


async def test_internal_tools_are_refused_without_a_request(app_calls: tuple[int, list[str]]) -> None:
    port, calls = app_calls
    strict = CustomToolForwarder(unsigned, destinations=DestinationPolicy(private=False))
    try:
        for base in (f"http://127.0.0.1:{port}/tools", f"http://localhost:{port}/tools"):
            tool = CustomToolSpec(name="lookup", url=base)
            with pytest.raises(CustomToolError) as info:
                await strict.call(tool, {}, namespace="n", session_id="s", agent="a")
            assert info.value.outcome == "denied"
            assert "may not call this tool's URL" in str(info.value) and "loopback" in str(info.value)
        assert calls == []
    finally:
        await strict.close()
    dev = CustomToolForwarder(unsigned, destinations=DestinationPolicy(private=True))
    try:
        tool = CustomToolSpec(name="lookup", url=f"http://localhost:{port}/tools")
        out = await dev.call(tool, {}, namespace="n", session_id="s", agent="a")
        assert out.structured == {"ok": True} and calls == ["/tools/s/a"]
    finally:
        await dev.close()
