"""The `coral-server` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from coral_server import collector
from coral_server.app import build_app, serve
from coral_server.config import SettingsInvalid, load_settings
from coral_server.redaction import install as install_redaction
from coral_server.tasks.files import TaskFileInvalid


async def _run(argv: Sequence[str] | None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsInvalid as exc:
        print(f"coral-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    install_redaction()  # no registered secret reaches the log, whichever logger writes the line
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app = build_app(settings)
        runner, port = await serve(app, settings.host, settings.port)
    except (OSError, sqlite3.Error, TaskFileInvalid) as exc:
        # One line that names what is wrong, not a chained traceback (a read-only, full or
        # non-directory data dir, a port in use...).
        print(f"coral-server: cannot start: {_cause(exc, settings.data_dir)}", file=sys.stderr)
        return 2
    collector.tune()  # after start-up: what it made is frozen
    exposure = settings.exposure_warning()
    if exposure is not None:
        print(f"coral-server: WARNING: {exposure}", file=sys.stderr)
    print(f"coral-server listening on http://{settings.host}:{port} (API docs: /ui/docs)", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()  # closes every session: no agent outlives the server
    return 0


def _cause(exc: BaseException, data_dir: Path) -> str:
    """The root cause of a start-up failure, with the path it is about."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.Error):
        return f"{data_dir / 'coral.db'}: {exc}"
    return str(exc) or type(exc).__name__


def _schemas(argv: Sequence[str]) -> int:
    from coral_server.api import schemas

    if "--check" in argv:
        problems = schemas.stale()
        if problems:
            print(
                "schemas/ is out of date (run: coral-server schemas): " + ", ".join(problems), file=sys.stderr
            )
            return 1
        print("schemas/ is up to date")
        return 0
    schemas.write()
    print(f"wrote {schemas.SCHEMA_DIR}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """`coral-server [flags]` serves; `coral-server schemas [--check]` regenerates schemas/."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["schemas"]:
        sys.exit(_schemas(args[1:]))
    sys.exit(asyncio.run(_run(args)))
