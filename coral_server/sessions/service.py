"""The session directory: namespaces, creating sessions from requests, lookup by agent secret."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from coral_server.clock import Clock, SystemClock
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.redaction import SECRETS
from coral_server.registry import (
    AgentManifest,
    AgentNotInRegistry,
    Generation,
    OptionsInvalid,
    Registry,
    resolve_options,
)
from coral_server.runtimes import LaunchSpec, Owner
from coral_server.sessions.agent import SessionAgent, new_agent_secret
from coral_server.sessions.errors import (
    NamespaceExists,
    NamespaceNotFound,
    NotPending,
    RequestProblem,
    SessionNotFound,
    SessionRequestInvalid,
)
from coral_server.sessions.facts import NamespaceInfo
from coral_server.sessions.journal import Journal, replay
from coral_server.sessions.launch import AgentLauncher
from coral_server.sessions.limits import SessionLimits, TooManySessions, agent_problems, request_problems
from coral_server.sessions.report import SessionEnd, crash_end, record_of
from coral_server.sessions.session import Session
from coral_server.sessions.spec import AgentRequest, EndWebhook, SessionRequest
from coral_server.store.base import StoreUnavailable
from coral_server.store.sessions import SessionRecord, SessionStore
from coral_server.supervision import Supervisor, owner_alive
from coral_server.webhooks.destinations import DestinationPolicy

log = logging.getLogger("coral_server.sessions")

KNOWN_PLUGINS = frozenset({"close_session_tool"})


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the session domain needs from the server configuration."""

    wait_cap_ms: int = 60_000
    log_buffer_bytes: int = 256 * 1024
    limits: SessionLimits = field(default_factory=SessionLimits)


@dataclass(slots=True)
class Namespace:
    name: str
    delete_on_last_exit: bool
    sessions: dict[str, Session] = field(default_factory=dict)
    timestamp: int = 0
    annotations: dict[str, str] = field(default_factory=dict)

    def info(self) -> NamespaceInfo:
        return NamespaceInfo(self.name, self.delete_on_last_exit, dict(self.annotations))


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    """How a deferred session runs once executed (its TTL counts from then)."""

    ttl_ms: int | None = None
    hold_after_exit_ms: int = 0
    minimum_time_ms: int = 0
    end_webhook: EndWebhook | None = None


SessionListener = Callable[[Session], Awaitable[None]]
# Sends the end report of a session a crashed server lost: (url, report, subject).
ReportSender = Callable[[str, SessionEnd, str], Awaitable[None]]


