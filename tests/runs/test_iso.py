"""Run times as events and webhooks show them: `iso` agrees with `datetime` to the character."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from coral_server.runs.bodies import iso


def reference(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize(
    "unix_s",
    [0.0, 0.0005, 0.9995, 0.9999996, 1.0, 1_796_002_805.123, 1_796_002_805.9999999, -0.25, -1.0000004],
)
def test_edges_of_a_second(unix_s: float) -> None:
    assert iso(unix_s) == reference(unix_s)


def test_random_times_in_many_seconds_and_the_same_second() -> None:
    rng = random.Random(17)
    burst = 1_796_002_805.0
    times = [rng.uniform(-1e9, 4e9) for _ in range(20_000)] + [burst + rng.random() for _ in range(5_000)]
    assert [iso(t) for t in times] == [reference(t) for t in times]


def test_none_stays_none() -> None:
    assert iso(None) is None
