"""The console's login: the cookie from `POST /api/v1/auth/token`, logout, and CORS (`allow_any_host`).

Black-box through a running server, as a browser does it: a form POST, a cookie jar, WebSockets
that carry only the cookie, and Origin headers of other pages.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from coral_server.app import build_app
from coral_server.config import Settings
from tests.conftest import BUNDLED_REGISTRY, FIXTURE_REGISTRY, Coral, agent_spec, session_body, start_coral

KEYS = ("k1", "second-key")
LOGIN = "/api/v1/auth/token"


@pytest.fixture
async def locked(tmp_path: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, auth_keys=KEYS):
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies, even for 127.0.0.1, and shows redirects instead of following."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def log_in(
    coral: Coral, http: aiohttp.ClientSession, token: str | None = "k1", to: str | None = "/ui/console/"
) -> aiohttp.ClientResponse:
    form = {} if token is None else {"token": token}
    url = coral.base_url + LOGIN + ("" if to is None else "?" + urlencode({"to": to}))
    async with http.post(url, data=form, allow_redirects=False) as resp:
        await resp.read()
        return resp


def set_cookie(resp: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


def external_session(ns: str = "login") -> dict[str, Any]:
    return session_body([agent_spec("me", runtime="external")], namespace=ns)


async def test_login_sets_a_careful_cookie_and_redirects(
    locked: Coral, browser: aiohttp.ClientSession
) -> None:
    resp = await log_in(locked, browser, to="/ui/console/thread?x=1")
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/console/thread?x=1"
    cookie = set_cookie(resp)["coral_auth"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # plain http here (see the https test)
    assert cookie.value not in KEYS and len(cookie.value) >= 40  # stands for the key, is not it


async def test_the_cookie_authenticates_http_routes_and_websockets(
    locked: Coral, browser: aiohttp.ClientSession
) -> None:
    assert (await log_in(locked, browser)).status == 303
    async with browser.post(locked.base_url + "/api/v1/local/session", json=external_session()) as resp:
        assert resp.status == 200, await resp.text()
        created = await resp.json()
    ns, sid = created["namespace"], created["sessionId"]
    for path in ("/api/v1/local/namespace/extended", f"/api/v1/local/namespace/{ns}", "/api/v1/registry"):
        async with browser.get(locked.base_url + path) as resp:
            assert resp.status == 200, path
    async with browser.get(locked.base_url + f"/api/v1/local/session/{ns}/{sid}/extended") as resp:
        assert (await resp.json())["base"]["id"] == sid
    # The console's sockets carry no token: the cookie is what lets them in.
    ws_url = locked.base_url.replace("http://", "ws://") + f"/ws/v1/events/{ns}/{sid}"
    async with browser.ws_connect(ws_url) as ws:
        first = json.loads((await ws.receive(timeout=10)).data)
    assert first["type"] == "snapshot" and first["id"] == sid


@pytest.mark.parametrize("token", ["wrong", "", "k1x", "K1", " k1", None], ids=repr)
async def test_a_wrong_token_gets_401_and_no_cookie(
    locked: Coral, browser: aiohttp.ClientSession, token: str | None
) -> None:
    resp = await log_in(locked, browser, token=token)
    assert resp.status == 401
    assert "Set-Cookie" not in resp.headers
    async with browser.get(locked.base_url + "/api/v1/local/namespace") as api:
        assert api.status == 401


@pytest.mark.parametrize(
    ("to", "location"),
    [
        ("/ui/console/", "/ui/console/"),
        ("/ui/console/agent?name=a&b=c", "/ui/console/agent?name=a&b=c"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("ui/console", "/"),
        ("/\t/evil.example", "/"),
        ("/ui/console/\r\nSet-Cookie: x=1", "/"),
    ],
)
async def test_the_redirect_stays_on_this_server(
    locked: Coral, browser: aiohttp.ClientSession, to: str | None, location: str
) -> None:
    resp = await log_in(locked, browser, to=to)
    assert resp.status == 303
    assert resp.headers["Location"] == location


async def test_the_cookie_is_refused_from_another_origin(
    locked: Coral, browser: aiohttp.ClientSession
) -> None:
    """Another port of the same host is the same *site*: the browser sends the cookie; we refuse it."""
    await log_in(locked, browser)
    ns, sid = await locked.create_session(external_session())
    own = locked.base_url
    other = own.rsplit(":", 1)[0] + ":1"
    for origin, status in ((own, 200), (other, 401), ("null", 401)):
        async with browser.get(own + "/api/v1/local/namespace", headers={"Origin": origin}) as resp:
            assert resp.status == status, origin
    ws_url = own.replace("http://", "ws://") + f"/ws/v1/events/{ns}/{sid}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with browser.ws_connect(ws_url, headers={"Origin": other}):
            pass
    assert refused.value.status == 401
    async with browser.ws_connect(ws_url, headers={"Origin": own}) as ws:
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "snapshot"


async def test_logout_forgets_the_cookie(locked: Coral, browser: aiohttp.ClientSession) -> None:
    value = set_cookie(await log_in(locked, browser))["coral_auth"].value
    async with browser.post(locked.base_url + "/api/v1/auth/logout", allow_redirects=False) as resp:
        assert resp.status == 204
        gone = set_cookie(resp)["coral_auth"]
        assert gone.value == "" and gone["max-age"] == "0"
    # Even a client that kept it (or stole it) gets nowhere with it now.
    async with aiohttp.ClientSession() as http:
        cookie = {"Cookie": f"coral_auth={value}"}
        async with http.get(locked.base_url + "/api/v1/local/namespace", headers=cookie) as resp:
            assert resp.status == 401
    async with browser.post(
        locked.base_url + "/api/v1/auth/logout?to=/ui/console/login", allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/ui/console/login"


async def test_a_made_up_cookie_authenticates_nothing(locked: Coral) -> None:
    async with aiohttp.ClientSession() as http:
        for value in ("k1", "", "x" * 43):
            cookie = {"Cookie": f"coral_auth={value}"}
            async with http.get(locked.base_url + "/api/v1/local/namespace", headers=cookie) as resp:
                assert resp.status == 401, value


async def test_bearer_keys_and_the_socket_token_keep_working(locked: Coral) -> None:
    ns, sid = await locked.create_session(external_session())
    async with aiohttp.ClientSession() as http:
        for key in KEYS:
            headers = {"Authorization": f"Bearer {key}"}
            async with http.get(locked.base_url + "/api/v1/local/namespace", headers=headers) as resp:
                assert resp.status == 200
        ws_url = locked.base_url.replace("http://", "ws://") + f"/ws/v1/events/{ns}/{sid}"
        async with http.ws_connect(ws_url + "?token=second-key") as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["type"] == "snapshot"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with http.ws_connect(ws_url + "?token=nope"):
                pass


async def test_without_keys_login_just_redirects(coral: Coral, browser: aiohttp.ClientSession) -> None:
    resp = await log_in(coral, browser, token="anything", to="/ui/console/")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/console/"
    assert "Set-Cookie" not in resp.headers


def self_signed(directory: Path) -> ssl.SSLContext:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_the_cookie_is_secure_when_the_login_came_over_https(tmp_path: Path) -> None:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        auth_keys=KEYS,
        registry=(BUNDLED_REGISTRY, FIXTURE_REGISTRY),
        data_dir=tmp_path / "data",
    )
    runner = web.AppRunner(build_app(settings))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed(tmp_path))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            url = f"https://127.0.0.1:{port}{LOGIN}?to=/ui/console/"
            async with http.post(url, data={"token": "k1"}, ssl=False, allow_redirects=False) as resp:
                assert resp.status == 303
                cookie = set_cookie(resp)["coral_auth"]
    finally:
        await runner.cleanup()
    assert cookie["secure"] is True and cookie["httponly"] is True


# -- CORS -----------------------------------------------------------------------------------------

ELSEWHERE = "http://console.example:5173"


async def test_cors_is_off_by_default(locked: Coral) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": ELSEWHERE, **locked.headers}
        async with http.get(locked.base_url + "/api/v1/local/namespace", headers=headers) as resp:
            assert resp.status == 200
            assert "Access-Control-Allow-Origin" not in resp.headers
        preflight = {"Origin": ELSEWHERE, "Access-Control-Request-Method": "POST"}
        async with http.options(locked.base_url + "/api/v1/local/session", headers=preflight) as resp:
            assert resp.status != 204
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_allow_any_host_answers_preflights_and_lets_any_origin_read(tmp_path: Path) -> None:
    async for coral in start_coral(tmp_path, auth_keys=KEYS, allow_any_host=True):
        async with aiohttp.ClientSession() as http:
            preflight = {
                "Origin": ELSEWHERE,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            }
            # A preflight carries no credentials: it is answered before the key is asked for.
            async with http.options(coral.base_url + "/api/v1/local/session", headers=preflight) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == ELSEWHERE
                assert resp.headers["Access-Control-Allow-Credentials"] == "true"
                assert "POST" in resp.headers["Access-Control-Allow-Methods"]
                assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]
                allowed = resp.headers["Access-Control-Allow-Headers"].lower()
                assert "authorization" in allowed and "content-type" in allowed
            headers = {"Origin": ELSEWHERE, **coral.headers}
            async with http.get(coral.base_url + "/api/v1/local/namespace", headers=headers) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == ELSEWHERE
                assert "Origin" in resp.headers.getall("Vary")
            # The page may read a refusal too (and so show its login).
            async with http.get(
                coral.base_url + "/api/v1/local/namespace", headers={"Origin": ELSEWHERE}
            ) as resp:
                assert resp.status == 401
                assert resp.headers["Access-Control-Allow-Origin"] == ELSEWHERE
            async with http.get(coral.base_url + "/api/v1/local/namespace", headers=coral.headers) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers  # no Origin: not a CORS request
