"""Docker runtime: each agent is a container of its manifest's image, labelled for clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils.socket import STDERR, frames_iter

from coral_server.registry.manifest import ContainerRequests
from coral_server.runtimes.base import AgentHandle, AgentLog, LaunchFailed, LaunchSpec, LogLine

logger = logging.getLogger("coral_server.runtimes.docker")

Clock = Callable[[], int]
LABEL_PREFIX = "coral."
# Short engine calls (create, start, stop, remove) run on the engine's pool; a container's output and
# exit are watched by a thread of its own, so a large session never starves the pool. Stops of a big
# session run in parallel up to this many.
POOL_THREADS = 64
# HTTP connections to the engine kept for reuse: a burst of launches or stops returns this many at
# once; beyond it urllib3 discards connections, warning for each.
HTTP_POOL = 64
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# The writable /tmp of a read-only container (a tmpfs: it counts against the memory limit).
READ_ONLY_TMP = "64m"


@dataclass(frozen=True, slots=True)
class DockerSettings:
    base_url: str | None = None  # None: DOCKER_HOST, else /var/run/docker.sock
    network: str = "bridge"  # "bridge": host.docker.internal -> host gateway; "host": share the host's
    memory: str | None = None  # e.g. "512m"
    cpus: float | None = None
    pull: str = "never"  # "never" | "if-missing"
    instance: str = "default"  # labels every container; orphans of the same instance are swept
    # Hardening: every container runs with no new privileges and no capabilities, at most
    # `pids_limit` processes (0: no limit), optionally read-only and as `user`; a manifest may change
    # only the keys of `[runtimes.docker]` in `overrides` (CONTAINER_OVERRIDES names).
    pids_limit: int = 512
    read_only: bool = False
    user: str | None = None
    overrides: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Hardening:
    """How one container is confined: the server's settings, with what its manifest may change."""

    no_new_privileges: bool = True
    cap_add: tuple[str, ...] = ()  # added back after every capability is dropped
    pids_limit: int = 512
    read_only: bool = False
    user: str | None = None


def hardening(settings: DockerSettings, asked: ContainerRequests | None) -> Hardening:
    """The confinement of a container whose manifest asks `asked`; LaunchFailed when it asks to
    change what the operator did not let manifests change."""
    base = Hardening(pids_limit=settings.pids_limit, read_only=settings.read_only, user=settings.user)
    if asked is None or not asked.asked():
        return base
    refused = [key for key in asked.asked() if key not in settings.overrides]
    if refused:
        raise LaunchFailed(
            f"the manifest's [runtimes.docker] sets {', '.join(refused)}, which this server does not let "
            "manifests change (setting docker.manifestOverrides)"
        )
    no_new_privileges = asked.no_new_privileges
    return Hardening(
        no_new_privileges=base.no_new_privileges if no_new_privileges is None else no_new_privileges,
        cap_add=tuple(c.upper().removeprefix("CAP_") for c in asked.cap_add or ()),
        pids_limit=base.pids_limit if asked.pids_limit is None else asked.pids_limit,
        read_only=base.read_only if asked.read_only is None else asked.read_only,
        user=asked.user or base.user,
    )


class DockerEngine:
    """A lazily connected docker SDK client whose blocking calls run on a dedicated thread pool."""

    def __init__(self, settings: DockerSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="coral-docker")

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def client(self) -> Any:
        if self._client is None:

            def connect() -> Any:
                _probe(self.settings.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET)
                if self.settings.base_url:
                    client = docker.DockerClient(base_url=self.settings.base_url, max_pool_size=HTTP_POOL)
                else:
                    client = docker.from_env(max_pool_size=HTTP_POOL)
                client.ping()
                return client

            try:
                self._client = await self.run(connect)
            except DockerException as exc:
                raise LaunchFailed(f"docker engine not reachable: {exc}") from exc
        return self._client

    def labels(self, spec: LaunchSpec) -> dict[str, str]:
        labels = {LABEL_PREFIX + "instance": self.settings.instance}
        labels.update({LABEL_PREFIX + k: v for k, v in spec.owner.labels().items()})
        labels[LABEL_PREFIX + "agent"] = spec.name
        return labels

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

    async def remove(self, container_id: str) -> None:
        """Remove a container (killing it first); nothing happens when there is none or no engine."""
        try:
            client = await self.client()
        except LaunchFailed:
            return
        with contextlib.suppress(NotFound):
            await self.run(client.api.remove_container, container_id, force=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def _probe(url: str) -> None:
    """Fail at once when a local engine's socket does not answer, closing the probe: docker-py leaves the
    socket of a failed connect open (unclosed, for the garbage collector to warn about)."""
    if not url.startswith("unix://"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(url.removeprefix("unix://"))
        except OSError as exc:
            raise DockerException(f"nothing answers at {url}: {exc}") from exc


def _attach(api: Any, container_id: str) -> Any:
    """The container's stdout and stderr as one multiplexed socket (made before start: nothing missed).

    Containers run without a TTY, so the engine frames each chunk with its stream; the socket ends
    once the container's output is closed, i.e. when it exits, with everything it printed.
    """
    return api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})


