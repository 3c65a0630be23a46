"""A small MCP client for Coral agents.

`CoralAgent` wraps the official MCP client (`mcp.ClientSession` over streamable HTTP or
SSE) and adds typed helpers for the Coral tools, so an agent is a handful of lines::

    async def on_mention(agent: CoralAgent, message: dict[str, Any]) -> None:
        await agent.send_message(message["threadId"], "hi", [message["senderName"]])

    CoralAgent.run_forever(on_mention)

The module stays lean on purpose: every agent process pays its import time, so the MCP
SDK is imported lazily (only when connecting) and nothing from the server is imported.
The pure helpers (`transport_for`, `AgentEnv.from_environ`, `parse_tool_result`,
`message_of`) can be used and tested without a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlparse

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult, Tool

__all__ = [
    "AgentEnv",
    "ConfigError",
    "ConnectionLost",
    "CoralAgent",
    "MentionHandler",
    "ToolError",
    "configure_logging",
    "is_disconnect",
    "message_of",
    "parse_tool_result",
    "result_text",
    "transport_for",
]

log = logging.getLogger("coral_server.agent")

Transport = Literal["streamable_http", "sse"]
MentionHandler = Callable[["CoralAgent", dict[str, Any]], Awaitable[None]]

DEFAULT_WAIT_MS = 60_000
INSTRUCTION_URI = "coral://instruction"
STATE_URI = "coral://state"


class ConfigError(RuntimeError):
    """The agent's environment is missing or has invalid CORAL_* variables."""


