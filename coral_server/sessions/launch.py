"""How a session agent is launched: its environment, option files, command or image, and MCP target."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from coral_server.redaction import SECRETS, mask_values
from coral_server.registry import LaunchTarget, RuntimeTransport, connection_url, launch_env, materialize
from coral_server.runtimes import LaunchFailed, LaunchSpec, Owner
from coral_server.sessions.agent import SessionAgent


class AgentLauncher:
    """Builds launch specs for session agents from what the server was told (no global state).

    `inherited_env` is what executables inherit (the server's environment minus its own settings, as
    the reference does); containers get only what is theirs.
    """

    def __init__(
        self, api_url: str, docker_api_url: str | None = None, inherited_env: Mapping[str, str] | None = None
    ) -> None:
        self.api_url = api_url
        self.docker_api_url = docker_api_url
        self.inherited_env = dict(inherited_env or {})

    def listening(self, api_url: str, docker_api_url: str | None) -> None:
        """Where the server really listens, once bound (port 0 picks one): agents launched after this
        connect there."""
        self.api_url, self.docker_api_url = api_url, docker_api_url

    def connection_url(self, agent: SessionAgent) -> str:
        return connection_url(self.target(agent))

    def target(self, agent: SessionAgent, session_id: str = "") -> LaunchTarget:
        """Who `agent` is and where its MCP endpoint is (the URL needs no session id)."""
        transport: RuntimeTransport = "streamable_http"
        if agent.runtime == "executable" and agent.manifest.executable is not None:
            transport = agent.manifest.executable.transport
        elif agent.runtime == "docker" and agent.manifest.docker is not None:
            transport = agent.manifest.docker.transport
        api_url = self.api_url
        if agent.runtime == "docker" and self.docker_api_url:
            api_url = self.docker_api_url
        return LaunchTarget(
            generation=agent.generation,
            api_url=api_url,
            secret=agent.secret,
            agent_name=agent.name,
            session_id=session_id,
            runtime=agent.runtime,
            transport=transport,
            system_prompt=agent.system_prompt,
        )

    def spec(self, owner: Owner, agent: SessionAgent, files_dir: Path, cwd: Path | None = None) -> LaunchSpec:
        """The agent's launch spec; its file options are written under `files_dir`. With `cwd` (a
        job's worktree) it works there, its command's files still found in its manifest's folder."""
        manifest = agent.manifest
        opt_env = materialize(agent.options, files_dir)
        SECRETS.discard(*agent.secret_values)  # held once per agent, however often it is launched
        agent.secret_values = set(opt_env.secret_values)
        SECRETS.add(*agent.secret_values)
        secrets = sorted((s for s in agent.secret_values if s), key=len, reverse=True)
        if secrets:
            agent.log.redact = lambda text: mask_values(text, secrets)
        env: dict[str, str] = {}
        if agent.runtime == "executable":
            env.update(self.inherited_env)
        env.update(opt_env.env)
        env.update(launch_env(self.target(agent, owner.id)))
        env["PYTHONUNBUFFERED"] = "1"
        command: list[str] = []
        image: str | None = None
        container = None
        if agent.runtime == "executable":
            if manifest.executable is None:
                raise LaunchFailed(f"agent {manifest.name!r} has no executable runtime")
            command = [manifest.executable.path, *manifest.executable.arguments]
            if cwd is not None:
                command = [_anchored(part, manifest.root) for part in command]
        elif agent.runtime == "docker" and manifest.docker is not None:
            command = list(manifest.docker.command or [])
            image = manifest.docker.image
            container = manifest.docker.container
            if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
                image = f"{image}:{manifest.version}"  # an untagged image means the agent's version
        return LaunchSpec(
            owner=owner,
            name=agent.name,
            command=command,
            cwd=manifest.root if cwd is None or agent.runtime != "executable" else cwd,
            env=env,
            image=image,
            files=tuple(opt_env.files),
            container=container,
        )


def _anchored(part: str, root: Path) -> str:
    """A command part naming a file of the agent's folder, made absolute (the agent works elsewhere)."""
    candidate = root / part
    if Path(part).is_absolute() or not candidate.exists():
        return part
    return str(candidate.resolve())
