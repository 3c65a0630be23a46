"""Whether the store keeps what it is given: failed writes counted, the last error kept, changes told."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("coral_server.store")

# Told when the store stops (False, the error) or starts again (True, None) keeping what it is given.
HealthListener = Callable[[bool, str | None], None]


class StoreHealth:
    """Counts the writes the store could not make (disk full, read-only, I/O error).

    The first failure after a success is logged at ERROR and told to the listeners (the server
    publishes it as an event), as is the next success; `to_json` is what `/health` shows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failing = False
        self.failures = 0
        self.last_error: str | None = None
        self.last_failure_at: float | None = None  # Unix seconds
        self.listeners: list[HealthListener] = []

    def failed(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error = str(error)
        self.last_failure_at = time.time()
        if not self.failing:
            self.failing = True
            log.error("store.unavailable path=%s error=%s", self.path, error)
            self._tell(False, self.last_error)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.warning("store.available_again path=%s failed_writes=%d", self.path, self.failures)
            self._tell(True, None)

    def _tell(self, available: bool, error: str | None) -> None:
        for listener in list(self.listeners):
            try:
                listener(available, error)
            except Exception:
                log.exception("store.health_listener_failed")

    def to_json(self) -> dict[str, Any]:
        return {
            "available": not self.failing,
            "failedWrites": self.failures,
            "lastError": self.last_error,
            "lastFailureAt": None if self.last_failure_at is None else int(self.last_failure_at * 1000),
        }
