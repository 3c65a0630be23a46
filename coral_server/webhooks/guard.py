"""The HTTP side of the destination policy: a resolver that connects only to allowed addresses."""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from coral_server.webhooks.destinations import DestinationDenied, DestinationPolicy, literal_address


def guarded_connector(policy: DestinationPolicy) -> aiohttp.TCPConnector:
    """A connector for outgoing webhooks and custom tool calls: every host name it resolves is
    checked against `policy` (IP literals are not resolved: check URLs with `url_problem` first)."""
    return aiohttp.TCPConnector(resolver=GuardedResolver(policy))


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then drops the addresses the policy denies; none left: DestinationDenied."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        found = await self._inner.resolve(host, port, family)
        if self._policy.open:
            return found
        allowed: list[ResolveResult] = []
        problem = None
        for result in found:
            problem_here = self._policy.address_problem(host, literal_address(result["host"]))
            if problem_here is None:
                allowed.append(result)
            else:
                problem = problem_here
        if not allowed:
            raise DestinationDenied(problem or f"{host} resolves to no address")
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def denied_reason(exc: BaseException) -> str | None:
    """The policy's reason when a client error was caused by a denied destination, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationDenied):
            return str(seen)
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, DestinationDenied):
            return str(os_error)
        seen = seen.__cause__
    return None
