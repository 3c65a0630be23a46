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
from typing import Any, Literal, Protocol

import orjson

from coral_server.sessions.model import Message, Thread
from coral_server.store.base import StoreUnavailable
from coral_server.store.sessions import JournalEntry

# What an entry records: a new thread, a message, a thread's new participant list, a closed thread.
JournalKind = Literal["thread", "message", "participants", "thread_closed"]

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

    def record(self, kind: JournalKind, record: Thread | Message) -> None:
        if self._store() is None:
            return
        self._pending.append((self._session_id, kind, orjson.dumps(_entry(kind, record))))
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


# The stored entries (the store's format, kept as the first journals wrote it so they still replay).


def _message_entry(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "threadId": message.thread_id,
        "senderName": message.sender,
        "text": message.text,
        "timestamp": message.timestamp,
        "mentionNames": list(message.mentions),
    }


def _entry(kind: JournalKind, record: Thread | Message) -> dict[str, Any]:
    if isinstance(record, Message):
        return _message_entry(record)
    if kind == "participants":
        return {"threadId": record.id, "participants": list(record.participants)}
    state: dict[str, Any] = {"state": "open"}
    if record.closed:
        state = {"state": "closed", "summary": record.summary or "", "timestamp": record.closed_at}
    if kind == "thread_closed":
        return {"threadId": record.id, "state": state}
    return {
        "id": record.id,
        "name": record.name,
        "creatorName": record.creator,
        "participants": list(record.participants),
        "state": state,
        "timestamp": record.timestamp,
        "messages": [_message_entry(m) for m in record.messages],
    }


def _message(body: dict[str, Any]) -> Message:
    return Message(
        id=body["id"],
        thread_id=body["threadId"],
        sender=body["senderName"],
        text=body["text"],
        mentions=tuple(body.get("mentionNames", ())),
        timestamp=body["timestamp"],
    )


def _close(thread: Thread, state: dict[str, Any]) -> None:
    if state.get("state") == "closed":
        thread.closed, thread.summary, thread.closed_at = True, state.get("summary"), state.get("timestamp")


def replay(entries: Sequence[JournalEntry]) -> list[Thread]:
    """The threads, with their messages, that a journal's entries describe."""
    threads: dict[str, Thread] = {}
    for entry in entries:
        kind, body = entry.kind, orjson.loads(entry.body)
        if kind == "thread":
            thread = Thread(
                id=body["id"],
                name=body["name"],
                creator=body["creatorName"],
                participants=list(body["participants"]),
                timestamp=body["timestamp"],
                messages=[_message(m) for m in body.get("messages", [])],
            )
            _close(thread, body.get("state", {}))
            threads[thread.id] = thread
        elif kind == "message" and body.get("threadId") in threads:
            threads[body["threadId"]].messages.append(_message(body))
        elif kind == "participants" and body.get("threadId") in threads:
            threads[body["threadId"]].participants = list(body["participants"])
        elif kind == "thread_closed" and body.get("threadId") in threads:
            _close(threads[body["threadId"]], body["state"])
    return list(threads.values())
