"""Docker runtime: each agent is a container of its manifest's image, labelled for clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from coral_server.runtimes.base import AgentHandle, AgentLog, LaunchFailed, LaunchSpec, LogLine

logger = logging.getLogger("coral_server.runtimes.docker")

Clock = Callable[[], int]
LABEL_PREFIX = "coral."


@dataclass(frozen=True, slots=True)
class DockerSettings:
    base_url: str | None = None  # None: DOCKER_HOST, else /var/run/docker.sock
    network: str = "bridge"  # "bridge": host.docker.internal -> host gateway; "host": share the host's
    memory: str | None = None  # e.g. "512m"
    cpus: float | None = None
    pull: str = "never"  # "never" | "if-missing"
    instance: str = "default"  # labels every container; orphans of the same instance are swept


class DockerEngine:
    """A lazily connected docker SDK client whose blocking calls run on a dedicated thread pool.

    Log followers and `wait` calls block for a container's lifetime, so they must not share the
    loop's default executor (a few threads on a small machine).
    """

    def __init__(self, settings: DockerSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="coral-docker")

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def client(self) -> Any:
        if self._client is None:

            def connect() -> Any:
                if self.settings.base_url:
                    client = docker.DockerClient(base_url=self.settings.base_url)
                else:
                    client = docker.from_env()
                client.ping()
                return client

            try:
                self._client = await self.run(connect)
            except DockerException as exc:
                raise LaunchFailed(f"docker engine not reachable: {exc}") from exc
        return self._client

    def labels(self, spec: LaunchSpec) -> dict[str, str]:
        return {
            LABEL_PREFIX + "instance": self.settings.instance,
            LABEL_PREFIX + "namespace": spec.namespace,
            LABEL_PREFIX + "session": spec.session_id,
            LABEL_PREFIX + "agent": spec.agent_name,
        }

    async def sweep(self) -> int:
        """Remove containers a previous run of this instance left behind; returns how many."""
        try:
            client = await self.client()
        except LaunchFailed:
            return 0
        flt = {"label": f"{LABEL_PREFIX}instance={self.settings.instance}"}
        found = await self.run(client.containers.list, all=True, filters=flt)
        for container in found:
            with contextlib.suppress(NotFound, APIError):
                await self.run(container.remove, force=True)
        if found:
            logger.warning("docker.swept_orphans count=%s instance=%s", len(found), self.settings.instance)
        return len(found)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def _follow(
    container: Any, stream: str, log: AgentLog, clock: Clock, loop: asyncio.AbstractEventLoop
) -> None:
    """Copy one output stream of a container into the agent log (runs in a thread)."""
    pending = b""
    try:
        chunks: Iterator[bytes] = container.logs(
            stream=True, follow=True, stdout=stream == "stdout", stderr=stream == "stderr"
        )
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                text = raw.decode("utf-8", "replace").rstrip("\r")
                loop.call_soon_threadsafe(log.append, LogLine(stream, text, clock()))
    except (DockerException, OSError, ValueError):
        pass
    if pending:
        text = pending.decode("utf-8", "replace")
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(log.append, LogLine(stream, text, clock()))


class DockerHandle:
    """A started container: its exit status, its logs, and how to stop and remove it."""

    def __init__(self, engine: DockerEngine, container: Any, log: AgentLog, clock: Clock) -> None:
        self._engine = engine
        self._container = container
        loop = asyncio.get_running_loop()
        self._followers = [
            threading.Thread(
                target=_follow, args=(container, s, log, clock, loop), daemon=True, name=f"logs-{s}"
            )
            for s in ("stdout", "stderr")
        ]
        for follower in self._followers:
            follower.start()
        self._exit: asyncio.Future[int] | None = None

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str:
        return str(self._container.id)

    async def _wait_exit(self) -> int:
        try:
            result = await self._engine.run(self._container.wait)
            code = int(result.get("StatusCode", -1))
        except (NotFound, APIError):
            code = -1
        # Let the followers drain what the container printed before it died.
        for follower in self._followers:
            await self._engine.run(follower.join, 2)
        with contextlib.suppress(NotFound, APIError):
            await self._engine.run(self._container.remove, force=True)
        return code

    async def wait(self) -> int:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._wait_exit())
        return await asyncio.shield(self._exit)

    async def stop(self, grace: float) -> int:
        with contextlib.suppress(NotFound, APIError):
            await self._engine.run(self._container.stop, timeout=max(0, int(grace + 0.999)))
        return await self.wait()


class DockerRuntime:
    """`provider.runtime = "docker"`: the agent runs in a container and connects back over MCP."""

    name = "docker"

    def __init__(self, engine: DockerEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def _ensure_image(self, client: Any, image: str) -> None:
        try:
            await self._engine.run(client.images.get, image)
            return
        except ImageNotFound:
            if self._engine.settings.pull != "if-missing":
                raise LaunchFailed(
                    f"image {image!r} is not present and the pull policy is 'never' "
                    "(build it first, e.g. agents/docker/build-image.sh)"
                ) from None
        try:
            await self._engine.run(client.images.pull, image)
        except DockerException as exc:
            raise LaunchFailed(f"image {image!r} could not be pulled: {exc}") from exc

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        if not spec.image:
            raise LaunchFailed("the agent's manifest has no [runtimes.docker] image")
        settings = self._engine.settings
        client = await self._engine.client()
        await self._ensure_image(client, spec.image)
        env = dict(spec.env)
        volumes: dict[str, dict[str, str]] = {}
        for path in spec.files:
            inside = str(PurePosixPath("/tmp") / path.name)
            volumes[str(path)] = {"bind": inside, "mode": "ro"}
            env = {k: v.replace(str(path), inside) for k, v in env.items()}
        options: dict[str, Any] = {
            "name": f"coral-{spec.agent_name}-{secrets.token_hex(4)}",
            "command": spec.command or None,
            "environment": env,
            "labels": self._engine.labels(spec),
            "volumes": volumes,
            "init": True,
            "detach": True,
        }
        if settings.network == "host":
            options["network_mode"] = "host"
        else:
            options["extra_hosts"] = {"host.docker.internal": "host-gateway"}
        if settings.memory:
            options["mem_limit"] = settings.memory
        if settings.cpus:
            options["nano_cpus"] = int(settings.cpus * 1e9)
        try:
            container = await self._engine.run(client.containers.create, spec.image, **options)
        except ImageNotFound as exc:
            raise LaunchFailed(f"image {spec.image!r} not found: {exc.explanation}") from exc
        except APIError as exc:
            raise LaunchFailed(f"container could not be created: {exc.explanation or exc}") from exc
        try:
            await self._engine.run(container.start)
        except APIError as exc:
            with contextlib.suppress(NotFound, APIError):
                await self._engine.run(container.remove, force=True)
            raise LaunchFailed(f"container could not start: {exc.explanation or exc}") from exc
        logger.info(
            "docker.started agent=%s container=%s image=%s", spec.agent_name, container.short_id, spec.image
        )
        return DockerHandle(self._engine, container, log, self._clock)
