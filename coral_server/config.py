"""Server settings, layered: defaults < TOML file < environment variables < command-line flags."""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coral_server.registry.manifest import CONTAINER_OVERRIDES
from coral_server.webhooks.destinations import parse_rules

BUNDLED_REGISTRY = Path(__file__).resolve().parent.parent / "registry"
ENV_PREFIX = "CORAL_SERVER_"


class SettingsInvalid(Exception):
    """The configuration cannot be used; the message says which setting and why."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to bind the HTTP server to.")
    port: int = Field(default=5555, ge=0, le=65535, description="TCP port (0 picks a free one).")
    auth_keys: tuple[str, ...] = Field(default=(), description="Bearer keys for /api; none = open API.")
    registry: tuple[Path, ...] = Field(default=(BUNDLED_REGISTRY,), description="Agent registry folders.")
    data_dir: Path = Field(default=Path(".coral"), description="Where the server keeps its files.")
    public_url: str | None = Field(
        default=None, description="Base URL agents use to reach the server (default http://127.0.0.1:<port>)."
    )
    wait_cap_ms: int = Field(default=60_000, gt=0, description="Longest a coral_wait_* call may block.")
    stop_grace_s: float = Field(default=5.0, ge=0, description="SIGTERM-to-SIGKILL grace for agents.")
    log_buffer_bytes: int = Field(default=256 * 1024, gt=0, description="Output kept per agent.")
    log_level: str = Field(default="INFO", description="Logging level.")
    webhook_secrets: tuple[str, ...] = Field(
        default=(),
        description="Webhook signing secrets (current first; two during rotation). Default: data dir.",
    )
    custom_tool_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a custom tool call may take."
    )
    mcp_transport: Literal["native", "sdk"] = Field(
        default="native",
        description="native: handshake-era streamable HTTP served directly (faster); sdk: always the SDK's.",
    )
    python_agents: Literal["preload", "exec"] = Field(
        default="preload",
        description="preload: Python agents fork from an interpreter that imported the MCP SDK; "
        "exec: each starts anew.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one webhook delivery attempt may take."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Attempts per webhook before it is marked failed."
    )
    webhook_retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest pause between two attempts of a webhook (backoff cap)."
    )
    instance_id: str | None = Field(
        default=None,
        description="Names this server's containers; default: generated once, kept in the data dir.",
    )
    docker_host: str | None = Field(
        default=None, description="Docker engine URL (default DOCKER_HOST or the socket)."
    )
    docker_network: Literal["bridge", "host"] = Field(
        default="bridge",
        description="bridge: containers reach the server at host.docker.internal; host: 127.0.0.1.",
    )
    docker_address: str | None = Field(
        default=None, description="Host name containers use to reach the server."
    )
    docker_memory: str | None = Field(
        default=None, description="Memory limit per agent container, e.g. 512m."
    )
    docker_cpus: float | None = Field(default=None, gt=0, description="CPU limit per agent container.")
    docker_pull: Literal["never", "if-missing"] = Field(default="never", description="Image pull policy.")
    max_concurrent_jobs: int = Field(
        default=5, ge=1, le=1000, description="Most job runs active at once (counted in the store)."
    )
    job_roots: tuple[Path, ...] | None = Field(
        default=None,
        description="Directories whose repositories jobs may use (repo_path must lie under one); "
        "default: anywhere.",
    )
    claude_bin: str | None = Field(
        default=None, description="The Claude Code CLI (default: .tools/ of the checkout, then PATH)."
    )
    gemini_bin: str | None = Field(default=None, description="The Gemini CLI (default as for claude).")
    codex_bin: str | None = Field(default=None, description="The Codex CLI (default as for claude).")
    anthropic_base_url: str | None = Field(
        default=None, description="Anthropic-compatible API the claude CLI talks to (default: Anthropic's)."
    )
    anthropic_api_key: str | None = Field(
        default=None, description="API key given to the claude CLI (a secret: never logged)."
    )
    gemini_base_url: str | None = Field(default=None, description="Gemini API base URL for the gemini CLI.")
    gemini_api_key: str | None = Field(default=None, description="API key given to the gemini CLI (secret).")
    openai_base_url: str | None = Field(default=None, description="OpenAI API base URL for the codex CLI.")
    openai_api_key: str | None = Field(default=None, description="API key given to the codex CLI (secret).")
    # -- limits: streams, connections, request sizes (TOML [limits]) --------------------------------
    stream_write_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="An event stream whose client has not taken a write for this long is dropped; "
        "it is also how long a stream may take to finish once its session has ended.",
    )
    max_streams_per_client: int = Field(
        default=100,
        ge=1,
        description="Event streams open at once per bearer key (per client address on a server "
        "without keys); beyond it a 429.",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a client has to send a request's headers (a 408, then closed)."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Time a client has to send a request's body (a 408, then closed)."
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open HTTP connections at once (agents' included); beyond it a 503 and closed. "
        "Keep it below the open-file limit.",
    )
    max_sessions: int = Field(
        default=1000, ge=1, description="Live sessions at once; beyond it creating one gets a 429."
    )
    max_agents_per_session: int = Field(default=500, ge=1, description="Agents in one session.")
    max_group_size: int = Field(
        default=200, ge=1, description="Agents in one group (each is linked to every other: n² links)."
    )
    max_ttl_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=1, description="Longest session ttl, in ms.")
    max_hold_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="Longest a closed session's state is kept (persistence hold or minimum time), in ms.",
    )
    max_option_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="Largest option value or systemPrompt, in UTF-8 bytes (the OS takes at most 128 KiB "
        "per environment string).",
    )
    max_agent_options_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="All of one agent's option values and systemPrompt together, in bytes (the OS takes "
        "about 2 MiB of environment and arguments in all, the server's own environment included).",
    )

    # -- hardening: where webhooks may go ([webhooks]), how agent containers run ([docker]) ---------
    webhook_private_destinations: Literal["auto", "allow", "deny"] = Field(
        default="auto",
        description="Webhooks and custom tools to loopback, private and link-local addresses: auto = "
        "refused when auth keys are configured, allowed without (development mode); allow; deny.",
    )
    webhook_allow: tuple[str, ...] = Field(
        default=(),
        description="Webhook destinations always allowed: IP addresses, CIDR ranges, host names "
        "(*.example.com: its subdomains).",
    )
    webhook_deny: tuple[str, ...] = Field(
        default=(), description="Webhook destinations always refused (as for allow; deny wins)."
    )
    docker_pids_limit: int = Field(
        default=512, ge=0, description="Most processes and threads per agent container (0: no limit)."
    )
    docker_read_only: bool = Field(
        default=False, description="Agent containers get a read-only root filesystem (and a tmpfs /tmp)."
    )
    docker_user: str | None = Field(
        default=None, description="User agent containers run as (name or uid[:gid]; default: the image's)."
    )
    docker_manifest_overrides: tuple[str, ...] = Field(
        default=(),
        description="What a manifest's [runtimes.docker] may change of the hardening: capAdd, "
        "noNewPrivileges, pidsLimit, readOnly, user (default: nothing).",
    )
    # -- the reference's own clients: its console, cross-origin apps ([console], [network]) ---------
    console_dir: Path | None = Field(
        default=None,
        description="A folder holding a Coral console build, served at /ui/console/ (default: none).",
    )
    allow_any_host: bool = Field(
        default=False,
        description="CORS for any origin, with credentials (the reference's allowAnyHost): for "
        "development only.",
    )

    # -- scheduled tasks ([tasks]) --------------------------------------------------------------------
    task_misfire_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="How late a task's fire may still run (after downtime: once, for all it missed); "
        "older ones are skipped to the next time.",
    )
    task_retry_base_s: float = Field(
        default=10.0, gt=0, description="Backoff base of a failed task run's retries (the first delay)."
    )
    task_retry_cap_s: float = Field(
        default=600.0, gt=0, description="Backoff cap: the longest delay before a task run's retry."
    )
    task_concurrency_default: int = Field(
        default=1, ge=1, description="Most running runs sharing one concurrency_key (unless set per key)."
    )
    task_concurrency_limits: tuple[str, ...] = Field(
        default=(), description="Per concurrency key, its own limit: KEY=N entries (TOML: a table)."
    )

    task_files: tuple[Path, ...] = Field(
        default=(),
        description="Job branches' CRONS.json files whose entries become read-only tasks at start "
        "(see README, Tasks from a file).",
    )
    task_files_repo: Path | None = Field(
        default=None,
        description="The repository of the files' agent entries that name no repo_path of their own.",
    )

    @field_validator("task_concurrency_limits", mode="before")
    @classmethod
    def _limit_entries(cls, value: object) -> object:
        if isinstance(value, Mapping):  # TOML [tasks] concurrencyLimits = {deploys = 2}
            return tuple(f"{key}={limit}" for key, limit in value.items())
        return value

    @field_validator("task_concurrency_limits")
    @classmethod
    def _known_limits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _key_limits(value)  # ValueError names the entry
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> Settings:
        if self.task_retry_cap_s < self.task_retry_base_s:
            raise ValueError(
                f"task_retry_cap_s ({self.task_retry_cap_s}) must be at least task_retry_base_s "
                f"({self.task_retry_base_s})"
            )
        return self

    def task_key_limits(self) -> dict[str, int]:
        """The per-key concurrency limits as a mapping."""
        return _key_limits(self.task_concurrency_limits)

    @field_validator("webhook_allow", "webhook_deny")
    @classmethod
    def _destinations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_rules(value)  # ValueError names the entry
        return value

    @field_validator("docker_user")
    @classmethod
    def _container_user(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError("must be a user name or uid[:gid] without spaces")
        return value

    @field_validator("docker_manifest_overrides")
    @classmethod
    def _known_overrides(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [key for key in value if key not in CONTAINER_OVERRIDES]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)} (known: {', '.join(CONTAINER_OVERRIDES)})")
        return value

    def exposure_warning(self) -> str | None:
        """A warning when the API is open (no auth key) on an address other hosts can reach."""
        if self.auth_keys or _loopback(self.host):
            return None
        return (
            f"the API has no auth key and listens on {self.host or 'every address'}: anyone who can "
            "reach it can run agents and send webhooks from this host (give --auth-key, or bind 127.0.0.1)"
        )

    @field_validator("auth_keys", mode="before")
    @classmethod
    def _clean_keys(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            keys = [k.strip() if isinstance(k, str) else k for k in value]
            if any(k == "" for k in keys):
                raise ValueError("auth keys must not be empty or blank")
            return tuple(keys)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError(f"unknown log level {value!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
        return level

    def agent_api_url(self, bound_port: int) -> str:
        return (self.public_url or f"http://127.0.0.1:{bound_port}").rstrip("/")

    def docker_api_url(self, bound_port: int) -> str:
        default = "127.0.0.1" if self.docker_network == "host" else "host.docker.internal"
        return f"http://{self.docker_address or default}:{bound_port}"

    def resolve_instance_id(self) -> str:
        """The configured instance id, else one generated once and kept in the data dir."""
        if self.instance_id:
            return self.instance_id
        path = self.data_dir / "instance-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            import secrets

            value = secrets.token_hex(6)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
            return value


def _key_limits(entries: Sequence[str]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for entry in entries:
        key, sep, number = entry.rpartition("=")
        if not sep or not key.strip() or not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"{entry!r} is not KEY=N (N a whole number, 1 or more)")
        limits[key.strip()] = int(number)
    return limits


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "" (every address): others may reach it


# TOML layout: the reference server's keys where it has them, ours otherwise.
_TOML_KEYS: dict[tuple[str, ...], str] = {
    ("network", "bindAddress"): "host",
    ("network", "bindPort"): "port",
    ("network", "publicUrl"): "public_url",
    ("auth", "keys"): "auth_keys",
    ("registry", "paths"): "registry",
    ("server", "dataDir"): "data_dir",
    ("session", "defaultWaitTimeout"): "wait_cap_ms",
    ("session", "stopGraceSeconds"): "stop_grace_s",
    ("session", "logBufferBytes"): "log_buffer_bytes",
    ("logging", "level"): "log_level",
    ("server", "instanceId"): "instance_id",
    ("network", "webhookSecrets"): "webhook_secrets",
    ("network", "customToolTimeoutSeconds"): "custom_tool_timeout_s",
    ("network", "mcpTransport"): "mcp_transport",
    ("session", "pythonAgents"): "python_agents",
    ("webhooks", "timeoutSeconds"): "webhook_timeout_s",
    ("webhooks", "maxAttempts"): "webhook_max_attempts",
    ("webhooks", "maxRetryDelaySeconds"): "webhook_retry_max_s",
    ("docker", "socket"): "docker_host",
    ("docker", "network"): "docker_network",
    ("docker", "address"): "docker_address",
    ("docker", "memory"): "docker_memory",
    ("docker", "cpus"): "docker_cpus",
    ("docker", "pull"): "docker_pull",
    ("jobs", "maxConcurrent"): "max_concurrent_jobs",
    ("jobs", "allowedRoots"): "job_roots",
    ("jobs", "claudeBin"): "claude_bin",
    ("jobs", "geminiBin"): "gemini_bin",
    ("jobs", "codexBin"): "codex_bin",
    ("jobs", "anthropicBaseUrl"): "anthropic_base_url",
    ("jobs", "anthropicApiKey"): "anthropic_api_key",
    ("jobs", "geminiBaseUrl"): "gemini_base_url",
    ("jobs", "geminiApiKey"): "gemini_api_key",
    ("jobs", "openaiBaseUrl"): "openai_base_url",
    ("jobs", "openaiApiKey"): "openai_api_key",
    ("webhooks", "privateDestinations"): "webhook_private_destinations",
    ("webhooks", "allowDestinations"): "webhook_allow",
    ("webhooks", "denyDestinations"): "webhook_deny",
    ("docker", "pidsLimit"): "docker_pids_limit",
    ("docker", "readOnly"): "docker_read_only",
    ("docker", "user"): "docker_user",
    ("docker", "manifestOverrides"): "docker_manifest_overrides",
    ("tasks", "misfireGraceSeconds"): "task_misfire_grace_s",
    ("tasks", "retryBaseSeconds"): "task_retry_base_s",
    ("tasks", "retryMaxSeconds"): "task_retry_cap_s",
    ("tasks", "concurrencyDefault"): "task_concurrency_default",
    ("tasks", "concurrencyLimits"): "task_concurrency_limits",
    ("tasks", "files"): "task_files",
    ("tasks", "filesRepo"): "task_files_repo",
    ("console", "dir"): "console_dir",
    ("network", "allowAnyHost"): "allow_any_host",
    ("limits", "streamWriteTimeoutSeconds"): "stream_write_timeout_s",
    ("limits", "maxStreamsPerClient"): "max_streams_per_client",
    ("limits", "headerTimeoutSeconds"): "header_timeout_s",
    ("limits", "bodyTimeoutSeconds"): "body_timeout_s",
    ("limits", "maxConnections"): "max_connections",
    ("limits", "maxSessions"): "max_sessions",
    ("limits", "maxAgentsPerSession"): "max_agents_per_session",
    ("limits", "maxGroupSize"): "max_group_size",
    ("limits", "maxTtlMs"): "max_ttl_ms",
    ("limits", "maxHoldMs"): "max_hold_ms",
    ("limits", "maxOptionBytes"): "max_option_bytes",
    ("limits", "maxAgentOptionsBytes"): "max_agent_options_bytes",
}
_ENV_KEYS = {
    "HOST": "host",
    "PORT": "port",
    "AUTH_KEYS": "auth_keys",
    "REGISTRY": "registry",
    "DATA_DIR": "data_dir",
    "PUBLIC_URL": "public_url",
    "WAIT_CAP_MS": "wait_cap_ms",
    "STOP_GRACE_S": "stop_grace_s",
    "LOG_LEVEL": "log_level",
    "INSTANCE_ID": "instance_id",
    "WEBHOOK_SECRETS": "webhook_secrets",
    "CUSTOM_TOOL_TIMEOUT_S": "custom_tool_timeout_s",
    "MCP_TRANSPORT": "mcp_transport",
    "PYTHON_AGENTS": "python_agents",
    "WEBHOOK_TIMEOUT_S": "webhook_timeout_s",
    "WEBHOOK_MAX_ATTEMPTS": "webhook_max_attempts",
    "WEBHOOK_RETRY_MAX_S": "webhook_retry_max_s",
    "DOCKER_NETWORK": "docker_network",
    "DOCKER_ADDRESS": "docker_address",
    "DOCKER_MEMORY": "docker_memory",
    "DOCKER_CPUS": "docker_cpus",
    "DOCKER_PULL": "docker_pull",
    "MAX_CONCURRENT_JOBS": "max_concurrent_jobs",
    "JOB_ROOTS": "job_roots",
    "CLAUDE_BIN": "claude_bin",
    "GEMINI_BIN": "gemini_bin",
    "CODEX_BIN": "codex_bin",
    "ANTHROPIC_BASE_URL": "anthropic_base_url",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "GEMINI_BASE_URL": "gemini_base_url",
    "GEMINI_API_KEY": "gemini_api_key",
    "OPENAI_BASE_URL": "openai_base_url",
    "OPENAI_API_KEY": "openai_api_key",
    "WEBHOOK_PRIVATE_DESTINATIONS": "webhook_private_destinations",
    "WEBHOOK_ALLOW": "webhook_allow",
    "WEBHOOK_DENY": "webhook_deny",
    "DOCKER_PIDS_LIMIT": "docker_pids_limit",
    "DOCKER_READ_ONLY": "docker_read_only",
    "DOCKER_USER": "docker_user",
    "DOCKER_MANIFEST_OVERRIDES": "docker_manifest_overrides",
    "TASK_MISFIRE_GRACE_S": "task_misfire_grace_s",
    "TASK_RETRY_BASE_S": "task_retry_base_s",
    "TASK_RETRY_CAP_S": "task_retry_cap_s",
    "TASK_CONCURRENCY_DEFAULT": "task_concurrency_default",
    "TASK_CONCURRENCY_LIMITS": "task_concurrency_limits",
    "TASK_FILES": "task_files",
    "TASK_FILES_REPO": "task_files_repo",
    "CONSOLE_DIR": "console_dir",
    "ALLOW_ANY_HOST": "allow_any_host",
    "STREAM_WRITE_TIMEOUT_S": "stream_write_timeout_s",
    "MAX_STREAMS_PER_CLIENT": "max_streams_per_client",
    "HEADER_TIMEOUT_S": "header_timeout_s",
    "BODY_TIMEOUT_S": "body_timeout_s",
    "MAX_CONNECTIONS": "max_connections",
    "MAX_SESSIONS": "max_sessions",
    "MAX_AGENTS_PER_SESSION": "max_agents_per_session",
    "MAX_GROUP_SIZE": "max_group_size",
    "MAX_TTL_MS": "max_ttl_ms",
    "MAX_HOLD_MS": "max_hold_ms",
    "MAX_OPTION_BYTES": "max_option_bytes",
    "MAX_AGENT_OPTIONS_BYTES": "max_agent_options_bytes",
}
# Read without our prefix too, as the systems they come from spell them (the prefixed one wins).
_BARE_ENV_KEYS = {"CORAL_MAX_CONCURRENT_JOBS": "max_concurrent_jobs"}
_LIST_FIELDS = {
    "auth_keys": ",",
    "registry": os.pathsep,
    "webhook_secrets": ",",
    "job_roots": os.pathsep,
    "webhook_allow": ",",
    "webhook_deny": ",",
    "docker_manifest_overrides": ",",
    "task_concurrency_limits": ",",
    "task_files": os.pathsep,
}


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsInvalid(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsInvalid(f"config file {path}: {exc}") from None
    values: dict[str, Any] = {}
    for (section, key), field in _TOML_KEYS.items():
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            values[field] = table[key]
    network = data.get("network")
    if (
        isinstance(network, dict)
        and isinstance(network.get("webhookSecret"), str)
        and "webhook_secrets" not in values
    ):
        values["webhook_secrets"] = [network["webhookSecret"]]  # the reference server's single-secret key
    for field in ("registry", "job_roots", "task_files"):
        if field in values and isinstance(values[field], list):
            values[field] = [(path.parent / p) for p in values[field]]
    for field in ("console_dir", "task_files_repo"):
        if isinstance(values.get(field), str):
            values[field] = path.parent / values[field]
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {field: env[name] for name, field in _BARE_ENV_KEYS.items() if name in env}
    for suffix, field in _ENV_KEYS.items():
        raw = env.get(ENV_PREFIX + suffix)
        if raw is None:
            continue
        values[field] = [p for p in raw.split(_LIST_FIELDS[field]) if p] if field in _LIST_FIELDS else raw
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coral-server",
        description="Run the Coral agent server. Settings come from defaults, then the TOML file "
        f"(--config or CONFIG_FILE_PATH), then {ENV_PREFIX}* environment variables, then these flags.",
    )
    parser.add_argument("--config", type=Path, help="TOML config file (also CONFIG_FILE_PATH).")
    parser.add_argument("--host", help="bind address (default 127.0.0.1; env CORAL_SERVER_HOST)")
    parser.add_argument("--port", type=int, help="port (default 5555; env CORAL_SERVER_PORT)")
    parser.add_argument(
        "--auth-key",
        action="append",
        dest="auth_keys",
        metavar="KEY",
        help="API bearer key; repeat for several (TOML [auth] keys; env CORAL_SERVER_AUTH_KEYS=a,b)",
    )
    parser.add_argument(
        "--registry",
        action="append",
        type=Path,
        metavar="PATH",
        help="agent registry folder; repeatable (default: the bundled registry/; env CORAL_SERVER_REGISTRY)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="data folder (default ./.coral; env CORAL_SERVER_DATA_DIR)"
    )
    parser.add_argument("--public-url", help="base URL agents use to reach this server")
    parser.add_argument("--wait-cap-ms", type=int, help="longest coral_wait_* block in ms (default 60000)")
    parser.add_argument("--stop-grace-s", type=float, help="SIGTERM to SIGKILL grace for agents (default 5)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default INFO)")
    parser.add_argument(
        "--mcp-transport",
        choices=["native", "sdk"],
        help="streamable HTTP for handshake-era agents: native (default, faster) or the SDK's",
    )
    parser.add_argument(
        "--python-agents",
        choices=["preload", "exec"],
        help="Python agents: fork from a zygote with the MCP SDK imported (preload, default) or exec",
    )
    parser.add_argument("--webhook-timeout-s", type=float, help="timeout of one webhook attempt (default 10)")
    parser.add_argument("--webhook-max-attempts", type=int, help="attempts per webhook (default 8)")
    parser.add_argument(
        "--webhook-retry-max-s", type=float, help="longest pause between webhook attempts (default 300)"
    )
    parser.add_argument(
        "--instance-id", help="names this server's containers (default: kept in the data dir)"
    )
    parser.add_argument(
        "--docker-host", help="Docker engine URL (default DOCKER_HOST, else /var/run/docker.sock)"
    )
    parser.add_argument(
        "--docker-network", choices=["bridge", "host"], help="container networking (default bridge)"
    )
    parser.add_argument("--docker-address", help="host name containers use to reach this server")
    parser.add_argument("--docker-memory", help="memory limit per agent container, e.g. 512m")
    parser.add_argument("--docker-cpus", type=float, help="CPU limit per agent container")
    parser.add_argument(
        "--docker-pull", choices=["never", "if-missing"], help="image pull policy (default never)"
    )
    parser.add_argument(
        "--max-concurrent-jobs",
        type=int,
        help="most job runs active at once (default 5; env CORAL_MAX_CONCURRENT_JOBS)",
    )
    parser.add_argument(
        "--job-root",
        action="append",
        dest="job_roots",
        type=Path,
        metavar="DIR",
        help="a directory whose repositories jobs may use; repeatable (default: anywhere)",
    )
    parser.add_argument("--claude-bin", help="the Claude Code CLI (default: .tools/, then PATH)")
    parser.add_argument("--anthropic-base-url", help="Anthropic-compatible API URL for the claude CLI")
    parser.add_argument(
        "--webhook-private-destinations",
        choices=["auto", "allow", "deny"],
        help="webhooks to loopback/private addresses: auto (default: refused with auth keys, allowed "
        "without: development mode), allow, deny",
    )
    parser.add_argument(
        "--webhook-allow",
        action="append",
        dest="webhook_allow",
        metavar="DEST",
        help="a webhook destination always allowed (IP, CIDR, host, *.domain); repeatable",
    )
    parser.add_argument(
        "--webhook-deny",
        action="append",
        dest="webhook_deny",
        metavar="DEST",
        help="a webhook destination always refused (IP, CIDR, host, *.domain); repeatable",
    )
    parser.add_argument(
        "--docker-pids-limit", type=int, help="most processes per agent container (default 512; 0: none)"
    )
    parser.add_argument(
        "--docker-read-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read-only root filesystem for agent containers (default off)",
    )
    parser.add_argument("--docker-user", help="user agent containers run as (default: the image's)")
    parser.add_argument(
        "--docker-manifest-override",
        action="append",
        dest="docker_manifest_overrides",
        metavar="KEY",
        help="a [runtimes.docker] key manifests may set: capAdd, noNewPrivileges, pidsLimit, readOnly, "
        "user; repeatable (default: none)",
    )
    parser.add_argument(
        "--task-misfire-grace-s", type=float, help="how late a task's fire may still run (default 300)"
    )
    parser.add_argument(
        "--task-retry-base-s", type=float, help="first retry delay of a failed task run (default 10)"
    )
    parser.add_argument(
        "--task-retry-cap-s", type=float, help="longest retry delay of a failed task run (default 600)"
    )
    parser.add_argument(
        "--task-concurrency-default", type=int, help="most running runs per concurrency_key (default 1)"
    )
    parser.add_argument(
        "--task-concurrency-limit",
        action="append",
        dest="task_concurrency_limits",
        metavar="KEY=N",
        help="most running runs for one concurrency_key; repeatable",
    )
    parser.add_argument(
        "--task-file",
        action="append",
        dest="task_files",
        type=Path,
        metavar="PATH",
        help="a CRONS.json whose entries become read-only tasks at start; repeatable (env "
        "CORAL_SERVER_TASK_FILES)",
    )
    parser.add_argument(
        "--task-files-repo",
        type=Path,
        metavar="DIR",
        help="the repository of the task files' agent entries without a repo_path of their own",
    )
    parser.add_argument(
        "--console-dir",
        type=Path,
        help="a folder holding a Coral console build, served at /ui/console/ (env CORAL_SERVER_CONSOLE_DIR)",
    )
    parser.add_argument(
        "--allow-any-host",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CORS for any origin, with credentials (development only; default off)",
    )
    return parser


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from flags, environment and the TOML file; raises SettingsInvalid on bad values."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    config_path = args.config or (Path(env["CONFIG_FILE_PATH"]) if env.get("CONFIG_FILE_PATH") else None)
    if config_path is not None:
        values.update(_from_toml(config_path))
    values.update(_from_env(env))
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    values.update(flags)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsInvalid(f"invalid settings: {problems}") from None
