"""The session directory: namespaces, creating sessions from requests, lookup by agent secret."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from coral_server.events import EventBus
from coral_server.redaction import SECRETS, mask_values
from coral_server.registry import (
    AgentManifest,
    AgentNotInRegistry,
    Generation,
    LaunchTarget,
    OptionsInvalid,
    Registry,
    RuntimeTransport,
    connection_url,
    launch_env,
    materialize,
    resolve_options,
)
from coral_server.runtimes import LaunchFailed, LaunchSpec, Runtime
from coral_server.sessions.agent import SessionAgent, new_agent_secret
from coral_server.sessions.errors import (
    NamespaceNotFound,
    RequestProblem,
    SessionNotFound,
    SessionRequestInvalid,
)
from coral_server.sessions.model import now_ms
from coral_server.sessions.session import Session
from coral_server.sessions.spec import AgentRequest, SessionRequest

log = logging.getLogger("coral_server.sessions")

KNOWN_PLUGINS = frozenset({"close_session_tool"})
# Our own configuration variables never reach agents (they may hold the server's keys).
_SERVER_ENV_PREFIX = "CORAL_SERVER_"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the session domain needs from the server configuration."""

    api_url: str  # how local agents reach the server, e.g. http://127.0.0.1:5555
    data_dir: Path
    docker_api_url: str | None = None  # how containers reach it (default: api_url)
    stop_grace_s: float = 5.0
    wait_cap_ms: int = 60_000
    log_buffer_bytes: int = 256 * 1024


@dataclass(slots=True)
class Namespace:
    name: str
    delete_on_last_exit: bool
    sessions: dict[str, Session] = field(default_factory=dict)
    timestamp: int = 0


SessionListener = Callable[[Session], Awaitable[None]]


