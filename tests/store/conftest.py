"""A real SQLite store in a temp dir, and a factory for deliveries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coral_server.store import NewDelivery, SqliteStore


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
