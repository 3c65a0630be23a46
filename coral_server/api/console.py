"""Serves a Coral console build (the `console_dir` setting) at `/ui/console/`, as the reference does.

A path is the file itself (a folder: its `index.html`), else `<path>.html` (the console's pages),
else the build's `404.html` (with status 404). Nothing outside the folder is ever served.

With auth keys set, a page (not the login page, not an asset) asked for without a key or login
cookie leads to the console's login page (`login?to=` that page, `token=` kept), so the console
starts logged in: its live streams open only on a page loaded with the cookie.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from coral_server.api.auth import logged_in

PREFIX = "/ui/console"
CONSOLE_DIR = web.AppKey("console_dir", Path)
LOGIN_PAGE = "login.html"


def _inside(root: Path, relative: str) -> Path | None:
    """`root/relative` if it is a file inside `root` once every `..` and symlink is resolved."""
    if "\x00" in relative:
        return None
    try:
        path = (root / relative.lstrip("/")).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if path != root and not path.is_relative_to(root):
        return None
    if path.is_dir():
        path = path / "index.html"
    return path if path.is_file() else None


def find(root: Path, relative: str) -> tuple[Path, int] | None:
    """The file answering `relative` and its status, or None (no 404.html either)."""
    found = _inside(root, relative)
    if found is not None:
        return found, 200
    stem = relative.rstrip("/")
    if stem:
        page = _inside(root, stem + ".html")
        if page is not None:
            return page, 200
    missing = _inside(root, "404.html")
    return (missing, 404) if missing is not None else None


async def serve(request: web.Request) -> web.StreamResponse:
    answer = find(request.app[CONSOLE_DIR], request.match_info.get("path", ""))
    if answer is None:
        raise web.HTTPNotFound()
    path, status = answer
    if path.suffix == ".html" and path.name != LOGIN_PAGE and not logged_in(request):
        query = {k: v for k, v in request.query.items() if k != "token"}
        to = request.path + ("?" + urlencode(query) if query else "")
        params = {"to": to} | ({"token": request.query["token"]} if "token" in request.query else {})
        raise web.HTTPSeeOther(f"{PREFIX}/login?{urlencode(params)}")
    return web.FileResponse(path, status=status)


async def to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PREFIX + "/")


def add_routes(app: web.Application, directory: Path) -> None:
    app[CONSOLE_DIR] = directory.resolve()
    app.router.add_get(PREFIX, serve)
    app.router.add_get(PREFIX + "/{path:.*}", serve)
    app.router.add_get("/", to_console)
