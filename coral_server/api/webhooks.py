"""HTTP routes of outgoing webhooks: list deliveries with their attempts, read one, retry a failed one."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from coral_server.api import views
from coral_server.api.body import read_model
from coral_server.api.errors import BadRequest, json_response
from coral_server.api.keys import WEBHOOKS
from coral_server.api.models import RetryDeliveryRequest
from coral_server.store import DELIVERY_STATUSES, DeliveryFilter, DeliveryStatus

PREFIX = "/api/v1/webhooks/deliveries"
MAX_LIMIT = 1000


def _filter(query: Any) -> DeliveryFilter:
    problems: list[tuple[str, str]] = []
    status = query.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        problems.append(("status", f"expected one of {', '.join(DELIVERY_STATUSES)}"))
    limit = 100
    raw_limit = query.get("limit")
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            problems.append(("limit", "expected an integer"))
        else:
            if not 1 <= limit <= MAX_LIMIT:
                problems.append(("limit", f"must be between 1 and {MAX_LIMIT}"))
    namespace, session_id = query.get("namespace"), query.get("sessionId")
    if session_id is not None and namespace is None:
        problems.append(("namespace", "sessionId needs its namespace"))
    if problems:
        raise BadRequest("invalid delivery filter", problems)
    subject = prefix = None
    if namespace is not None:
        if session_id is not None:
            subject = f"{namespace}/{session_id}"
        else:
            prefix = f"{namespace}/"
    return DeliveryFilter(
        status=cast(DeliveryStatus | None, status),
        kind=query.get("kind"),
        subject=subject,
        subject_prefix=prefix,
        limit=limit,
    )


async def list_deliveries(request: web.Request) -> web.Response:
    found = await request.app[WEBHOOKS].find(_filter(request.query))
    return json_response([views.delivery_out(d) for d in found])


async def get_delivery(request: web.Request) -> web.Response:
    delivery, attempts = await request.app[WEBHOOKS].get(request.match_info["id"])
    return json_response(views.delivery_detail(delivery, attempts))


async def retry_delivery(request: web.Request) -> web.Response:
    body = await read_model(request, RetryDeliveryRequest, optional=True)
    delivery = await request.app[WEBHOOKS].retry(request.match_info["id"], body.attempts)
    return json_response(views.delivery_out(delivery), status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX, list_deliveries)
    app.router.add_get(PREFIX + "/{id}", get_delivery)
    app.router.add_post(PREFIX + "/{id}/retry", retry_delivery)
