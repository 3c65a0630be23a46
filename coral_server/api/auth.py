"""Authentication of the HTTP API: bearer keys, `?token=` on WebSockets, and the console's login cookie."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import OrderedDict
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from coral_server.api.errors import Handler, error_response
from coral_server.api.keys import SETTINGS
from coral_server.redaction import SECRETS

log = logging.getLogger("coral_server.api")

LOGIN_PATH = "/api/v1/auth/token"
LOGOUT_PATH = "/api/v1/auth/logout"
PUBLIC_PATHS = frozenset({"/api/v1/openapi.json", "/health", LOGIN_PATH, LOGOUT_PATH})
COOKIE = "coral_auth"
# Path prefixes that need a key: the API, its WebSockets, and the tasks system's /tasks, /runs and /events.
PROTECTED = ("/api/", "/ws/", "/tasks", "/runs", "/events")


class Logins:
    """The cookies handed out at login: each a random value standing for the key it was given for.

    Kept in memory, as the reference does: a restart logs everyone out. The oldest are forgotten
    beyond `limit`, so logging in again and again cannot grow it without bound.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._keys: OrderedDict[str, str] = OrderedDict()

    def open(self, key: str) -> str:
        value = secrets.token_urlsafe(32)
        self._keys[value] = key
        SECRETS.add(value)  # a credential: never in a log line
        while len(self._keys) > self.limit:
            old, _ = self._keys.popitem(last=False)
            SECRETS.discard(old)
        return value

    def key_of(self, value: str) -> str | None:
        return self._keys.get(value)

    def close(self, value: str) -> None:
        if self._keys.pop(value, None) is not None:
            SECRETS.discard(value)


LOGINS = web.AppKey("logins", Logins)


def _matches(given: str, keys: list[bytes]) -> bool:
    raw = given.encode()
    return any(hmac.compare_digest(raw, k) for k in keys)


def same_origin(request: web.Request) -> bool:
    """No Origin header (not a cross-origin browser request), or the server's own host.

    Cookies cross ports (localhost:8080 and localhost:5555 are the same *site*), and a WebSocket
    has no CORS: without this check any local page could use the console's login.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == request.host.lower()


def presented_key(request: web.Request) -> str | None:
    """The bearer key a request carries (the header, or `?token=` on a WebSocket route), unchecked."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and request.path.startswith("/ws/") and "token" in request.query:
        # Browsers cannot set headers on a WebSocket; the key may come as ?token= instead.
        return request.query["token"]
    return token.strip() if scheme.lower() == "bearer" else None


def carries_a_key(request: web.Request, keys: list[bytes], logins: Logins, *, any_origin: bool) -> bool:
    """The request carries one of `keys`: `Authorization: Bearer`, `?token=` (WebSockets), or the
    login cookie (from this server's own pages, or any origin when CORS is open to any host)."""
    given = presented_key(request)
    if given is not None and _matches(given, keys):
        return True
    cookie = request.cookies.get(COOKIE)
    if cookie and (any_origin or same_origin(request)):
        key = logins.key_of(cookie)
        return key is not None and _matches(key, keys)
    return False


def logged_in(request: web.Request) -> bool:
    """No auth keys are set, or the request carries one (see `carries_a_key`)."""
    settings = request.app[SETTINGS]
    if not settings.auth_keys:
        return True
    keys = [k.encode() for k in settings.auth_keys]
    return carries_a_key(request, keys, request.app[LOGINS], any_origin=settings.allow_any_host)


def auth_middleware(keys: tuple[str, ...], logins: Logins, *, any_origin: bool = False) -> Middleware:
    """401 unless the request carries a key (see `carries_a_key`)."""
    encoded = [k.encode() for k in keys]
    SECRETS.add(*keys)  # for the life of the process, as the keys are

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not encoded or not request.path.startswith(PROTECTED) or request.path in PUBLIC_PATHS:
            return await handler(request)
        if carries_a_key(request, encoded, logins, any_origin=any_origin):
            return await handler(request)
        response = error_response(401, "missing or invalid bearer key")
        response.headers["WWW-Authenticate"] = 'Bearer realm="coral"'
        return response

    return check


def redirect_target(to: str | None) -> str:
    """`to` if it is a path on this server (`/ui/console/...`), else `/`: never another site."""
    if not to or not to.startswith("/") or to.startswith("//") or "\\" in to:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in to):
        return "/"
    parts = urlsplit(to)
    if parts.scheme or parts.netloc:
        return "/"
    return to


def _action_result(kind: str, status: int, location: str | None = None) -> web.Response:
    """A SvelteKit form action's result (`{type, status, location?}`), for a form posted with fetch."""
    body: dict[str, object] = {"type": kind, "status": status}
    if location is not None:
        body["location"] = location
    return web.json_response(body, status=200 if kind != "failure" else status)


async def login(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/auth/token` (form field `token`, `?to=`): the login cookie, then a 303 to `to`.

    The console's in-app login dialog posts the same form with fetch (SvelteKit's `enhance`, header
    `x-sveltekit-action: true`) and reads the answer as an action result: it gets
    `{"type": "success"}` (or `{"type": "redirect", "location"}` when `to` is given) and the cookie,
    or `{"type": "failure", "status": 401}`, instead of a redirect to a page it cannot parse.
    """
    keys = request.app[SETTINGS].auth_keys
    form = await request.post()
    token = form.get("token")
    target = redirect_target(request.query.get("to"))
    if request.headers.get("x-sveltekit-action") == "true":
        response = (
            _action_result("redirect", 303, target)
            if "to" in request.query
            else _action_result("success", 200)
        )
    else:
        response = web.Response(status=303, headers={"Location": target})
    if not keys:
        return response  # an open API: nothing to log in to
    if not isinstance(token, str) or not _matches(token, [k.encode() for k in keys]):
        log.info("auth.login_refused remote=%s", request.remote)
        if request.headers.get("x-sveltekit-action") == "true":
            return _action_result("failure", 401)
        return error_response(401, "invalid token")
    value = request.app[LOGINS].open(token)
    response.set_cookie(COOKIE, value, path="/", httponly=True, samesite="Lax", secure=request.secure)
    log.info("auth.login remote=%s", request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """`POST /api/v1/auth/logout`: forgets the login cookie; a 303 to `?to=` if given, else 204."""
    cookie = request.cookies.get(COOKIE)
    if cookie:
        request.app[LOGINS].close(cookie)
    to = request.query.get("to")
    response = web.Response(status=204)
    if to:
        response = web.Response(status=303, headers={"Location": redirect_target(to)})
    response.del_cookie(COOKIE, path="/")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post(LOGIN_PATH, login)
    app.router.add_post(LOGOUT_PATH, logout)