def _close_socket(sock: Any) -> None:
    """Close an attach socket: for a local engine docker-py hands out a SocketIO, and closing that
    leaves the socket under it open (until the garbage collector finds it)."""
    inner = getattr(sock, "_sock", None)  # (SocketIO.close() forgets it)
    with contextlib.suppress(OSError):
        sock.close()
        if inner is not None:
            inner.close()


def _copy_output(sock: Any, log: AgentLog, clock: Clock, loop: asyncio.AbstractEventLoop) -> None:
    pending = {"stdout": b"", "stderr": b""}

    def emit(stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        loop.call_soon_threadsafe(log.append, LogLine(stream, text, clock()))

    try:
        for kind, data in frames_iter(sock, tty=False):
            stream = "stderr" if kind == STDERR else "stdout"
            *lines, pending[stream] = (pending[stream] + data).split(b"\n")
            for line in lines:
                emit(stream, line)
    finally:
        for stream, rest in pending.items():
            if rest:
                emit(stream, rest)


def _watch(
    api: Any,
    container_id: str,
    sock: Any,
    log: AgentLog,
    clock: Clock,
    loop: asyncio.AbstractEventLoop,
    exited: asyncio.Future[int],
) -> None:
    """A container's watcher thread: copy its output while it runs, then report its exit code.

    Whatever goes wrong with the output, the exit must still be reported: a session waits for it.
    """
    try:
        _copy_output(sock, log, clock, loop)
    except Exception as exc:  # the stream broke (engine gone, connection reset...): keep the exit
        logger.debug("docker.output_ended container=%s error=%r", container_id[:12], exc)
    finally:
        _close_socket(sock)
    # The output ends when the container does (or if the stream broke: then this waits for the exit).
    try:
        code = int(api.wait(container_id).get("StatusCode", -1))
    except Exception as exc:  # removed behind our back, or the engine is gone
        logger.debug("docker.wait_failed container=%s error=%r", container_id[:12], exc)
        code = -1
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_settle, exited, code)


def _settle(exited: asyncio.Future[int], code: int) -> None:
    if not exited.done():
        exited.set_result(code)


class DockerHandle:
    """A started container: its exit status, its logs, and how to stop and remove it."""

    def __init__(
        self, engine: DockerEngine, api: Any, container_id: str, sock: Any, log: AgentLog, clock: Clock
    ) -> None:
        self._engine = engine
        self._api = api
        self._id = container_id
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._watcher = threading.Thread(
            target=_watch,
            args=(api, container_id, sock, log, clock, loop, self._exited),
            daemon=True,
            name=f"coral-docker-{container_id[:12]}",
        )
        self._watcher.start()
        self._exit: asyncio.Future[int] | None = None

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str:
        return self._id

    async def _wait_exit(self) -> int:
        code = await self._exited  # set once the watcher has copied every line the container printed
        with contextlib.suppress(NotFound, APIError):
            await self._engine.run(self._api.remove_container, self._id, force=True)
        return code

    async def wait(self) -> int:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._wait_exit())
        return await asyncio.shield(self._exit)

    async def stop(self, grace: float) -> int:
        with contextlib.suppress(NotFound, APIError):
            await self._engine.run(self._api.stop, self._id, timeout=max(0, int(grace + 0.999)))
        return await self.wait()


