"""The app factory: builds the aiohttp Application, wires every service, owns startup/shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from coral_server.api import auth as auth_routes
from coral_server.api import console as console_routes
from coral_server.api import docs, views
from coral_server.api import events as event_routes
from coral_server.api import namespaces as namespace_routes
from coral_server.api import puppet as puppet_routes
from coral_server.api import registry as registry_routes
from coral_server.api import runs as run_routes
from coral_server.api import sessions as session_routes
from coral_server.api import tasks as task_routes
from coral_server.api import webhooks as webhook_routes
from coral_server.api.access_log import AccessLog, quiet_malformed_requests
from coral_server.api.auth import LOGINS, Logins, auth_middleware
from coral_server.api.connections import KEEPALIVE_S, Connections, GuardedSite, warn_if_above_fd_limit
from coral_server.api.cors import cors_middleware
from coral_server.api.errors import error_middleware
from coral_server.api.keys import EVENTS, REGISTRY, RUNS, SESSIONS, SETTINGS, STORE_HEALTH, TASKS, WEBHOOKS
from coral_server.clock import SystemClock
from coral_server.config import Settings
from coral_server.events import SERVER_TOPIC, EventBus
from coral_server.jobs.agents import AGENTS, Endpoint, Secret, find_binary
from coral_server.jobs.executor import AgentSetup, JobExecutor, JobSettings
from coral_server.mcp.endpoint import McpEndpoint
from coral_server.redaction import SECRETS
from coral_server.registry import Registry
from coral_server.runs.service import Runs
from coral_server.runtimes import Runtime
from coral_server.runtimes.docker import DockerEngine, DockerRuntime, DockerSettings
from coral_server.runtimes.external import ExternalRuntime
from coral_server.runtimes.process import ProcessRuntime
from coral_server.runtimes.zygote import Zygote
from coral_server.sessions import Sessions, SessionSettings
from coral_server.sessions.launch import AgentLauncher
from coral_server.sessions.limits import SessionLimits
from coral_server.sessions.report import EndReporter
from coral_server.store.database import Database
from coral_server.supervision import Supervisor
from coral_server.tasks import PIPELINE, Tasks, TaskSettings
from coral_server.tasks.files import sync_task_files
from coral_server.tasks.pipeline import PipelineExecutor
from coral_server.tools import CustomToolForwarder
from coral_server.webhooks.destinations import DestinationPolicy
from coral_server.webhooks.secrets import load_or_create_secret
from coral_server.webhooks.service import Webhooks
from coral_server.webhooks.signing import WebhookSigner

log = logging.getLogger("coral_server")

MCP = web.AppKey("mcp", McpEndpoint)
SIGNER = web.AppKey("signer", WebhookSigner)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
LAUNCHER = web.AppKey("launcher", AgentLauncher)
REPORTER = web.AppKey("reporter", EndReporter)
FORWARDER = web.AppKey("forwarder", CustomToolForwarder)
DOCKER = web.AppKey("docker", DockerEngine)
DATABASE = web.AppKey("database", Database)
ZYGOTE = web.AppKey("zygote", Zygote)
CONNECTIONS = web.AppKey("connections", Connections)


def build_app(settings: Settings, *, registry: Registry | None = None) -> web.Application:
    """Build a complete server; nothing is global, so tests may build as many as they like."""
    logins = Logins()
    connections = Connections(settings.max_connections, settings.header_timeout_s, settings.body_timeout_s)
    middlewares = [
        error_middleware,
        connections.middleware,
        event_routes.path_token,
        auth_middleware(settings.auth_keys, logins, any_origin=settings.allow_any_host),
    ]
    if settings.allow_any_host:
        middlewares.insert(0, cors_middleware())  # outermost: preflights carry no credentials
    app = web.Application(middlewares=middlewares, client_max_size=8 * 1024 * 1024)
    app[SETTINGS] = settings
    app[LOGINS] = logins
    app[CONNECTIONS] = connections
    app[REGISTRY] = registry if registry is not None else Registry.load(list(settings.registry))
    for problem in app[REGISTRY].problems:
        log.warning("registry.skipped path=%s reason=%s", problem.path, problem.reason)
    engine = DockerEngine(
        DockerSettings(
            base_url=settings.docker_host,
            network=settings.docker_network,
            memory=settings.docker_memory,
            cpus=settings.docker_cpus,
            pull=settings.docker_pull,
            instance=settings.resolve_instance_id(),
            pids_limit=settings.docker_pids_limit,
            read_only=settings.docker_read_only,
            user=settings.docker_user,
            overrides=frozenset(settings.docker_manifest_overrides),
        )
    )
    app[DOCKER] = engine
    # Started on the first Python agent's launch, so a server that runs none never pays its import.
    zygote = Zygote() if settings.python_agents == "preload" else None
    if zygote is not None:
        app[ZYGOTE] = zygote
    clock = SystemClock()
    destinations = DestinationPolicy.configured(
        settings.webhook_private_destinations,
        settings.webhook_allow,
        settings.webhook_deny,
        has_auth_keys=bool(settings.auth_keys),
    )
    log.info(
        "webhooks.destinations private=%s allow=%s deny=%s",
        "allowed" if destinations.private else "refused",
        len(destinations.allow),
        len(destinations.deny),
    )
    runtimes: dict[str, Runtime] = {
        "executable": ProcessRuntime(clock.now_ms, zygote),
        "docker": DockerRuntime(engine, clock.now_ms),
        "external": ExternalRuntime(),
    }
    app[EVENTS] = EventBus(clock=clock)
    app[DATABASE] = Database(settings.data_dir / "coral.db", clock=clock)
    database = app[DATABASE]
    app[STORE_HEALTH] = database.health
    database.health.listeners.append(functools.partial(_store_event, app[EVENTS]))
    app[SUPERVISOR] = Supervisor(
        runtimes,
        clock,
        work_root=settings.data_dir.resolve(),
        stop_grace_s=settings.stop_grace_s,
        instance=settings.resolve_instance_id(),
        store=lambda: database.store.processes if database.is_open else None,
    )
    app[LAUNCHER] = AgentLauncher(
        settings.agent_api_url(settings.port),
        settings.docker_api_url(settings.port),
        # Executables inherit the server's environment, but never our own settings (keys...).
        {k: v for k, v in os.environ.items() if not k.startswith("CORAL_SERVER_")},
    )
    sessions = Sessions(
        app[REGISTRY],
        app[SUPERVISOR],
        app[LAUNCHER],
        SessionSettings(
            wait_cap_ms=settings.wait_cap_ms,
            log_buffer_bytes=settings.log_buffer_bytes,
            limits=SessionLimits(
                max_sessions=settings.max_sessions,
                max_agents_per_session=settings.max_agents_per_session,
                max_group_size=settings.max_group_size,
                max_ttl_ms=settings.max_ttl_ms,
                max_hold_ms=settings.max_hold_ms,
                max_option_bytes=settings.max_option_bytes,
                max_agent_options_bytes=settings.max_agent_options_bytes,
            ),
        ),
        events=app[EVENTS],
        clock=clock,
        records=lambda: database.store.sessions if database.is_open else None,
        destinations=destinations,
    )
    app[SESSIONS] = sessions
    secrets, source = load_or_create_secret(settings.data_dir, settings.webhook_secrets)
    log.info("webhooks.secret source=%s active=%s", source, len(secrets))
    signer = WebhookSigner(secrets)
    app[SIGNER] = signer
    forwarder = CustomToolForwarder(
        lambda body, header, msg_id: signer.sign(body, signature_header=header, msg_id=msg_id),
        timeout_s=settings.custom_tool_timeout_s,
        destinations=destinations,
    )
    app[FORWARDER] = forwarder
    app[WEBHOOKS] = Webhooks(
        app[DATABASE],
        signer,
        timeout_s=settings.webhook_timeout_s,
        max_attempts=settings.webhook_max_attempts,
        max_delay_s=settings.webhook_retry_max_s,
        clock=clock,
        destinations=destinations,
    )
    app[REPORTER] = EndReporter(app[WEBHOOKS], views.end_report)
    sessions.on_closed.append(app[REPORTER])
    app[MCP] = McpEndpoint(
        sessions, settings.wait_cap_ms, forwarder, native=settings.mcp_transport == "native"
    )
    jobs = JobExecutor(
        app[SUPERVISOR],
        replace(
            _job_settings(settings),
            parse_session=functools.partial(session_routes.parse_session, sessions, prefix="session."),
            destinations=destinations,
        ),
        sessions,
    )
    pipelines = PipelineExecutor(
        jobs=jobs,
        sessions=sessions,
        parse_session=functools.partial(session_routes.parse_session, sessions, prefix="with."),
        webhooks=app[WEBHOOKS],
        destinations=destinations,
        session_report=views.end_report,
    )
    app[RUNS] = Runs(
        lambda: database.store.runs,
        app[EVENTS],
        clock,
        {"job": jobs, PIPELINE: pipelines},
        cap=settings.max_concurrent_jobs,
        instance=settings.resolve_instance_id(),
        webhooks=app[WEBHOOKS],
        key_limits=settings.task_key_limits(),
        default_key_limit=settings.task_concurrency_default,
    )
    app[TASKS] = Tasks(
        lambda: database.store.tasks,
        app[RUNS],
        clock,
        TaskSettings(settings.task_misfire_grace_s, settings.task_retry_base_s, settings.task_retry_cap_s),
    )
    session_routes.add_routes(app)
    namespace_routes.add_routes(app)
    auth_routes.add_routes(app)
    if settings.console_dir is not None:
        console_routes.add_routes(app, settings.console_dir)
    run_routes.add_routes(app)
    task_routes.add_routes(app)
    registry_routes.add_routes(app)
    event_routes.add_routes(app)
    webhook_routes.add_routes(app)
    puppet_routes.add_routes(app)
    docs.add_routes(app)
    app[MCP].add_routes(app)
    app.cleanup_ctx.append(_services)
    # on_shutdown runs before aiohttp waits for open requests: closing sessions first wakes every
    # blocked coral_wait_* call, so shutdown does not sit out the waits.
    app.on_shutdown.append(_close_sessions)
    # Then end every live event stream (each session's already ended with session_closed).
    app.on_shutdown.append(_close_event_streams)
    return app


def _store_event(events: EventBus, available: bool, error: str | None) -> None:
    """The store stopped (or started again) keeping what it is given: an event on the server feed."""
    if available:
        events.publish(SERVER_TOPIC, "store_available", {})
    else:
        events.publish(SERVER_TOPIC, "store_unavailable", {"error": error})


async def _close_sessions(app: web.Application) -> None:
    await app[TASKS].close()  # the scheduler loop first: it creates runs
    await app[RUNS].close()  # their agents stopped, their work committed to their branches
    await app[SESSIONS].shutdown()


async def _close_event_streams(app: web.Application) -> None:
    app[EVENTS].close_all()


async def _services(app: web.Application) -> AsyncIterator[None]:
    await app[DATABASE].open()
    await app[WEBHOOKS].start()  # first: it resumes what an earlier run left undelivered
    endpoint = app[MCP]
    await endpoint.start()
    # Containers a crash of this same instance left behind go first (no-op without an engine).
    try:
        async with asyncio.timeout(30):
            await app[DOCKER].sweep()
    except TimeoutError:
        log.warning("docker.sweep_timeout")
    # What a crashed server left: its processes (killed), its sessions (closed, end reports sent).
    await app[SUPERVISOR].reap_orphans(app[DOCKER].remove)
    await app[SESSIONS].recover(app[REPORTER].send)
    await app[RUNS].start()  # runs a dead server left active end (server_restart), their work kept
    try:
        settings = app[SETTINGS]
        if settings.task_files:  # CRONS.json entries as read-only tasks; a bad file fails the start
            await sync_task_files(app[TASKS], settings.task_files, repo=settings.task_files_repo)
        await app[TASKS].start()  # the scheduler loop: what came due while down follows the misfire rule
        yield
    finally:
        await app[TASKS].close()
        await app[RUNS].close()  # done already at shutdown; not when the start failed
        await app[SESSIONS].shutdown()  # their end reports are queued (stored) before the queue stops
        await app[SUPERVISOR].close()  # anything a run or an agent started that is still running
        if ZYGOTE in app:
            await app[ZYGOTE].close()  # after the sessions: it reports their agents' exits
        await endpoint.stop()
        await app[FORWARDER].close()
        app[DOCKER].close()
        await app[WEBHOOKS].close()
        await app[DATABASE].close()


# Where `scripts/install-clis.sh` puts the coding-agent CLIs (or $CORAL_TOOLS_DIR).
TOOLS_DIR = Path(__file__).resolve().parent.parent / ".tools"


def _job_settings(settings: Settings) -> JobSettings:
    """The agent types this server can run (those whose CLI is found), their endpoints and keys."""
    tools = [Path(os.environ["CORAL_TOOLS_DIR"])] if os.environ.get("CORAL_TOOLS_DIR") else []
    tools.append(TOOLS_DIR)
    configured = {
        "claude": (settings.claude_bin, settings.anthropic_base_url, settings.anthropic_api_key),
        "gemini": (settings.gemini_bin, settings.gemini_base_url, settings.gemini_api_key),
        "codex": (settings.codex_bin, settings.openai_base_url, settings.openai_api_key),
    }
    agents: dict[str, AgentSetup] = {}
    for name, cli in AGENTS.items():
        binary, base_url, key = configured[name]
        if binary is None:
            found = find_binary(cli, tools, os.environ.get("PATH"))
            binary = None if found is None else str(found)
        if binary is None:
            continue
        key = key or os.environ.get(cli.key_variable) or ""
        if key:
            SECRETS.add(key)
        agents[name] = AgentSetup(cli, binary, Endpoint(Secret(key), base_url))
    return JobSettings(
        agents=agents,
        allowed_roots=None if settings.job_roots is None else tuple(p.resolve() for p in settings.job_roots),
        stop_grace_s=settings.stop_grace_s,
        base_env={k: v for k, v in os.environ.items() if not k.startswith("CORAL_")},
        owner=settings.resolve_instance_id(),
    )


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (0 = any free port) and tell the session domain the real URL."""
    # AccessLog: one line per request with every credential in its target masked.
    quiet_malformed_requests()
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=5,
        access_log_class=AccessLog,
        keepalive_timeout=KEEPALIVE_S,
    )
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    # Every connection counted against max_connections, its headers and body against their timeouts.
    warn_if_above_fd_limit(app[CONNECTIONS].max_connections)
    site = GuardedSite(runner, sock, app[CONNECTIONS])
    await site.start()
    launcher = app[LAUNCHER]
    settings = app[SETTINGS]
    launcher.listening(settings.agent_api_url(bound), settings.docker_api_url(bound))
    log.info("server.listening host=%s port=%s agents_reach=%s", host, bound, launcher.api_url)
    return runner, bound
