"""The `Runtime` interface: how a process or container is launched, watched and stopped for its owner."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from coral_server.registry.manifest import ContainerRequests


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a launched process or container belongs to: a session (its agents) or a run (its CLI)."""

    kind: str  # "session" | "run"
    id: str
    namespace: str = ""  # a session's namespace; empty for runs

    def labels(self) -> dict[str, str]:
        """What identifies the owner on a container (without the label prefix)."""
        if self.kind == "session":
            return {"namespace": self.namespace, "session": self.id}
        return {"owner": self.kind, self.kind: self.id}


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a runtime needs to start one process or container for its owner."""

    owner: Owner
    name: str  # the agent's name within its owner (or e.g. "cli" for a run's coding agent)
    command: list[str]
    cwd: Path
    env: dict[str, str]
    image: str | None = None
    files: tuple[Path, ...] = ()
    pty: bool = False  # run the process on a pseudo-terminal (interactive CLIs); local processes only
    # What the agent's manifest asks of its container (containers only; the operator decides).
    container: ContainerRequests | None = None


@dataclass(slots=True)
class LogLine:
    stream: str  # "stdout" | "stderr"
    text: str
    timestamp: int


@dataclass(slots=True)
class AgentLog:
    """A bounded buffer of an agent's output lines; old lines go first when it is full."""

    max_bytes: int = 256 * 1024
    lines: deque[LogLine] = field(default_factory=deque)
    size: int = 0
    dropped: int = 0
    listeners: list[Callable[[LogLine], None]] = field(default_factory=list)
    redact: Callable[[str], str] = field(default=lambda text: text)

    def append(self, line: LogLine) -> None:
        line.text = self.redact(line.text)
        self.lines.append(line)
        self.size += len(line.text)
        while self.size > self.max_bytes and self.lines:
            old = self.lines.popleft()
            self.size -= len(old.text)
            self.dropped += 1
        for listener in list(self.listeners):
            listener(line)

    def tail(self, n: int) -> list[LogLine]:
        return list(self.lines)[-n:] if n > 0 else []


class AgentHandle(Protocol):
    """A running agent instance, as its runtime reports it."""

    @property
    def pid(self) -> int | None:
        """Its process group leader's pid (local processes), else None."""
        ...

    @property
    def container_id(self) -> str | None:
        """Its container's id (Docker), else None."""
        ...

    async def wait(self) -> int:
        """Wait until the agent exits; return its exit code."""
        ...

    async def stop(self, grace: float) -> int:
        """Ask the agent to stop, force it after `grace` seconds; return its exit code."""
        ...


@runtime_checkable
class Terminal(Protocol):
    """A handle whose process runs on a pseudo-terminal (`LaunchSpec.pty`): it can be typed into."""

    def write(self, data: bytes) -> None: ...


class Runtime(Protocol):
    """Launches agents: local processes (`process.py`), containers (`docker.py`), external agents."""

    name: str

    async def launch(self, spec: LaunchSpec, log: AgentLog) -> AgentHandle: ...


class LaunchFailed(Exception):
    """The runtime could not start the agent (missing executable, bad image...)."""