class DockerRuntime:
    """`provider.runtime = "docker"`: the agent runs in a container and connects back over MCP.

    A launch is two engine calls, create and start. The image is not inspected first: create is the
    authority on whether it exists (the engine answers 404 and never pulls), so a missing image is
    noticed on every launch, and only then is the pull policy applied.
    """

    name = "docker"

    def __init__(self, engine: DockerEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._image_locks: dict[str, asyncio.Lock] = {}

    async def _provide_image(self, client: Any, image: str, cause: APIError) -> None:
        """Create said 404: fail clearly, or pull the image once when the policy allows."""
        # One pull per image, however many agents of a session asked for it at once.
        async with self._image_locks.setdefault(image, asyncio.Lock()):
            try:
                await self._engine.run(client.images.get, image)
            except ImageNotFound:
                pass
            else:
                if self._engine.settings.pull == "if-missing":
                    return  # pulled meanwhile by another launch
                # The image exists, so the 404 was about something else (a network, a volume...).
                raise LaunchFailed(f"container could not be created: {cause.explanation or cause}")
            if self._engine.settings.pull != "if-missing":
                raise LaunchFailed(
                    f"image {image!r} is not present and the pull policy is 'never' "
                    "(build it first, e.g. agents/docker/build-image.sh)"
                )
            try:
                await self._engine.run(client.images.pull, image)
            except DockerException as exc:
                raise LaunchFailed(f"image {image!r} could not be pulled: {exc}") from exc

    def _create_args(self, api: Any, spec: LaunchSpec) -> dict[str, Any]:
        settings = self._engine.settings
        confined = hardening(settings, spec.container)
        env = dict(spec.env)
        binds: dict[str, dict[str, str]] = {}
        for path in spec.files:
            inside = str(PurePosixPath("/tmp") / path.name)
            binds[str(path)] = {"bind": inside, "mode": "ro"}
            env = {k: v.replace(str(path), inside) for k, v in env.items()}
            # Readable by whoever the container runs as: without capabilities even its root cannot
            # read another uid's 0600 file. On the host its 0700 folder still keeps it private.
            path.chmod(0o444)
        host: dict[str, Any] = {
            "binds": binds,
            "init": True,
            "cap_drop": ["ALL"],
            "cap_add": list(confined.cap_add) or None,
            "security_opt": ["no-new-privileges:true"] if confined.no_new_privileges else None,
            "pids_limit": confined.pids_limit or None,
            "read_only": confined.read_only,
        }
        if confined.read_only:
            host["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={READ_ONLY_TMP}"}
        if settings.network == "host":
            host["network_mode"] = "host"
        else:
            host["extra_hosts"] = {"host.docker.internal": "host-gateway"}
        if settings.memory:
            host["mem_limit"] = settings.memory
        if settings.cpus:
            host["nano_cpus"] = int(settings.cpus * 1e9)
        return {
            "name": f"coral-{spec.name}-{secrets.token_hex(4)}",
            "command": spec.command or None,
            "environment": env,
            "labels": self._engine.labels(spec),
            "host_config": api.create_host_config(**host),
            "user": confined.user,
        }

    async def _create(self, api: Any, spec: LaunchSpec) -> str:
        created = await self._engine.run(api.create_container, spec.image, **self._create_args(api, spec))
        return str(created["Id"])

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle:
        if not spec.image:
            raise LaunchFailed("the agent's manifest has no [runtimes.docker] image")
        client = await self._engine.client()
        api = client.api
        try:
            try:
                container_id = await self._create(api, spec)
            except ImageNotFound as missing:
                await self._provide_image(client, spec.image, missing)
                container_id = await self._create(api, spec)
        except ImageNotFound as exc:
            raise LaunchFailed(f"image {spec.image!r} not found: {exc.explanation}") from exc
        except APIError as exc:
            raise LaunchFailed(f"container could not be created: {exc.explanation or exc}") from exc
        sock: Any = None
        try:
            sock = await self._engine.run(_attach, api, container_id)
            await self._engine.run(api.start, container_id)
        except APIError as exc:
            if sock is not None:
                _close_socket(sock)
            with contextlib.suppress(NotFound, APIError):
                await self._engine.run(api.remove_container, container_id, force=True)
            raise LaunchFailed(f"container could not start: {exc.explanation or exc}") from exc
        logger.info("docker.started agent=%s container=%s image=%s", spec.name, container_id[:12], spec.image)
        return DockerHandle(self._engine, api, container_id, sock, log, self._clock)
