"""Domain errors of sessions, threads and agents; `api/errors.py` maps them to HTTP."""

from __future__ import annotations

from dataclasses import dataclass


class SessionError(Exception):
    """Base class of every session-domain error; `str(err)` is safe to show to the caller."""


class SessionNotFound(SessionError):
    def __init__(self, namespace: str, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found in namespace {namespace!r}")


class NamespaceNotFound(SessionError):
    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} not found")


class NamespaceExists(SessionError):
    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} already exists")


class NotPending(SessionError):
    """Executing a session that was not created with deferred execution, or already ran."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is not pending execution")


class SessionClosed(SessionError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is closed")


class AgentNotFound(SessionError):
    def __init__(self, name: str) -> None:
        super().__init__(f"agent {name!r} is not in this session")


class AgentNotLinked(SessionError):
    def __init__(self, sender: str, target: str) -> None:
        super().__init__(f"agent {sender!r} is not linked to agent {target!r} (see the session's groups)")


class ThreadNotFound(SessionError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id!r} not found")


class ThreadClosed(SessionError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id!r} is closed")


class NotParticipant(SessionError):
    def __init__(self, agent: str, thread_id: str) -> None:
        super().__init__(f"agent {agent!r} is not a participant of thread {thread_id!r}")
        self.agent = agent


class InvalidArgument(SessionError):
    """A tool or API argument that is well-typed but makes no sense (e.g. mentioning yourself)."""


class NotExternal(SessionError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"agent {name!r} is launched by the server; only external agents expose a connection"
        )


@dataclass(frozen=True, slots=True)
class RequestProblem:
    """One wrong field of a session request: a JSON path and what is wrong with it."""

    path: str
    message: str


class SessionRequestInvalid(SessionError):
    """A session request that names things that do not exist or do not fit together."""

    def __init__(self, problems: list[RequestProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