class Sessions:
    """Every live session, grouped in namespaces; the single entry point of the session domain."""

    def __init__(
        self,
        registry: Registry,
        runtimes: dict[str, Runtime],
        settings: SessionSettings,
        events: EventBus | None = None,
    ) -> None:
        self.registry = registry
        # Where every session publishes its changes (topic: Session.topic).
        self.events = events if events is not None else EventBus()
        self.runtimes = runtimes
        self.settings = settings
        self.namespaces: dict[str, Namespace] = {}
        self._by_secret: dict[str, tuple[Session, SessionAgent]] = {}
        self.closed_listeners: list[SessionListener] = []
        # Closed sessions kept readable for their hold time (persistence mode hold_after_exit).
        self._holds: set[asyncio.Task[None]] = set()

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
        if req.runtime not in self.runtimes:
            problems.append(
                RequestProblem(
                    f"{path}.provider.runtime",
                    f"unknown runtime {req.runtime!r}; available: {', '.join(sorted(self.runtimes))}",
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

    async def create(self, request: SessionRequest) -> Session:
        """Validate the request against the registry, then start the session's agents."""
        agents = self._build_agents(request)
        ns = self.namespaces.get(request.namespace)
        if ns is None:
            if not request.create_namespace:
                raise NamespaceNotFound(request.namespace)
            ns = Namespace(request.namespace, request.delete_namespace_on_last_exit, timestamp=now_ms())
            self.namespaces[ns.name] = ns
        session_id = str(uuid.uuid4())
        session = Session(
            session_id=session_id,
            namespace=ns.name,
            agents=agents,
            runtimes=self.runtimes,
            build_spec=self._launch_spec,
            work_dir=self.settings.data_dir / "sessions" / session_id,
            ttl_ms=request.ttl_ms,
            stop_grace_s=self.settings.stop_grace_s,
            on_closed=self._retire,
            annotations=request.annotations,
            hold_ms=request.hold_after_exit_ms,
            minimum_ms=request.minimum_time_ms,
            custom_tools=dict(request.custom_tools),
            end_webhook=request.end_webhook,
        )
        session.namespace_transient = ns.delete_on_last_exit
        ns.sessions[session_id] = session
        for agent in agents:
            self._by_secret[agent.secret] = (session, agent)
        SECRETS.add(*(agent.secret for agent in agents))
        log.info(
            "session.created session=%s namespace=%s agents=%s ttl_ms=%s",
            session_id,
            ns.name,
            ",".join(a.name for a in agents),
            request.ttl_ms,
        )
        session.events = self.events
        session.start()
        return session

    def connection_url(self, agent: SessionAgent) -> str:
        return connection_url(self._launch_target(agent))

    def _launch_target(self, agent: SessionAgent, session_id: str = "") -> LaunchTarget:
        """Who `agent` is and where its MCP endpoint is (the URL needs no session id)."""
        transport: RuntimeTransport = "streamable_http"
        if agent.runtime == "executable" and agent.manifest.executable is not None:
            transport = agent.manifest.executable.transport
        elif agent.runtime == "docker" and agent.manifest.docker is not None:
            transport = agent.manifest.docker.transport
        return LaunchTarget(
            generation=agent.generation,
            api_url=self._api_url(agent),
            secret=agent.secret,
            agent_name=agent.name,
            session_id=session_id,
            runtime=agent.runtime,
            transport=transport,
            system_prompt=agent.system_prompt,
        )

    def _api_url(self, agent: SessionAgent) -> str:
        if agent.runtime == "docker" and self.settings.docker_api_url:
            return self.settings.docker_api_url
        return self.settings.api_url

    def _launch_spec(self, session: Session, agent: SessionAgent) -> LaunchSpec:
        manifest = agent.manifest
        files_dir = session.work_dir / agent.name
        opt_env = materialize(agent.options, files_dir)
        SECRETS.discard(*agent.secret_values)  # held once per agent, however often it is launched
        agent.secret_values = set(opt_env.secret_values)
        SECRETS.add(*agent.secret_values)
        secrets = sorted((s for s in agent.secret_values if s), key=len, reverse=True)
        if secrets:
            agent.log.redact = lambda text: mask_values(text, secrets)
        env: dict[str, str] = {}
        if agent.runtime == "executable":
            # Executables inherit the server's environment (PATH, HOME, ...), as the reference does;
            # containers get only what is theirs.
            env.update({k: v for k, v in os.environ.items() if not k.startswith(_SERVER_ENV_PREFIX)})
        env.update(opt_env.env)
        env.update(launch_env(self._launch_target(agent, session.id)))
        env["PYTHONUNBUFFERED"] = "1"
        command: list[str] = []
        image: str | None = None
        if agent.runtime == "executable":
            if manifest.executable is None:
                raise LaunchFailed(f"agent {manifest.name!r} has no executable runtime")
            command = [
                resolve_executable(manifest.executable.path, manifest.root),
                *manifest.executable.arguments,
            ]
        elif agent.runtime == "docker" and manifest.docker is not None:
            command = list(manifest.docker.command or [])
            image = manifest.docker.image
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                image = f"{image}:{manifest.version}"  # an untagged image means the agent's version
        return LaunchSpec(
            agent_name=agent.name,
            session_id=session.id,
            namespace=session.namespace,
            command=command,
            cwd=manifest.root,
            env=env,
            image=image,
            files=tuple(opt_env.files),
        )

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
        for listener in self.closed_listeners:
            try:
                await listener(session)
            except Exception:
                log.exception("session.closed_listener_failed session=%s", session.id)

    async def _forget_later(self, session: Session, keep_ms: int) -> None:
        try:
            await asyncio.sleep(keep_ms / 1000)
        finally:
            self._forget(session)

    def _forget(self, session: Session) -> None:
        ns = self.namespaces.get(session.namespace)
        if ns is not None:
            ns.sessions.pop(session.id, None)
            if not ns.sessions and ns.delete_on_last_exit:
                del self.namespaces[ns.name]

    async def shutdown(self) -> None:
        """Close every session (server shutdown): no agent outlives the server."""
        await asyncio.gather(
            *(s.close("server_shutdown") for s in self.all_sessions()), return_exceptions=True
        )
        holds = list(self._holds)
        for task in holds:  # closed sessions kept for their hold time go with the server
            task.cancel()
        await asyncio.gather(*holds, return_exceptions=True)


def resolve_executable(path: str, root: Path) -> str:
    """`python`/`python3` mean the server's own interpreter; else absolute, manifest-relative, PATH."""
    if path in ("python", "python3"):
        return sys.executable
    candidate = Path(path)
    if candidate.is_absolute():
        return path
    local = root / candidate
    if local.exists():
        return str(local.resolve())
    found = shutil.which(path)
    if found is None:
        raise LaunchFailed(f"executable {path!r} not found (manifest folder {root}, or PATH)")
    return found
