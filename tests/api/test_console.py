"""A console build (`console_dir`) at /ui/console/: file, `<path>.html`, `404.html`; nothing outside."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Coral, start_coral

PAGES = {
    "index.html": "<title>home</title>",
    "login.html": "<title>login</title>",
    "thread.html": "<title>thread</title>",
    "404.html": "<title>not found</title>",
    "_app/immutable/entry/start.js": "export const start = 1;",
    "_app/version.json": '{"version":"1"}',
    "templates/index.html": "<title>templates</title>",
    "favicon.png": "\x89PNG",
}
SECRET = "outside the console folder"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A console build, a secret file beside it, and a symlink in it that points out."""
    root = tmp_path / "console"
    for name, text in PAGES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "console-other").mkdir()
    (tmp_path / "console-other" / "x.html").write_text(SECRET)
    (root / "escape.html").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
async def served(tmp_path: Path, build: Path) -> AsyncIterator[Coral]:
    async for server in start_coral(tmp_path, auth_keys=("k1",), console_dir=build):
        yield server


async def fetch(coral: Coral, path: str, key: str | None = "k1") -> tuple[int, str, str]:
    """GET with the key (without one a page leads to the login page: see test_console_drive.py),
    not following redirects."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            coral.base_url + path,
            allow_redirects=False,
            headers={"Authorization": f"Bearer {key}"} if key else {},
        ) as resp,
    ):
        return resp.status, resp.content_type, await resp.text(errors="replace")


@pytest.mark.parametrize(
    ("path", "status", "body", "content_type"),
    [
        ("/ui/console", 200, "<title>home</title>", "text/html"),
        ("/ui/console/", 200, "<title>home</title>", "text/html"),
        ("/ui/console/index.html", 200, "<title>home</title>", "text/html"),
        ("/ui/console/login", 200, "<title>login</title>", "text/html"),
        ("/ui/console/login?to=%2Fui%2Fconsole%2F", 200, "<title>login</title>", "text/html"),
        ("/ui/console/thread", 200, "<title>thread</title>", "text/html"),
        ("/ui/console/thread/", 200, "<title>thread</title>", "text/html"),
        ("/ui/console/templates", 200, "<title>templates</title>", "text/html"),
        ("/ui/console/_app/immutable/entry/start.js", 200, "export const start = 1;", "javascript"),
        ("/ui/console/_app/version.json", 200, '{"version":"1"}', "application/json"),
        ("/ui/console/no-such-page", 404, "<title>not found</title>", "text/html"),
        ("/ui/console/_app/missing.js", 404, "<title>not found</title>", "text/html"),
    ],
)
async def test_a_path_is_the_file_else_its_html_page_else_404_html(
    served: Coral, path: str, status: int, body: str, content_type: str
) -> None:
    got = await fetch(served, path)
    assert got[0] == status, got
    assert got[2] == body
    assert content_type in got[1]


@pytest.mark.parametrize(
    "path",
    [
        "/ui/console/../secret.txt",
        "/ui/console/..%2Fsecret.txt",
        "/ui/console/%2e%2e/secret.txt",
        "/ui/console/%2e%2e%2fsecret.txt",
        "/ui/console/_app/../../secret.txt",
        "/ui/console/..%2F..%2F..%2Fetc%2Fpasswd",
        "/ui/console/%2Fetc%2Fpasswd",
        "/ui/console//etc/passwd",
        "/ui/console/..%5Csecret.txt",
        "/ui/console/..%2Fconsole-other%2Fx",
        "/ui/console/escape",
        "/ui/console/escape.html",
        "/ui/console/%00",
    ],
)
async def test_nothing_outside_the_folder_is_served(served: Coral, path: str) -> None:
    status, _, text = await fetch(served, path)
    assert SECRET not in text and "root:" not in text
    assert status in (404, 400), (path, status)


async def test_the_root_leads_to_the_console(served: Coral) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(served.base_url + "/", allow_redirects=False) as resp,
    ):
        assert resp.status == 302 and resp.headers["Location"] == "/ui/console/"


async def test_the_api_still_needs_its_key_beside_a_console(served: Coral) -> None:
    assert (await fetch(served, "/api/v1/local/namespace", key=None))[0] == 401


async def test_without_the_setting_there_is_no_console(coral: Coral) -> None:
    assert (await fetch(coral, "/ui/console/"))[0] == 404
    assert (await fetch(coral, "/ui/console"))[0] == 404
