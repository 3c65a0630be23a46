"""IANA time zones for schedules: loading a name (zoneinfo, with the tzdata package as its source)."""

from __future__ import annotations

from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["is_utc", "load_zone"]

_UTC_KEYS = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Zulu", "Etc/Zulu", "Universal", "Etc/Universal"})


def load_zone(name: str) -> ZoneInfo | None:
    """The zone called `name` (case as in the IANA database), or None when there is none."""
    if not name or len(name) > 64 or name != name.strip():
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown, malformed ("../x"), a directory
        return None


def is_utc(zone: tzinfo) -> bool:
    """Whether `zone` is UTC itself (no DST, offset 0)."""
    return zone is UTC or getattr(zone, "key", None) in _UTC_KEYS
