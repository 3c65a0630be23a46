"""A real SQLite store in a temp dir, and factories for its records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coral_server.store import NewDelivery, ProcessRecord, SessionRecord, SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "coral.db")
    yield s
    await s.close()


def new_delivery(id: str, *, due: float = 100.0, created: float | None = None, **extra: Any) -> NewDelivery:
    values: dict[str, Any] = {
        "id": id,
        "kind": "session.end",
        "url": "http://127.0.0.1:9/hook",
        "body": b'{"x":1}',
        "max_attempts": 3,
        "next_attempt_at": due,
        "created_at": due if created is None else created,
    }
    values.update(extra)
    return NewDelivery(**values)


def process_record(id: str, **extra: Any) -> ProcessRecord:
    values: dict[str, Any] = {
        "id": id,
        "instance": "i-1",
        "owner_kind": "session",
        "owner_id": "ns/s1",
        "name": "alice",
        "runtime": "executable",
        "pid": 4242,
        "proc_start": 123456,
        "container": None,
        "started_at": 100.0,
    }
    values.update(extra)
    return ProcessRecord(**values)


def session_record(id: str, **extra: Any) -> SessionRecord:
    values: dict[str, Any] = {
        "id": id,
        "namespace": "ns",
        "instance": "i-1",
        "created_at_ms": 100_000,
        "end_webhook": b'{"url":"http://127.0.0.1:9/end"}',
        "agents": b'[{"name":"alice"}]',
    }
    values.update(extra)
    return SessionRecord(**values)
