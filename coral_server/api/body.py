"""Reading request bodies: JSON, then a pydantic model; every problem is a 400 naming its field."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from coral_server.api.errors import BadRequest, UnsupportedMediaType, problems_of

M = TypeVar("M", bound=BaseModel)


def _says_json(request: web.Request) -> bool:
    """A body is read as JSON unless its Content-Type names something else.

    No Content-Type, or application/octet-stream (bytes of no stated kind), is read as JSON, as
    are application/json and any application/*+json.
    """
    if "Content-Type" not in request.headers:
        return True
    kind = request.content_type
    return kind in ("application/json", "application/octet-stream") or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise BadRequest("request body is empty; expected JSON", [("(body)", "empty body")])
    if not _says_json(request):
        kind = request.content_type
        raise UnsupportedMediaType(
            f"request body must be JSON (Content-Type: application/json), not {kind}",
            [("(body)", f"Content-Type {kind} is not JSON")],
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc}"
        raise BadRequest(f"request body is {problem}", [("(body)", problem)]) from None


async def read_model(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    """The body as `model`; with `optional`, an empty body means the model's defaults."""
    if optional and not await request.read():
        return model()
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise BadRequest("request body must be a JSON object", [("(body)", "expected an object")])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(f"invalid {model.__name__} request", problems_of(exc)) from None
