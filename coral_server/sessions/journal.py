"""A session's journal: its threads and messages written to the store as they happen, in batches.

After a crash the store still knows what was said, so the restarted server can send the end report
of a session it lost with its threads and messages. Writes are batched by one writer task per session
(one store hop per batch), so the message path never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from coral_server.store.base import StoreUnavailable
from coral_server.store.sessions import JournalEntry

log = logging.getLogger("coral_server.sessions")

# How long the journal waits before writing again what the store refused.
RETRY_S = 1.0


class JournalStore(Protocol):
    async def append_many(self, entries: Sequence[tuple[str, str, bytes]]) -> None: ...


class Journal:
    """Buffers (kind, body) entries and writes them in order; `flush()` waits for all of them."""

    def __init__(self, session_id: str, store: Callable[[], JournalStore | None]) -> None:
        self._session_id = session_id
        self._store = store
        self._pending: list[tuple[str, str, bytes]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Set while the store refuses what is pending (disk full): a closing session does not wait.
        self._refused = asyncio.Event()

    def record(self, kind: str, body: dict[str, Any]) -> None:
        if self._store() is None:
            return
        self._pending.append((self._session_id, kind, orjson.dumps(body)))
        self._idle.clear()
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name=f"{self._session_id}:journal")

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            store = self._store()
            if batch and store is not None:
                try:
                    await store.append_many(batch)
                except StoreUnavailable as exc:
                    # Kept, in order, and written once the store takes it again (disk full...).
                    self._pending = batch + self._pending
                    self._refused.set()
                    log.error(
                        "session.journal_unstored session=%s entries=%s error=%s",
                        self._session_id,
                        len(self._pending),
                        exc,
                    )
                    await asyncio.sleep(RETRY_S)
                    self._wake.set()
                    continue
                except Exception:
                    log.exception(
                        "session.journal_failed session=%s entries=%s", self._session_id, len(batch)
                    )
                else:
                    self._refused.clear()
            if not self._pending:
                self._idle.set()

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (bounded; not while the store refuses
        it: the session's end report carries it), then stop the writer."""
        idle = asyncio.ensure_future(self._idle.wait())
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({idle, refused}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            refused.cancel()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._pending:
            log.error(
                "session.journal_unwritten session=%s entries=%s (the end report carries them)",
                self._session_id,
                len(self._pending),
            )


def replay(entries: Sequence[JournalEntry]) -> list[dict[str, Any]]:
    """The threads (as the session state shows them) that a journal's entries describe."""
    threads: dict[str, dict[str, Any]] = {}
    for entry in entries:
        kind, body = entry.kind, orjson.loads(entry.body)
        if kind == "thread":
            threads[body["id"]] = {**body, "messages": list(body.get("messages", []))}
        elif kind == "message" and body.get("threadId") in threads:
            threads[body["threadId"]]["messages"].append(body)
        elif kind == "participants" and body.get("threadId") in threads:
            threads[body["threadId"]]["participants"] = list(body["participants"])
        elif kind == "thread_closed" and body.get("threadId") in threads:
            threads[body["threadId"]]["state"] = body["state"]
    return list(threads.values())
