"""The one place where domain errors become HTTP status codes and JSON error bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from coral_server.api import views
from coral_server.jobs.repository import RepositoryInvalid, RepositoryNotAllowed
from coral_server.jobs.spec import JobSpecInvalid
from coral_server.registry import AgentNotInRegistry
from coral_server.scheduler.errors import TaskFieldInvalid
from coral_server.sessions import errors as se
from coral_server.sessions.limits import TooManySessions
from coral_server.store import DeliveryFinished, DeliveryNotFound, StoreUnavailable
from coral_server.store.runs import RunNotFound
from coral_server.store.tasks import TaskChanged
from coral_server.tasks.errors import TaskCanceled, TaskNotFound, TaskReadOnly

log = logging.getLogger("coral_server.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: list[tuple[type[Exception], int]] = [
    (se.SessionNotFound, 404),
    (se.NamespaceNotFound, 404),
    (se.AgentNotFound, 404),
    (se.ThreadNotFound, 404),
    (AgentNotInRegistry, 404),
    (DeliveryNotFound, 404),
    (DeliveryFinished, 409),
    (se.NamespaceExists, 409),
    (se.SessionClosed, 409),
    (se.NotExternal, 409),
    (se.SessionRequestInvalid, 400),
    (se.SessionError, 400),
    (RepositoryNotAllowed, 403),
    (RunNotFound, 404),
    (TaskNotFound, 404),
    (TaskCanceled, 409),
    (TaskReadOnly, 409),
    (TaskChanged, 409),
    (StoreUnavailable, 503),
]
_MAPPED = tuple(kind for kind, _ in _STATUS)
_BODY_HEADERS = frozenset({"Content-Type", "Content-Length", "Content-Encoding"})


class BadRequest(Exception):
    """A request body or parameter that fails validation; carries (field, message) pairs."""

    status = 400

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnsupportedMediaType(BadRequest):
    """A body that says it is something other than JSON."""

    status = 415


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def error_response(status: int, message: str, problems: list[tuple[str, str]] | None = None) -> web.Response:
    return json_response(views.error_body(message, problems), status)


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a JSON path: ('a', 0, 'b') -> 'a[0].b'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(body)"


def problems_of(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        # Drop pydantic's internal tags (union members, validator names) from the path.
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
        )
        problems.append((field_path(loc), err["msg"]))
    return problems


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.empty_body:
            raise
        response = error_response(exc.status, exc.reason)
        # Keep what the status needs besides the body, e.g. a 405's Allow.
        for name, value in exc.headers.items():
            if name not in _BODY_HEADERS:
                response.headers.add(name, value)
        return response
    except BadRequest as exc:
        return error_response(exc.status, str(exc), exc.problems)
    except TooManySessions as exc:
        # 429, as for the cap on runs: the request is fine and succeeds once a session ends.
        response = error_response(429, str(exc))
        response.headers["Retry-After"] = "5"
        return response
    except se.SessionRequestInvalid as exc:
        return error_response(400, "invalid session request", [(p.path, p.message) for p in exc.problems])
    except JobSpecInvalid as exc:
        return error_response(400, str(exc), exc.problems)
    except TaskFieldInvalid as exc:
        return error_response(400, f"'{exc.field}': {exc.message}", exc.problems)
    except RepositoryInvalid as exc:
        return error_response(400, f"'{exc.field}': {exc.message}", [(exc.field, exc.message)])
    except _MAPPED as exc:
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                return error_response(status, str(exc))
        raise
    except Exception:
        log.exception("api.unhandled method=%s path=%s", request.method, request.path)
        return error_response(500, "internal server error")