class ToolError(RuntimeError):
    """A Coral tool answered with `isError: true`; the message is the server's text."""

    def __init__(self, message: str, tool: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.tool = tool


class ConnectionLost(RuntimeError):
    """The MCP connection to the Coral server is gone (e.g. the session was closed)."""


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def transport_for(url: str) -> Transport:
    """Pick the MCP transport for a connection URL: SSE when the path ends in `/sse` or `/sse/`."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"not an http(s) URL: {url!r}")
    return "sse" if parsed.path.rstrip("/").endswith("/sse") else "streamable_http"


@dataclass(frozen=True)
class AgentEnv:
    """The variables the Coral server gives a launched agent."""

    connection_url: str
    agent_id: str = ""
    agent_secret: str = ""
    session_id: str = ""
    api_url: str = ""
    runtime_id: str = ""
    system_prompt: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> AgentEnv:
        """Read the CORAL_* variables (from `os.environ` by default).

        Raises `ConfigError` when `CORAL_CONNECTION_URL` is missing or not an http(s) URL.
        """
        env = os.environ if environ is None else environ
        url = env.get("CORAL_CONNECTION_URL", "").strip()
        if not url:
            raise ConfigError(
                "CORAL_CONNECTION_URL is not set: this program is a Coral agent and must be "
                "launched by a Coral server (or given the MCP URL of an agent in a session)"
            )
        transport_for(url)  # validates the URL
        return cls(
            connection_url=url,
            agent_id=env.get("CORAL_AGENT_ID", ""),
            agent_secret=env.get("CORAL_AGENT_SECRET", ""),
            session_id=env.get("CORAL_SESSION_ID", ""),
            api_url=env.get("CORAL_API_URL", ""),
            runtime_id=env.get("CORAL_RUNTIME_ID", ""),
            system_prompt=env.get("CORAL_PROMPT_SYSTEM", ""),
        )


def result_text(result: CallToolResult) -> str:
    """Concatenate the text content blocks of a tool result."""
    return "".join(getattr(block, "text", "") for block in result.content if block.type == "text")


def parse_tool_result(result: CallToolResult, tool: str = "") -> dict[str, Any]:
    """Turn a Coral tool result into its JSON object.

    Uses `structuredContent` when it is an object, else parses the text content as JSON
    (a non-object or non-JSON text is returned as `{"text": ...}`). Raises `ToolError` with
    the server's message when the result has `isError` set.
    """
    text = result_text(result)
    if result.is_error:
        raise ToolError(text or f"tool {tool or '?'} failed", tool)
    if isinstance(result.structured_content, dict):
        return dict(result.structured_content)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


def message_of(wait_result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The message of a `coral_wait_for_*` result, or None when it timed out."""
    message = wait_result.get("message")
    return dict(message) if isinstance(message, dict) else None


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class CoralAgent:
    """An MCP connection to a Coral server, as one agent of a session.

    Use as an async context manager; on enter it connects (streamable HTTP, or SSE when the
    URL path ends in `/sse`) and runs the MCP `initialize` handshake.
    """

    def __init__(self, url: str, name: str = "", *, env: AgentEnv | None = None) -> None:
        self.url = url
        self.transport: Transport = transport_for(url)
        self.name = name
        self.env = env if env is not None else AgentEnv(connection_url=url, agent_id=name)
        self._stack: contextlib.AsyncExitStack | None = None
        self._session: ClientSession | None = None
        self._stop = asyncio.Event()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CoralAgent:
        """Build an agent from the CORAL_* variables the server sets (see `AgentEnv`)."""
        env = AgentEnv.from_environ(environ)
        return cls(env.connection_url, env.agent_id, env=env)

    # -- connection ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        from mcp import ClientSession

        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            if self.transport == "sse":
                from mcp.client.sse import sse_client

                read, write = await stack.enter_async_context(sse_client(self.url, sse_read_timeout=3600))
            else:
                from mcp.client.streamable_http import streamable_http_client

                read, write = await stack.enter_async_context(streamable_http_client(self.url))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._session = session
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._session = self._stack, None, None
        if stack is None:
            return
        try:
            await stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The SDK's task groups wrap an exception raised in the `async with` body; give the
            # caller back its own exception instead (returning lets Python re-raise it).
            if exc is None or not _contains(group, exc):
                raise
            log.debug("dropped while closing: %r", group)

    @property
    def session(self) -> ClientSession:
        """The underlying `mcp.ClientSession` (only while connected)."""
        if self._session is None:
            raise ConnectionLost("not connected: use `async with CoralAgent(...)`")
        return self._session

    # -- generic MCP --------------------------------------------------------------------------

    async def tools(self) -> list[Tool]:
        """Every tool the server offers this agent."""
        from mcp.types import PaginatedRequestParams

        result = await self.session.list_tools()
        tools = list(result.tools)
        while result.next_cursor:
            result = await self.session.list_tools(params=PaginatedRequestParams(cursor=result.next_cursor))
            tools.extend(result.tools)
        return tools

    async def call_raw(self, tool: str, arguments: Mapping[str, Any] | None = None) -> CallToolResult:
        """Call a tool and return the MCP result as is (errors are not raised)."""
        return await self.session.call_tool(tool, dict(arguments or {}))

    async def call(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        """Call a tool and return its JSON result; raises `ToolError` when it reports an error."""
        return parse_tool_result(await self.call_raw(tool, arguments), tool)

    async def read_resource(self, uri: str) -> str:
        """The text of a resource (e.g. `coral://instruction`, `coral://state`)."""
        result = await self.session.read_resource(uri)
        return "".join(getattr(item, "text", "") for item in result.contents)

    async def instruction(self) -> str:
        """The `coral://instruction` resource: who this agent is and how to use Coral."""
        return await self.read_resource(INSTRUCTION_URI)

    async def state(self) -> str:
        """The `coral://state` resource: linked agents and this agent's threads."""
        return await self.read_resource(STATE_URI)

    # -- Coral tools --------------------------------------------------------------------------

    async def create_thread(self, name: str, participants: Sequence[str]) -> dict[str, Any]:
        """Create a thread; returns the thread object (`id`, `name`, `participants`, ...)."""
        result = await self.call("coral_create_thread", threadName=name, participantNames=list(participants))
        thread = result.get("thread", result)
        return dict(thread) if isinstance(thread, dict) else result

    async def send_message(
        self, thread_id: str, content: str, mentions: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Post a message in a thread; returns the message object."""
        result = await self.call(
            "coral_send_message", threadId=thread_id, content=content, mentions=list(mentions)
        )
        message = result.get("message", result)
        return dict(message) if isinstance(message, dict) else result

    async def wait_for_mention(self, max_wait_ms: int = DEFAULT_WAIT_MS) -> dict[str, Any] | None:
        """The next message mentioning this agent, or None on timeout."""
        return message_of(await self.call("coral_wait_for_mention", maxWaitMs=max_wait_ms))

    async def wait_for_message(self, max_wait_ms: int = DEFAULT_WAIT_MS) -> dict[str, Any] | None:
        """The next message in any of this agent's threads, or None on timeout."""
        return message_of(await self.call("coral_wait_for_message", maxWaitMs=max_wait_ms))

    async def wait_for_agent(
        self, agent_name: str, max_wait_ms: int = DEFAULT_WAIT_MS
    ) -> dict[str, Any] | None:
        """The next message from `agent_name`, or None on timeout."""
        return message_of(
            await self.call("coral_wait_for_agent", agentName=agent_name, maxWaitMs=max_wait_ms)
        )

    async def add_participant(self, thread_id: str, participant: str) -> dict[str, Any]:
        """Add an agent to a thread."""
        return await self.call("coral_add_participant", threadId=thread_id, participantName=participant)

    async def remove_participant(self, thread_id: str, participant: str) -> dict[str, Any]:
        """Remove an agent from a thread."""
        return await self.call("coral_remove_participant", threadId=thread_id, participantName=participant)

    async def close_thread(self, thread_id: str, summary: str) -> dict[str, Any]:
        """Close a thread with a summary."""
        return await self.call("coral_close_thread", threadId=thread_id, summary=summary)

    # -- run loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `serve` to return after the current wait or handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called (or SIGTERM received under `run_forever`)."""
        return self._stop.is_set()

    async def serve(self, handler: MentionHandler, *, max_wait_ms: int = DEFAULT_WAIT_MS) -> None:
        """Wait for mentions and call `handler(agent, message)` for each, until stopped.

        Returns when `stop()` is called, or when the connection is gone (the server closed
        the session). A handler exception is logged and the loop goes on; a tool error from
        the wait itself is retried with a short back-off.
        """
        failures = 0
        while not self._stop.is_set():
            waiter = asyncio.ensure_future(self.wait_for_mention(max_wait_ms))
            stopper = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                # Cancelled (e.g. the SDK tearing down a dead connection): the wait's outcome is
                # nobody's now; retrieve it so asyncio does not report an unretrieved exception.
                waiter.cancel()
                waiter.add_done_callback(_outcome_dropped)
                raise
            finally:
                stopper.cancel()
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter
                return
            try:
                message = waiter.result()
            except ToolError as exc:
                failures += 1
                log.warning("wait_for_mention failed (%s); retrying", exc)
                if failures >= 10:
                    raise
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            except Exception as exc:
                log.info("connection to the Coral server is gone (%s: %s)", type(exc).__name__, exc)
                return
            failures = 0
            if message is None:
                continue
            try:
                await handler(self, message)
            except ToolError as exc:
                log.warning("handler: tool %s failed: %s", exc.tool, exc)
            except Exception:
                log.exception("mention handler failed")

    @classmethod
    async def run(
        cls,
        handler: MentionHandler,
        *,
        environ: Mapping[str, str] | None = None,
        max_wait_ms: int = DEFAULT_WAIT_MS,
        on_start: Callable[[CoralAgent], Awaitable[None]] | None = None,
    ) -> None:
        """Connect from the environment, stop on SIGTERM/SIGINT, and `serve(handler)`."""
        agent = cls.from_env(environ)
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, agent.stop)
                installed.append(sig)
        connected = False
        try:
            async with agent:
                connected = True
                if on_start is not None:
                    await on_start(agent)
                await agent.serve(handler, max_wait_ms=max_wait_ms)
        except BaseException as exc:
            # Leaving the transport after the server went away may raise; a clean stop is a clean stop.
            if not connected or not (agent.stopping or is_disconnect(exc)):
                raise
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    @classmethod
    def run_forever(
        cls,
        handler: MentionHandler,
        *,
        max_wait_ms: int = DEFAULT_WAIT_MS,
        on_start: Callable[[CoralAgent], Awaitable[None]] | None = None,
    ) -> None:
        """Blocking entry point for an agent script: `run(handler)` in a fresh event loop.

        Exits the process with status 2 and a one-line message when the environment is not
        a Coral agent's; returns normally on SIGTERM or when the server closes the session.
        """
        configure_logging()
        try:
            asyncio.run(cls.run(handler, max_wait_ms=max_wait_ms, on_start=on_start))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            pass


def configure_logging() -> None:
    """Log to stderr at CORAL_LOG_LEVEL (default INFO), keeping the HTTP/MCP libraries quiet."""
    logging.basicConfig(
        level=os.environ.get("CORAL_LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx2", "httpcore2", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _outcome_dropped(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _contains(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    return any(
        e is exc or (isinstance(e, BaseExceptionGroup) and _contains(e, exc)) for e in group.exceptions
    )


def is_disconnect(exc: BaseException) -> bool:
    """Whether an exception (or every leaf of an exception group) means the server went away.

    Transport errors, closed streams, cancellation and MCP errors count; a `ToolError` (the
    server answered, with an error) does not.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(is_disconnect(e) for e in exc.exceptions)
    if isinstance(exc, ToolError):
        return False
    if isinstance(exc, asyncio.CancelledError | ConnectionLost | OSError):
        return True
    name = type(exc).__name__
    module = type(exc).__module__
    return module.startswith(("httpx2", "httpcore2", "anyio")) or name in (
        "MCPError",
        "ClosedResourceError",
        "BrokenResourceError",
        "EndOfStream",
    )
