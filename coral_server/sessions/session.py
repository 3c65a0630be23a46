"""A session: its agents, threads and messages, the collaboration rules, TTL and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from coral_server.clock import Clock, SystemClock
from coral_server.events import LOGS_TOPIC, SERVER_TOPIC, EventBus
from coral_server.runtimes import LaunchSpec, LogLine
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
from coral_server.sessions.facts import NamespaceInfo, SessionInfo, SessionPhase
from coral_server.sessions.journal import Journal, JournalKind
from coral_server.sessions.mailbox import WAKE_STEPS, MessageFilter
from coral_server.sessions.model import Message, Thread, new_id
from coral_server.sessions.spec import CustomToolSpec, EndWebhook
from coral_server.supervision import Crew, Unit

log = logging.getLogger("coral_server.sessions")

# Why a session ended, as reported in state, events and the session-end webhook.
CloseReason = Literal[
    "ttl", "deleted", "all_agents_exited", "closed_by_agent", "server_shutdown", "server_restart"
]

# Builds an agent's launch spec in its work directory (option files go there).
SpecBuilder = Callable[["Session", SessionAgent, Path], LaunchSpec]
ClosedCallback = Callable[["Session"], Awaitable[None]]

# How long an agent's first tool call waits for the blocking agents it is linked to.
BLOCKING_WAIT_S = 60.0


class Session:
    """Owns its agents, threads and mailboxes; its crew runs the agents' processes and its TTL."""

    def __init__(
        self,
        *,
        session_id: str,
        namespace: str,
        agents: Iterable[SessionAgent],
        crew: Crew,
        build_spec: SpecBuilder,
        ttl_ms: int | None,
        on_closed: ClosedCallback,
        clock: Clock | None = None,
        journal: Journal | None = None,
        annotations: dict[str, str] | None = None,
        hold_ms: int = 0,
        minimum_ms: int = 0,
        custom_tools: dict[str, CustomToolSpec] | None = None,
        end_webhook: EndWebhook | None = None,
    ) -> None:
        self.id = session_id
        self.namespace = namespace
        self.clock = clock if clock is not None else SystemClock()
        self.timestamp = self.clock.now_ms()
        self.agents: dict[str, SessionAgent] = {a.name: a for a in agents}
        self.threads: dict[str, Thread] = {}
        self.annotations = annotations or {}
        self.closing = False
        # When its agents were launched: None while the session waits to be executed (deferred).
        self.executed_at: int | None = None
        self.closing_at: int | None = None  # when it began to close
        self.close_reason: CloseReason | None = None
        self.close_detail: str | None = None
        self.closed_at: int | None = None
        self.ttl_ms = ttl_ms
        self.hold_ms = hold_ms  # state stays readable this long after the session closes
        self.minimum_ms = minimum_ms  # ... and at least this long after it was created
        self.end_webhook = end_webhook
        # Its namespace as the feeds describe it (set by Sessions): transient by default.
        self.namespace_info = NamespaceInfo(namespace, delete_on_last_exit=True)
        self.custom_tools = custom_tools or {}
        self.crew = crew
        self.agent_cwd: Path | None = None  # where local agents work (a job's worktree), if not at home
        self.journal = journal  # threads and messages, kept in the store for a crash's end report
        self._build_spec = build_spec
        self._on_closed = on_closed
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

    @property
    def work_dir(self) -> Path:
        return self.crew.work_dir

    @property
    def namespace_transient(self) -> bool:
        """Whether the namespace goes with its last session."""
        return self.namespace_info.delete_on_last_exit

    @property
    def phase(self) -> SessionPhase:
        if self.closed_at is not None:
            return "closed"
        if self.closing:
            return "closing"
        return "pending" if self.executed_at is None else "running"

    def info(self) -> SessionInfo:
        """The session's identity and phase as of now, for an event."""
        return SessionInfo(
            id=self.id,
            namespace=self.namespace_info,
            created_at=self.timestamp,
            phase=self.phase,
            executed_at=self.executed_at,
            closing_at=self.closing_at,
            closed_at=self.closed_at,
            annotations=dict(self.annotations),
        )

    @property
    def topic(self) -> str:
        """This session's topic on the event bus."""
        return f"{self.namespace}/{self.id}"

    def _emit(self, type: str, **data: Any) -> None:
        if self.events is not None:
            self.events.publish(self.topic, type, data)

    def _announce(self, type: str, **data: Any) -> None:
        """A lifecycle event on the server-wide feed (what dashboards and event triggers follow)."""
        if self.events is not None:
            self.events.publish(
                SERVER_TOPIC, type, {"namespace": self.namespace, "session_id": self.id, **data}
            )

    def _lifecycle(self, type: str, **data: Any) -> int:
        """A change of the session's phase, on its own topic and the server-wide feed; its seq."""
        info = self.info()
        self._announce(type, session=info, **data)
        if self.events is None:
            return 0
        return self.events.publish(self.topic, type, {"session": info, **data}).seq

    def _journal(self, kind: JournalKind, record: Thread | Message) -> None:
        if self.journal is not None:
            self.journal.record(kind, record)

    def _reason(self) -> dict[str, Any]:
        data: dict[str, Any] = {"reason": self.close_reason}
        if self.close_detail is not None:
            data["detail"] = self.close_detail
        return data

    def _end_events(self) -> None:
        if self.events is not None:
            self.final_seq = self._lifecycle("session_closed", **self._reason())
            self.events.close_topic(self.topic)
            self.events = None  # nothing is published after session_closed

    def _log_line(self, agent: str, line: LogLine) -> None:
        # The line is already redacted (AgentLog.append) before listeners see it.
        self._emit("agent_log", name=agent, stream=line.stream, text=line.text)
        if self.events is not None:
            # Every agent's output on one server-wide topic too: the logs stream reads it.
            self.events.publish(
                LOGS_TOPIC,
                "agent_log",
                {"namespace": self.namespace, "session_id": self.id, "name": agent, "line": line},
            )

    def _emit_exited(self, agent: SessionAgent) -> None:
        data: dict[str, Any] = {
            "name": agent.name,
            "status": agent.status,
            "exit_code": agent.exit_code,
            "error": agent.error,
        }
        self._emit("runtime_stopped", **data)
        self._announce("runtime_stopped", **data)

    def start(self) -> None:
        """Announce the session and launch its agents at once (immediate execution)."""
        self.announce()
        self.launch()

    def announce(self) -> None:
        """Publish that the session exists (a deferred one launches nothing yet)."""
        names = [a.name for a in self.agents.values()]
        self._lifecycle("session_created", agents=names)

    @property
    def pending(self) -> bool:
        """Created with deferred execution and not executed (nor closed) yet."""
        return self.executed_at is None and not self.closing

    def launch(self) -> None:
        """Launch every agent concurrently and arm the TTL timer (it counts from now)."""
        if self.executed_at is None:
            self.executed_at = self.clock.now_ms()
        self._lifecycle("session_running")
        for agent in self.agents.values():
            agent.unit = self.crew.launch(
                agent.name,
                agent.runtime,
                functools.partial(self._build_spec, self, agent),
                agent.log,
                on_running=functools.partial(self._agent_running, agent),
                on_ended=functools.partial(self._agent_ended, agent),
            )
        if self.ttl_ms is not None:
            self.crew.deadline(self.ttl_ms / 1000, self._expire)

    async def _expire(self) -> None:
        await self.close("ttl", f"time to live of {self.ttl_ms} ms ran out")

    def _agent_running(self, agent: SessionAgent, unit: Unit) -> None:
        self._emit("runtime_started", name=agent.name, runtime=agent.runtime)
        self._announce("runtime_started", name=agent.name, runtime=agent.runtime)

    async def _agent_ended(self, agent: SessionAgent, unit: Unit) -> None:
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
            self.closing_at = self.clock.now_ms()
            self.close_reason, self.close_detail = reason, detail
            self._lifecycle("session_closing", **self._reason())
        log.info("session.closing session=%s namespace=%s reason=%s", self.id, self.namespace, reason)
        for agent in self.agents.values():
            agent.mailbox.close()
        await self.crew.stop_all()
        await self.crew.cancel_tasks()
        # Launches that completed while the others were being stopped: theirs must stop too.
        await self.crew.stop_all()
        for agent in self.agents.values():
            self.mark_disconnected(agent)
            if agent.unit is not None and agent.unit.status in ("pending", "running"):
                agent.unit.status = "exited"
                self._emit_exited(agent)
        await self.crew.close()
        if self.journal is not None:
            await self.journal.flush()
        self.closed_at = self.clock.now_ms()
        self._end_events()
        self._closed.set()
        await self._on_closed(self)

    async def stop_agent(self, agent: SessionAgent) -> None:
        """Stop one agent (SIGTERM, then SIGKILL after the grace period); returns once it has ended.

        Its state shows it exited; when it was the last running agent, the session closes as usual.
        """
        if agent.ended_at is not None or self.closing or agent.unit is None:
            return
        await self.crew.stop(agent.unit)

    def request_close(self, reason: CloseReason, detail: str | None = None) -> None:
        """Close from inside a call that must return first (an agent ending its own session)."""
        if not self.closing:
            self.crew.spawn(self.close(reason, detail), "close")

    def forget_after_ms(self) -> int:
        """How long after closing the closed session's state stays readable (persistence mode)."""
        closed = self.closed_at if self.closed_at is not None else self.clock.now_ms()
        return max(self.hold_ms, self.timestamp + self.minimum_ms - closed, 0)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- connection and readiness ----------------------------------------------------------------

    async def mark_connected(self, agent: SessionAgent) -> None:
        if agent.connected or self.closing:
            return
        agent.connected = True
        self._emit("agent_connected", name=agent.name)
        log.info("agent.connected session=%s agent=%s", self.id, agent.name)
        async with self._connected:
            self._connected.notify_all()

    def mark_disconnected(self, agent: SessionAgent) -> None:
        if agent.connected:
            agent.connected = False
            self._emit("agent_disconnected", name=agent.name)
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

    def linked_target(self, actor: SessionAgent, name: str) -> SessionAgent:
        """The agent `name` if `actor` may address it (itself, or one it shares a group with)."""
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
            self.linked_target(creator, participant)
            if participant not in members:
                members.append(participant)
        thread = Thread(
            id=new_id(), name=name, creator=creator.name, participants=members, timestamp=self.clock.now_ms()
        )
        self.threads[thread.id] = thread
        self._emit("thread_created", thread=thread.copy())
        self._journal("thread", thread)
        return thread

    def add_participant(self, actor: SessionAgent, thread_id: str, name: str) -> Thread:
        self._check_open()
        thread = self._participating(actor, thread_id)
        if thread.closed:
            raise ThreadClosed(thread_id)
        target = self.linked_target(actor, name)
        if name not in thread.participants:
            thread.participants.append(name)
            self._emit("thread_participant_added", thread_id=thread_id, name=name)
            self._journal("participants", thread)
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
        self._emit("thread_participant_removed", thread_id=thread_id, name=name)
        self._journal("participants", thread)
        target.mailbox.discard(lambda m: m.thread_id == thread_id)
        return thread

    def close_thread(self, actor: SessionAgent, thread_id: str, summary: str) -> Thread:
        self._check_open()
        thread = self._participating(actor, thread_id)
        if thread.closed:
            raise ThreadClosed(thread_id)
        thread.closed, thread.summary, thread.closed_at = True, summary, self.clock.now_ms()
        self._emit("thread_closed", thread_id=thread_id, summary=summary)
        self._journal("thread_closed", thread)
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
            timestamp=self.clock.now_ms(),
        )
        thread.messages.append(message)
        self._emit("thread_message_sent", message=message)
        self._journal("message", message)
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
            self._emit("agent_wait_start", name=agent.name)
        taken: Message | None = None
        try:
            taken = await mailbox.take(accept, timeout_s)
            return taken
        finally:
            if mailbox.waiting == 0:
                # With the message that ended the wait, if one did (none on a timeout).
                self._emit("agent_wait_stop", name=agent.name, message=taken)

    def custom_tool_called(
        self, agent: str, tool: str, outcome: str, *, duration_ms: float, status: int | None
    ) -> None:
        """Publish a custom tool call's outcome: no arguments or answer, which may carry anything."""
        self._emit(
            "custom_tool_called",
            name=agent,
            tool=tool,
            outcome=outcome,
            duration_ms=round(duration_ms, 3),
            status=status,
        )