class Sessions:
    """Every live session, grouped in namespaces; the single entry point of the session domain.

    `on_closed` hooks are awaited as each session closes, before shutdown goes on (the end report is
    stored through one); everything else follows the server-wide feed (`events.SERVER_TOPIC`).
    """

    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        launcher: AgentLauncher,
        settings: SessionSettings | None = None,
        events: EventBus | None = None,
        clock: Clock | None = None,
        records: Callable[[], SessionStore | None] = lambda: None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self.registry = registry
        # Where webhooks and custom tools may point (checked when a session is asked for).
        self.destinations = destinations if destinations is not None else DestinationPolicy()
        self._records = records
        # Where every session publishes its changes (topic: Session.topic).
        self.events = events if events is not None else EventBus()
        self.supervisor = supervisor
        self.launcher = launcher
        self.settings = settings if settings is not None else SessionSettings()
        self.clock = clock if clock is not None else SystemClock()
        self.namespaces: dict[str, Namespace] = {}
        self._by_secret: dict[str, tuple[Session, SessionAgent]] = {}
        self.on_closed: list[SessionListener] = []
        # Closed sessions kept readable for their hold time (persistence mode hold_after_exit).
        self._holds: set[asyncio.Task[None]] = set()
        # Closed sessions whose store record could not be removed (disk full...): tried again at each
        # close and at shutdown, so a restart does not report them a second time.
        self._unremoved: set[str] = set()
        self._creating = 0  # sessions admitted under max_sessions and not yet in their namespace

    # -- lookup --------------------------------------------------------------------------------

    def get(self, namespace: str, session_id: str) -> Session:
        ns = self.namespaces.get(namespace)
        session = ns.sessions.get(session_id) if ns else None
        if session is None:
            raise SessionNotFound(namespace, session_id)
        return session

    def namespace(self, name: str) -> Namespace:
        try:
            return self.namespaces[name]
        except KeyError:
            raise NamespaceNotFound(name) from None

    def by_secret(self, secret: str) -> tuple[Session, SessionAgent] | None:
        return self._by_secret.get(secret)

    def all_sessions(self) -> list[Session]:
        return [s for ns in self.namespaces.values() for s in ns.sessions.values()]

    # -- creation ------------------------------------------------------------------------------

    def check_agents(self, request: SessionRequest, indices: list[int]) -> list[RequestProblem]:
        """Registry and option problems of some agents of a request that failed elsewhere.

        Lets one 400 list every problem even when the request's shape is also wrong; `indices`
        are the agents' positions in the original request (for the field paths).
        """
        problems: list[RequestProblem] = []
        for i, req in zip(indices, request.agents, strict=True):
            self._build_agent(req, f"{request.agents_path}[{i}]", request, problems)
        return problems

    def _build_agents(self, request: SessionRequest) -> list[SessionAgent]:
        problems: list[RequestProblem] = []
        agents: list[SessionAgent] = []
        seen: set[str] = set()
        base = request.agents_path
        oversized = request_problems(request, self.settings.limits)
        if oversized:
            raise SessionRequestInvalid(oversized)
        if not request.agents:
            problems.append(RequestProblem(base, "a session needs at least one agent"))
        for i, req in enumerate(request.agents):
            path = f"{base}[{i}]"
            if req.name in seen:
                problems.append(RequestProblem(f"{path}.name", f"duplicate agent name {req.name!r}"))
            seen.add(req.name)
            agent = self._build_agent(req, path, request, problems)
            if agent is not None:
                agents.append(agent)
        for g, group in enumerate(request.groups):
            for m, member in enumerate(group):
                if member not in seen:
                    problems.append(
                        RequestProblem(f"agentGraphRequest.groups[{g}][{m}]", f"no agent named {member!r}")
                    )
        if problems:
            raise SessionRequestInvalid(problems)
        by_name = {a.name: a for a in agents}
        for group in request.groups:
            for member in group:
                by_name[member].links.update(n for n in group if n != member)
        return agents

    def _build_agent(
        self, req: AgentRequest, path: str, request: SessionRequest, problems: list[RequestProblem]
    ) -> SessionAgent | None:
        manifest: AgentManifest | None = None
        try:
            manifest = self.registry.get(req.registry_name, req.registry_version)
        except AgentNotInRegistry as exc:
            problems.append(RequestProblem(f"{path}.id", str(exc)))
        runtimes = self.supervisor.runtimes
        if req.runtime not in runtimes:
            problems.append(
                RequestProblem(
                    f"{path}.provider.runtime",
                    f"unknown runtime {req.runtime!r}; available: {', '.join(sorted(runtimes))}",
                )
            )
        elif manifest is not None and (
            (req.runtime == "executable" and manifest.executable is None)
            or (req.runtime == "docker" and manifest.docker is None)
        ):
            problems.append(
                RequestProblem(
                    f"{path}.provider.runtime", f"agent {manifest.name!r} has no {req.runtime} runtime"
                )
            )
        for t, tool in enumerate(req.custom_tool_access):
            if tool not in request.custom_tools:
                problems.append(
                    RequestProblem(f"{path}.customToolAccess[{t}]", f"no custom tool named {tool!r}")
                )
        for p, plugin in enumerate(req.plugins):
            if plugin not in KNOWN_PLUGINS:
                problems.append(RequestProblem(f"{path}.plugins[{p}].type", f"unknown plugin {plugin!r}"))
        if manifest is None:
            return None
        try:
            options = resolve_options(manifest, req.options, path_prefix=f"{path}.options")
        except OptionsInvalid as exc:
            problems.extend(RequestProblem(e.path, e.message) for e in exc.errors)
            return None
        oversized = agent_problems(req, options, path, self.settings.limits)
        if oversized:
            problems.extend(oversized)
            return None
        agent = SessionAgent(
            name=req.name,
            manifest=manifest,
            runtime=req.runtime,
            description=req.description if req.description is not None else (manifest.description or ""),
            secret=new_agent_secret(),
            blocking=req.blocking,
            system_prompt=req.system_prompt,
            options=options,
            custom_tool_access=list(req.custom_tool_access),
            plugins=list(req.plugins),
            annotations=dict(req.annotations),
            # An external agent is whatever the app runs: it gets today's surface.
            generation=Generation.CURRENT if req.runtime == "external" else manifest.generation,
        )
        agent.log.max_bytes = self.settings.log_buffer_bytes
        return agent

    def validate(self, request: SessionRequest) -> None:
        """Check a request against the registry without creating anything (`SessionRequestInvalid`)."""
        self._build_agents(request)

    async def check_destinations(self, request: SessionRequest) -> None:
        """Refuse a request whose end webhook or custom tools point where the destination policy
        forbids (`SessionRequestInvalid` naming each field); their calls are checked again later."""
        targets = [
            (f"agentGraphRequest.customTools.{name}.transport.url", tool.url)
            for name, tool in request.custom_tools.items()
        ]
        if request.end_webhook is not None:
            targets.insert(0, (request.end_webhook_path, request.end_webhook.url))
        problems = []
        for path, url in targets:
            problem = await self.destinations.check(url)
            if problem is not None:
                problems.append(RequestProblem(path, f"destination not allowed: {problem}"))
        if problems:
            raise SessionRequestInvalid(problems)

    async def create(self, request: SessionRequest) -> Session:
        """Validate the request against the registry, then start the session's agents (unless the
        request defers execution: then the session waits, pending, for `execute`)."""
        agents = self._build_agents(request)
        await self.check_destinations(request)
        live = sum(s.closed_at is None for s in self.all_sessions()) + self._creating
        if live >= self.settings.limits.max_sessions:
            raise TooManySessions(self.settings.limits.max_sessions)
        self._creating += 1
        try:
            return await self._create(request, agents)
        finally:
            self._creating -= 1

    async def _create(self, request: SessionRequest, agents: list[SessionAgent]) -> Session:
        ns = self.namespaces.get(request.namespace)
        if ns is None:
            if not request.create_namespace:
                raise NamespaceNotFound(request.namespace)
            ns = self._add_namespace(request.namespace, request.delete_namespace_on_last_exit, {})
        session_id = str(uuid.uuid4())
        session = Session(
            session_id=session_id,
            namespace=ns.name,
            agents=agents,
            crew=self.supervisor.crew(Owner("session", session_id, ns.name)),
            build_spec=self._launch_spec,
            ttl_ms=request.ttl_ms,
            on_closed=self._retire,
            clock=self.clock,
            annotations=request.annotations,
            hold_ms=request.hold_after_exit_ms,
            minimum_ms=request.minimum_time_ms,
            custom_tools=dict(request.custom_tools),
            end_webhook=request.end_webhook,
            journal=Journal(session_id, self._records),
        )
        session.agent_cwd = request.work_dir
        session.namespace_info = ns.info()
        if not request.defer:
            await self._record(session)
        ns.sessions[session_id] = session
        for agent in agents:
            self._by_secret[agent.secret] = (session, agent)
        SECRETS.add(*(agent.secret for agent in agents))
        log.info(
            "session.created session=%s namespace=%s agents=%s ttl_ms=%s deferred=%s",
            session_id,
            ns.name,
            ",".join(a.name for a in agents),
            request.ttl_ms,
            request.defer,
        )
        session.events = self.events
        if request.defer:
            session.announce()
        else:
            session.start()
        return session

    async def execute(self, namespace: str, session_id: str, settings: ExecutionSettings) -> Session:
        """Launch a session created with deferred execution (`NotPending` if it is not waiting)."""
        session = self.get(namespace, session_id)
        if not session.pending:
            raise NotPending(session_id)
        times = SessionRequest(
            namespace=namespace,
            agents=[],
            ttl_ms=settings.ttl_ms,
            hold_after_exit_ms=settings.hold_after_exit_ms,
            minimum_time_ms=settings.minimum_time_ms,
            settings_path="",
            persistence_path="persistenceMode",
        )
        oversized = request_problems(times, self.settings.limits)
        if oversized:  # the body is the runtime settings: its fields are named from its root
            raise SessionRequestInvalid(
                [RequestProblem(p.path.removeprefix("."), p.message) for p in oversized]
            )
        # Claimed before the store write below, so a second execute meanwhile is refused.
        session.executed_at = self.clock.now_ms()
        session.ttl_ms = settings.ttl_ms
        session.hold_ms = settings.hold_after_exit_ms
        session.minimum_ms = settings.minimum_time_ms
        session.end_webhook = settings.end_webhook
        try:
            await self._record(session)  # from now on a crash reports it
        except StoreUnavailable:
            session.executed_at = None
            raise
        log.info("session.executed session=%s namespace=%s ttl_ms=%s", session_id, namespace, settings.ttl_ms)
        session.launch()
        return session

    # -- namespaces --------------------------------------------------------------------------------

    def _add_namespace(self, name: str, delete_on_last_exit: bool, annotations: dict[str, str]) -> Namespace:
        ns = Namespace(name, delete_on_last_exit, timestamp=self.clock.now_ms(), annotations=annotations)
        self.namespaces[name] = ns
        self.events.publish(SERVER_TOPIC, "namespace_created", {"namespace": ns.info()})
        return ns

    def create_namespace(
        self, name: str, delete_on_last_exit: bool = True, annotations: dict[str, str] | None = None
    ) -> Namespace:
        """An empty namespace (`NamespaceExists` if the name is taken)."""
        if name in self.namespaces:
            raise NamespaceExists(name)
        return self._add_namespace(name, delete_on_last_exit, dict(annotations or {}))

    async def delete_namespace(self, name: str) -> None:
        """Close every session of the namespace (reason `deleted`), then remove it."""
        ns = self.namespace(name)
        del self.namespaces[name]  # no new session goes into it from now on
        await asyncio.gather(*(s.close("deleted") for s in list(ns.sessions.values())))
        ns.sessions.clear()
        self.events.publish(SERVER_TOPIC, "namespace_closed", {"namespace": ns.info()})
        log.info("namespace.deleted namespace=%s", name)

    def connection_url(self, agent: SessionAgent) -> str:
        return self.launcher.connection_url(agent)

    def _launch_spec(self, session: Session, agent: SessionAgent, files_dir: Path) -> LaunchSpec:
        return self.launcher.spec(session.crew.owner, agent, files_dir, cwd=session.agent_cwd)

    async def _record(self, session: Session) -> None:
        """Keep the session in the store until it is closed, so a crash can still report it."""
        records = self._records()
        if records is None:
            return
        record = SessionRecord(
            id=session.id,
            namespace=session.namespace,
            instance=self.supervisor.owner,
            created_at_ms=session.timestamp,
            end_webhook=orjson.dumps(record_of(session)),
            agents=b"[]",
        )
        try:
            await records.add(record)
        except Exception as exc:
            log.error("session.record_failed session=%s error=%s", session.id, exc)
            raise StoreUnavailable(f"the session could not be recorded: {exc}") from exc

    async def recover(self, send_report: ReportSender) -> int:
        """Close the sessions dead servers left in the store: their end reports go out with what the
        journal kept (reason `server_restart`); returns how many."""
        records = self._records()
        if records is None:
            return 0
        closed = 0
        for record in await records.listing():
            if owner_alive(record.instance):
                continue  # a live server on the same data dir owns it
            info = orjson.loads(record.end_webhook) if record.end_webhook else {}
            hook = info.get("endWebhook")
            if hook:
                threads = replay(await records.journal(record.id))
                report = crash_end(
                    record.id, record.namespace, record.created_at_ms, info, threads, self.clock.now_ms()
                )
                await send_report(hook["url"], report, f"{record.namespace}/{record.id}")
            await records.remove(record.id)
            closed += 1
            log.warning("session.recovered session=%s namespace=%s", record.id, record.namespace)
        return closed

    # -- teardown --------------------------------------------------------------------------------

    async def close(self, namespace: str, session_id: str) -> None:
        """Close a session on request (DELETE)."""
        await self.get(namespace, session_id).close("deleted")

    async def _retire(self, session: Session) -> None:
        for agent in session.agents.values():
            self._by_secret.pop(agent.secret, None)
            SECRETS.discard(agent.secret, *agent.secret_values)
        keep_ms = session.forget_after_ms()
        if keep_ms > 0:
            task = asyncio.create_task(self._forget_later(session, keep_ms), name=f"{session.id}:hold")
            self._holds.add(task)
            task.add_done_callback(self._holds.discard)
        else:
            self._forget(session)
        log.info("session.closed session=%s reason=%s", session.id, session.close_reason)
        for listener in self.on_closed:
            try:
                await listener(session)
            except Exception:
                log.exception("session.closed_listener_failed session=%s", session.id)
        self._unremoved.add(session.id)
        await self._unrecord()

    async def _unrecord(self) -> None:
        """Remove the store records of closed sessions (those a full disk kept there, too)."""
        records = self._records()
        if records is None:
            return
        for session_id in sorted(self._unremoved):
            try:
                await records.remove(session_id)
            except Exception as exc:
                log.error("session.unrecord_failed session=%s error=%s", session_id, exc)
                return  # the store refuses: the next close (or shutdown) tries again
            self._unremoved.discard(session_id)

    async def _forget_later(self, session: Session, keep_ms: int) -> None:
        try:
            await self.clock.sleep(keep_ms / 1000)
        finally:
            self._forget(session)

    def _forget(self, session: Session) -> None:
        ns = self.namespaces.get(session.namespace)
        if ns is not None:
            ns.sessions.pop(session.id, None)
            if not ns.sessions and ns.delete_on_last_exit:
                del self.namespaces[ns.name]
                self.events.publish(SERVER_TOPIC, "namespace_closed", {"namespace": ns.info()})

    async def shutdown(self) -> None:
        """Close every session (server shutdown): no agent outlives the server."""
        await asyncio.gather(
            *(s.close("server_shutdown") for s in self.all_sessions()), return_exceptions=True
        )
        holds = list(self._holds)
        for task in holds:  # closed sessions kept for their hold time go with the server
            task.cancel()
        await asyncio.gather(*holds, return_exceptions=True)
        await self._unrecord()
