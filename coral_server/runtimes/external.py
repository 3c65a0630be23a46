"""External runtime: the server launches nothing; the app connects the agent itself."""

from __future__ import annotations

import asyncio

from coral_server.runtimes.base import AgentHandle, AgentLog, LaunchSpec


class ExternalHandle:
    """Stands for an agent that runs elsewhere; it 'exits' only when the session stops it."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str | None:
        return None

    async def wait(self) -> int:
        await self._stopped.wait()
        return 0

    async def stop(self, grace: float) -> int:
        self._stopped.set()
        return 0


class ExternalRuntime:
    """`provider.runtime = "external"`: the agent's MCP URL is handed to the app through the API."""

    name = "external"

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        return ExternalHandle()
