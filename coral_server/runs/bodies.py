"""What a run's events and status webhooks say: its summary, its webhook body, its times as text."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

from coral_server.runs.model import Run


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# Formatted times kept: a run's times are in each of its events, and a burst's runs share theirs.
_ISO_KEEP = 4096
_iso_texts: dict[float, str] = {}


def iso(unix_s: float | None) -> str | None:
    """`unix_s` as ISO 8601 UTC to the millisecond (truncated, as `datetime.isoformat` does after
    rounding to the microsecond). A run's times are formatted in every event it is in, and runs come
    in bursts (a fire's runs share their creation time): recent times are kept formatted."""
    if unix_s is None:
        return None
    text = _iso_texts.get(unix_s)
    if text is None:
        if len(_iso_texts) >= _ISO_KEEP:
            _iso_texts.clear()
        text = _iso_texts[unix_s] = _format_iso(unix_s)
    return text


def _format_iso(unix_s: float) -> str:
    fraction, second = math.modf(unix_s)  # split and rounded as `datetime.fromtimestamp` does
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    return f"{_iso_second(int(second))}.{micros // 1000:03d}Z"


def run_summary(run: Run) -> dict[str, Any]:
    """A run's lifecycle fields (no output), for events."""
    return {
        "id": run.id,
        "run_id": run.id,
        "kind": run.kind,
        "status": run.status,
        "trigger_type": run.trigger,
        "display_name": run.display_name,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "exit_reason": run.exit_reason,
        "error_msg": run.error,
    }


def status_webhook(run: Run, previous: str) -> dict[str, Any]:
    """The status webhook's body: the original system's fields plus ours."""
    return {
        "run_id": run.id,
        "session_id": f"run-{run.id}",
        "status": run.status,
        "previous_status": previous,
        "exit_reason": run.exit_reason,
        "error_msg": run.error,
        "display_name": run.display_name,
        "trigger_type": run.trigger,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": run.duration_s,
        "result": run.result,
        "source": "coral",
    }
