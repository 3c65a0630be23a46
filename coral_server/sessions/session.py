"""A session: its agents, threads and messages, the collaboration rules, TTL and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from coral_server.events import EventBus
from coral_server.runtimes import LaunchFailed, LaunchSpec, LogLine, Runtime
from coral_server.sessions.agent import SessionAgent
from coral_server.sessions.errors import (
    AgentNotFound,
    AgentNotLinked,
    InvalidArgument,
    NotParticipant,
    SessionClosed,
    ThreadClosed,
    ThreadNotFound,
)
from coral_server.sessions.mailbox import WAKE_STEPS, MessageFilter
from coral_server.sessions.model import Message, Thread, new_id, now_ms
from coral_server.sessions.spec import CustomToolSpec, EndWebhook

log = logging.getLogger("coral_server.sessions")

# Why a session ended, as reported in state, events and the session-end webhook.
CloseReason = Literal["ttl", "deleted", "all_agents_exited", "closed_by_agent", "server_shutdown"]

SpecBuilder = Callable[["Session", SessionAgent], LaunchSpec]
ClosedCallback = Callable[["Session"], Awaitable[None]]

# How long an agent's first tool call waits for the blocking agents it is linked to.
BLOCKING_WAIT_S = 60.0


class Session:
    """Owns its agents (and their watcher tasks), its threads and its TTL timer."""

    def __init__(
        self,
        *,
        session_id: str,
        namespace: str,
        agents: Iterable[SessionAgent],
        runtimes: dict[str, Runtime],
        build_spec: SpecBuilder,
        work_dir: Path,
        ttl_ms: int | None,
        stop_grace_s: float,
        on_closed: ClosedCallback,
        annotations: dict[str, str] | None = None,
        hold_ms: int = 0,
        minimum_ms: int = 0,
        custom_tools: dict[str, CustomToolSpec] | None = None,
        end_webhook: EndWebhook | None = None,
    ) -> None:
        self.id = session_id
        self.namespace = namespace
        self.timestamp = now_ms()
        self.agents: dict[str, SessionAgent] = {a.name: a for a in agents}
        self.threads: dict[str, Thread] = {}
        self.annotations = annotations or {}
        self.closing = False
        self.close_reason: CloseReason | None = None
        self.close_detail: str | None = None
        self.closed_at: int | None = None
        self.ttl_ms = ttl_ms
        self.hold_ms = hold_ms  # state stays readable this long after the session closes
        self.minimum_ms = minimum_ms  # ... and at least this long after it was created
        self.end_webhook = end_webhook
        self.namespace_transient = True  # the namespace goes with its last session (set by Sessions)
        self.custom_tools = custom_tools or {}
        self.work_dir = work_dir
        self._runtimes = runtimes
        self._build_spec = build_spec
        self._stop_grace_s = stop_grace_s
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected = asyncio.Condition()
        self._closed = asyncio.Event()
        self._close_lock = asyncio.Lock()
        # The bus every change is published on (set by Sessions.create). Each change and its event
        # happen in one synchronous step, so a state snapshot plus the events after it never gap.
        self.events: EventBus | None = None
        self.final_seq = 0  # seq of session_closed, for views of the closed session
        for agent in self.agents.values():
            agent.log.listeners.append(functools.partial(self._log_line, agent.name))

    # -- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def topic(self) -> str:
        """This session's topic on the event bus."""
        return f"{self.namespace}/{self.id}"

    def _emit(self, type: str, **data: Any) -> None:
        if self.events is not None:
            self.events.publish(self.topic, type, data)

    def _reason(self) -> dict[str, Any]:
        data: dict[str, Any] = {"reason": self.close_reason}
        if self.close_detail is not None:
            data["detail"] = self.close_detail
        return data

    def _end_events(self) -> None:
        if self.events is not None:
            self.final_seq = self.events.publish(self.topic, "session_closed", self._reason()).seq
            self.events.close_topic(self.topic)
            self.events = None  # nothing is published after session_closed

    def _log_line(self, agent: str, line: LogLine) -> None:
        # The line is already redacted (AgentLog.append) before listeners see it.
        self._emit("agent_log", agent=agent, stream=line.stream, text=line.text)

    def _emit_exited(self, agent: SessionAgent) -> None:
        data: dict[str, Any] = {"agent": agent.name, "status": agent.status}
        if agent.exit_code is not None:
            data["exitCode"] = agent.exit_code
        if agent.error is not None:
            data["error"] = agent.error
        self._emit("agent_exited", **data)

    def start(self) -> None:
        """Launch every agent concurrently and arm the TTL timer."""
        self._emit(
            "session_created",
            namespace=self.namespace,
            sessionId=self.id,
            agents=[a.name for a in self.agents.values()],
        )
        for agent in self.agents.values():
            self._spawn(self._run_agent(agent), f"agent:{agent.name}")
        if self.ttl_ms is not None:
            self._spawn(self._expire(self.ttl_ms / 1000), "ttl")

    async def _expire(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.close("ttl", f"time to live of {self.ttl_ms} ms ran out")

    async def _run_agent(self, agent: SessionAgent) -> None:
        runtime = self._runtimes[agent.runtime]
        agent.started_at = now_ms()
        try:
            spec = self._build_spec(self, agent)
            agent.handle = await runtime.launch(spec, agent.log)
        except OSError as exc:
            agent.status, agent.error = "failed", f"cannot prepare the agent: {exc}"
            log.warning("agent.launch_failed session=%s agent=%s error=%s", self.id, agent.name, exc)
        except LaunchFailed as exc:
            agent.status, agent.error = "failed", str(exc)
            log.warning("agent.launch_failed session=%s agent=%s error=%s", self.id, agent.name, exc)
        except Exception as exc:  # whatever a runtime raises ends the launch visibly, never in "pending"
            agent.status, agent.error = "failed", f"launch failed: {type(exc).__name__}: {exc}"
            log.exception("agent.launch_failed session=%s agent=%s", self.id, agent.name)
        else:
            agent.status = "running"
            self._emit("agent_started", agent=agent.name, runtime=agent.runtime)
            log.info("agent.started session=%s agent=%s pid=%s", self.id, agent.name, agent.handle.pid)
            agent.exit_code = await agent.handle.wait()
            agent.status = "exited"
            log.info("agent.exited session=%s agent=%s code=%s", self.id, agent.name, agent.exit_code)
        agent.ended_at = now_ms()
        agent.ended.set()
        self._emit_exited(agent)
        self.mark_disconnected(agent)
        agent.mailbox.close()
        launched = [a for a in self.agents.values() if a.runtime != "external"]
        if launched and all(a.ended_at is not None for a in launched) and not self.closing:
            await self.close("all_agents_exited")

    async def close(self, reason: CloseReason, detail: str | None = None) -> None:
        """Stop every agent (SIGTERM, then SIGKILL after the grace period) and retire the session."""
        async with self._close_lock:
            if self.closing:
                return
            self.closing = True
            self.close_reason, self.close_detail = reason, detail
            self._emit("session_closing", **self._reason())
        log.info("session.closing session=%s namespace=%s reason=%s", self.id, self.namespace, reason)
        for agent in self.agents.values():
            agent.mailbox.close()
        handles = [a.handle for a in self.agents.values() if a.handle is not None]
        await asyncio.gather(*(h.stop(self._stop_grace_s) for h in handles), return_exceptions=True)
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        # Launches that completed while the others were being stopped: theirs must stop too.
        late = [a.handle for a in self.agents.values() if a.handle is not None and a.handle not in handles]
        await asyncio.gather(*(h.stop(self._stop_grace_s) for h in late), return_exceptions=True)
        for agent in self.agents.values():
            self.mark_disconnected(agent)
            if agent.status in ("pending", "running"):
                agent.status = "exited"
                self._emit_exited(agent)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self.work_dir, True)
        self.closed_at = now_ms()
        self._end_events()
        self._closed.set()
        await self._on_closed(self)

    async def stop_agent(self, agent: SessionAgent) -> None:
        """Stop one agent (SIGTERM, then SIGKILL after the grace period); returns once it has ended.

        Its state shows it exited; when it was the last running agent, the session closes as usual.
        """
        if agent.ended_at is not None or self.closing:
            return
        if agent.handle is not None:
            await agent.handle.stop(self._stop_grace_s)
            # Its watcher records the exit (status, code, event) right after; wait for that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await agent.ended.wait()

    def request_close(self, reason: CloseReason, detail: str | None = None) -> None:
        """Close from inside a call that must return first (an agent ending its own session)."""
        if not self.closing:
            self._spawn(self.close(reason, detail), "close")

    def forget_after_ms(self) -> int:
        """How long after closing the closed session's state stays readable (persistence mode)."""
        closed = self.closed_at if self.closed_at is not None else now_ms()
        return max(self.hold_ms, self.timestamp + self.minimum_ms - closed, 0)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- connection and readiness ----------------------------------------------------------------

    async def mark_connected(self, agent: SessionAgent) -> None:
        if agent.connected or self.closing:
            return
        agent.connected = True
        self._emit("agent_connected", agent=agent.name)
        log.info("agent.connected session=%s agent=%s", self.id, agent.name)
        async with self._connected:
            self._connected.notify_all()

    def mark_disconnected(self, agent: SessionAgent) -> None:
        if agent.connected:
            agent.connected = False
            self._emit("agent_disconnected", agent=agent.name)
            log.info("agent.disconnected session=%s agent=%s", self.id, agent.name)

    def describe(self, agent: SessionAgent, description: str) -> None:
        """An agent that describes itself when it connects (devmode agents do) fills an empty description."""
        if not agent.description and description.strip():
            agent.description = description.strip()

    async def ready(self, agent: SessionAgent) -> None:
        """Hold `agent` until the blocking agents it is linked to have connected (bounded)."""
        blockers = [self.agents[n] for n in agent.links if self.agents[n].blocking]
        if not blockers or all(b.connected for b in blockers):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BLOCKING_WAIT_S), self._connected:
                await self._connected.wait_for(lambda: self.closing or all(b.connected for b in blockers))

    # -- collaboration ----------------------------------------------------------------------------

    def agent(self, name: str) -> SessionAgent:
        try:
            return self.agents[name]
        except KeyError:
            raise AgentNotFound(name) from None

    def thread(self, thread_id: str) -> Thread:
        try:
            return self.threads[thread_id]
        except KeyError:
            raise ThreadNotFound(thread_id) from None

    def _check_open(self) -> None:
        if self.closing:
            raise SessionClosed(self.id)

    def _linked_target(self, actor: SessionAgent, name: str) -> SessionAgent:
        target = self.agent(name)
        if target is not actor and name not in actor.links:
            raise AgentNotLinked(actor.name, name)
        return target

    def _participating(self, actor: SessionAgent, thread_id: str) -> Thread:
        thread = self.thread(thread_id)
        if actor.name not in thread.participants:
            raise NotParticipant(actor.name, thread_id)
        return thread

    def create_thread(self, creator: SessionAgent, name: str, participants: list[str]) -> Thread:
        self._check_open()
        if not name.strip():
            raise InvalidArgument("threadName must not be empty")
        members = [creator.name]
        for participant in participants:
            self._linked_target(creator, participant)
            if participant not in members:
                members.append(participant)
        thread = Thread(
            id=new_id(), name=name, creator=creator.name, participants=members, timestamp=now_ms()
        )
        self.threads[thread.id] = thread
        self._emit("thread_created", thread=thread.to_http())
        return thread

    def add_participant(self, actor: SessionAgent, thread_id: str, name: str) -> Thread:
        self._check_open()
        thread = self._participating(actor, thread_id)
        if thread.closed:
            raise ThreadClosed(thread_id)
        target = self._linked_target(actor, name)
        if name not in thread.participants:
            thread.participants.append(name)
            self._emit("participant_added", threadId=thread_id, agent=name)
            # A newcomer learns the thread's history through its mailbox, as the reference does.
            for message in thread.messages:
                if message.sender != name:
                    target.mailbox.put(message)
        return thread

    def remove_participant(self, actor: SessionAgent, thread_id: str, name: str) -> Thread:
        self._check_open()
        thread = self._participating(actor, thread_id)
        if thread.closed:
            raise ThreadClosed(thread_id)
        target = self.agent(name)
        if name not in thread.participants:
            raise NotParticipant(name, thread_id)
        thread.participants.remove(name)
        self._emit("participant_removed", threadId=thread_id, agent=name)
        target.mailbox.discard(lambda m: m.thread_id == thread_id)
        return thread

    def close_thread(self, actor: SessionAgent, thread_id: str, summary: str) -> Thread:
        self._check_open()
        thread = self._participating(actor, thread_id)
        if thread.closed:
            raise ThreadClosed(thread_id)
        thread.closed, thread.summary, thread.closed_at = True, summary, now_ms()
        self._emit("thread_closed", threadId=thread_id, summary=summary)
        return thread

    def send_message(self, sender: SessionAgent, thread_id: str, text: str, mentions: list[str]) -> Message:
        self._check_open()
        thread = self._participating(sender, thread_id)
        if thread.closed:
            raise ThreadClosed(thread_id)
        unique: list[str] = []
        for name in mentions:
            if name == sender.name:
                raise InvalidArgument("an agent cannot mention itself")
            self.agent(name)
            if name not in thread.participants:
                raise NotParticipant(name, thread_id)
            if name not in unique:
                unique.append(name)
        message = Message(
            id=new_id(),
            thread_id=thread_id,
            sender=sender.name,
            text=text,
            mentions=tuple(unique),
            timestamp=now_ms(),
        )
        thread.messages.append(message)
        self._emit("message_sent", message=message.to_http())
        for name in thread.participants:
            if name != sender.name:
                self.agents[name].mailbox.put(message)
        return message

    async def hand_over(self, message: Message) -> None:
        """Let the waits a message woke answer before its sender's own reply is written.

        A woken wait resumes its request handler `WAKE_STEPS` loop steps after the message was put
        in its mailbox. Writing the sender's reply first would wake the sender's client, which on a
        busy machine takes the CPU before the receiver's answer goes out; so the sender yields as
        many steps, and only when some recipient was blocked in a wait.
        """
        thread = self.threads.get(message.thread_id)
        if thread is None:
            return
        agents = self.agents
        if any(agents[n].mailbox.waiting for n in thread.participants if n != message.sender and n in agents):
            for _ in range(WAKE_STEPS):
                await asyncio.sleep(0)

    async def wait(self, agent: SessionAgent, accept: MessageFilter, timeout_s: float) -> Message | None:
        """Block until a queued message passes `accept`, the timeout, or the session closing."""
        mailbox = agent.mailbox
        found = mailbox.take_now(accept)
        if found is not None or timeout_s <= 0 or mailbox.closed:
            return found
        # The take below counts itself as waiting before it first suspends, so the event and the
        # agent's isWaiting change in the same step; only the 0 <-> 1 transitions are published.
        if mailbox.waiting == 0:
            self._emit("agent_waiting", agent=agent.name, waiting=True)
        try:
            return await mailbox.take(accept, timeout_s)
        finally:
            if mailbox.waiting == 0:
                self._emit("agent_waiting", agent=agent.name, waiting=False)

    def custom_tool_called(
        self, agent: str, tool: str, outcome: str, *, duration_ms: float, status: int | None
    ) -> None:
        """Publish a custom tool call's outcome: no arguments or answer, which may carry anything."""
        data: dict[str, Any] = {
            "agent": agent,
            "tool": tool,
            "outcome": outcome,
            "durationMs": round(duration_ms, 3),
        }
        if status is not None:
            data["status"] = status
        self._emit("custom_tool_called", **data)

    # -- views -------------------------------------------------------------------------------------

    def to_http(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "id": self.id,
            "namespace": self.namespace,
            "timestamp": self.timestamp,
            "closing": self.closing,
            "agents": [a.to_http() for a in self.agents.values()],
            "threads": [t.to_http() for t in self.threads.values()],
        }
        if self.close_reason is not None:
            state["closeReason"] = self.close_reason
            if self.close_detail is not None:
                state["closeDetail"] = self.close_detail
        if self.closed_at is not None:
            state["closedAt"] = self.closed_at
        if self.annotations:
            state["annotations"] = dict(self.annotations)
        return state

    def summary(self) -> dict[str, Any]:
        return {"sessionId": self.id, "closing": self.closing}
