"""Black-box: what the official console (v0.3.3) tripped on when driven by hand in Chromium.

Its in-app login dialog posts the login form with fetch (SvelteKit `enhance`) and reads the answer
as an action result; its live streams open once, at page load, so a page must load logged in; and
its agent page shows the agent's log stream, which for the bundled echo agent was empty.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from yarl import URL

from tests.conftest import Coral, agent_spec, session_body, start_coral
from tests.e2e.test_events import read_until
from tests.e2e.test_reference_streams import stream

LOGIN = "/api/v1/auth/token"
ACTION = {"x-sveltekit-action": "true", "accept": "application/json"}  # what `enhance` sends
PAGES = {
    "index.html": "<title>home</title>",
    "login.html": "<title>login</title>",
    "thread.html": "<title>thread</title>",
    "404.html": "<title>not found</title>",
    "_app/immutable/start.js": "export const start = 1;",
    "favicon.png": "png",
}


@pytest.fixture
def build(tmp_path: Path) -> Path:
    root = tmp_path / "console"
    for name, text in PAGES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
async def locked(tmp_path: Path, build: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, auth_keys=("k1",), console_dir=build):
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """Keeps cookies (even for 127.0.0.1); redirects are shown, not followed."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def post_login(
    coral: Coral, http: aiohttp.ClientSession, token: str, query: str = ""
) -> tuple[int, str, object]:
    async with http.post(
        coral.base_url + LOGIN + query, data={"token": token}, headers=ACTION, allow_redirects=False
    ) as resp:
        return resp.status, resp.content_type, json.loads(await resp.text())


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_the_login_dialogs_fetch_gets_an_action_result_and_the_cookie(
    locked: Coral, browser: aiohttp.ClientSession
) -> None:
    # A wrong key: a failure result, no cookie.
    status, kind, body = await post_login(locked, browser, "wrong")
    assert (status, kind, body) == (401, "application/json", {"type": "failure", "status": 401})
    assert not browser.cookie_jar.filter_cookies(URL(locked.base_url))
    # The dialog posts without ?to=: success (it stays on its page), and the cookie.
    status, kind, body = await post_login(locked, browser, "k1")
    assert (status, kind, body) == (200, "application/json", {"type": "success", "status": 200})
    cookies = browser.cookie_jar.filter_cookies(URL(locked.base_url))
    assert "coral_auth" in cookies
    async with browser.get(locked.base_url + "/api/v1/local/namespace/extended") as resp:
        assert resp.status == 200  # the cookie alone authenticates the console's calls
    # With ?to=: a redirect result naming where to go (still only a path on this server).
    _, _, body = await post_login(locked, browser, "k1", "?to=/ui/console/thread")
    assert body == {"type": "redirect", "status": 303, "location": "/ui/console/thread"}
    _, _, body = await post_login(locked, browser, "k1", "?to=https://evil.example/")
    assert body == {"type": "redirect", "status": 303, "location": "/"}
    # A plain form post (the login page) keeps its 303.
    async with browser.post(locked.base_url + LOGIN, data={"token": "k1"}, allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (303, "/")


async def test_a_console_page_loads_logged_in_or_leads_to_the_login_page(
    locked: Coral, browser: aiohttp.ClientSession
) -> None:
    base = locked.base_url
    status, location, _ = await get(browser, base + "/ui/console/thread?x=1")
    assert status == 303
    target = urlsplit(location)
    assert target.path == "/ui/console/login"
    assert parse_qs(target.query) == {"to": ["/ui/console/thread?x=1"]}
    for path in ("/ui/console", "/ui/console/", "/ui/console/nowhere"):
        assert (await get(browser, base + path))[0] == 303, path
    # The login page and the build's assets need no login.
    assert (await get(browser, base + "/ui/console/login"))[:3:2] == (200, "<title>login</title>")
    assert (await get(browser, base + "/ui/console/_app/immutable/start.js"))[0] == 200
    assert (await get(browser, base + "/ui/console/favicon.png"))[0] == 200
    # ?token= goes along to the login page, which logs in with it (the console's own behaviour).
    status, location, _ = await get(browser, base + "/ui/console/?token=k1&y=2")
    assert parse_qs(urlsplit(location).query) == {"to": ["/ui/console/?y=2"], "token": ["k1"]}
    # A made-up cookie is no login.
    browser.cookie_jar.update_cookies({"coral_auth": "made-up"}, URL(base))
    assert (await get(browser, base + "/ui/console/thread"))[0] == 303
    # Logged in: the pages themselves (a bearer key counts too).
    async with browser.post(base + LOGIN, data={"token": "k1"}, allow_redirects=False) as resp:
        assert resp.status == 303
    assert (await get(browser, base + "/ui/console/thread"))[:3:2] == (200, "<title>thread</title>")
    assert (await get(browser, base + "/ui/console/nowhere"))[0] == 404
    async with (
        aiohttp.ClientSession() as other,
        other.get(base + "/ui/console/", headers={"Authorization": "Bearer k1"}) as resp,
    ):
        assert resp.status == 200


async def test_without_auth_keys_pages_are_served_as_they_are(tmp_path: Path, build: Path) -> None:
    async for open_server in start_coral(tmp_path, console_dir=build):
        async with aiohttp.ClientSession() as http:
            assert (await get(http, open_server.base_url + "/ui/console/thread"))[0] == 200


async def test_the_echo_agent_writes_to_its_log_what_it_does(coral: Coral) -> None:
    """The console's agent page shows `/ws/v1/logs` for that agent: echo says it is up, and each reply."""
    await coral.warm_python_agents()
    body = session_body(
        [agent_spec("echo-a"), agent_spec("me", runtime="external")], groups=[["echo-a", "me"]]
    )
    ns, sid = await coral.create_session(body)
    async with stream(coral, f"/ws/v1/logs?sessionFilter={sid}&agentFilter=echo-a") as logs:
        up = "echo-a connected; echoing mentions with prefix 'echo: '"
        first = (await read_until(logs, lambda e: e["text"] == up, timeout=30))[-1]
        assert first["type"] == "info"  # stdout
        puppet = f"/api/v1/puppet/{ns}/{sid}/me"
        status, thread = await coral.request(
            "POST", puppet + "/thread", {"threadName": "t", "participantNames": ["echo-a"]}
        )
        assert status == 200, thread
        message = {"threadId": thread["thread"]["id"], "content": "hi", "mentions": ["echo-a"]}
        assert (await coral.request("POST", puppet + "/thread/message", message))[0] == 200
        said = f"replied to me in thread {thread['thread']['id']} (1/1000)"
        assert (await read_until(logs, lambda e: e["text"] == said, timeout=30))[-1]["type"] == "info"


async def test_the_reference_session_stream_leaves_agents_output_to_the_logs_stream(coral: Coral) -> None:
    """The console warns about every event it does not know; agents' lines go to /ws/v1/logs."""
    await coral.warm_python_agents()
    body = session_body(
        [agent_spec("echo-a"), agent_spec("me", runtime="external")], groups=[["echo-a", "me"]]
    )
    ns, sid = await coral.create_session(body)
    path = f"/ws/v1/events/session/{ns}/{sid}"
    async with stream(coral, path) as plain, stream(coral, path + "?types=agent_log,thread_created") as asked:
        puppet = f"/api/v1/puppet/{ns}/{sid}/me"
        status, thread = await coral.request(
            "POST", puppet + "/thread", {"threadName": "t", "participantNames": ["echo-a"]}
        )
        assert status == 200, thread
        message = {"threadId": thread["thread"]["id"], "content": "hi", "mentions": ["echo-a"]}
        assert (await coral.request("POST", puppet + "/thread/message", message))[0] == 200
        said = f"replied to me in thread {thread['thread']['id']} (1/1000)"
        seen = await read_until(asked, lambda e: e["type"] == "agent_log" and e["text"] == said, timeout=30)
        assert {e["type"] for e in seen} <= {"agent_log", "thread_created"}
        # The log line was published (seen above): the plain stream would carry it before session_closed.
        got = await read_until(
            plain,
            lambda e: e["type"] == "thread_message_sent" and e["message"]["text"] == "echo: hi",
            timeout=30,
        )
        assert (await coral.request("DELETE", f"/api/v1/session/{ns}/{sid}"))[0] == 200
        got += await read_until(plain, lambda e: e["type"] == "session_closed", timeout=30)
    kinds = [e["type"] for e in got]
    assert "thread_created" in kinds and "agent_log" not in kinds, kinds
