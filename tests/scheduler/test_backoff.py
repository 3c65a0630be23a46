"""Retry backoff: each strategy's delays, exactly (the jitter's random source is seeded)."""

from __future__ import annotations

import random

import pytest

from coral_server.scheduler import (
    BACKOFF_STRATEGIES,
    DEFAULT_STRATEGY,
    Backoff,
    TaskFieldInvalid,
    parse_backoff,
)


def test_fixed_waits_the_base_every_time() -> None:
    assert Backoff("fixed", base_s=7.0, cap_s=60.0).delays(5, random.Random(1)) == [7.0] * 5


def test_linear_grows_by_the_base_up_to_the_cap() -> None:
    assert Backoff("linear", base_s=5.0, cap_s=18.0).delays(5, random.Random(1)) == [
        5.0,
        10.0,
        15.0,
        18.0,
        18.0,
    ]


def test_exponential_jitter_doubles_up_to_the_cap_times_a_half_to_one_factor() -> None:
    backoff = Backoff("exponential_jitter", base_s=2.0, cap_s=20.0)
    delays = backoff.delays(6, random.Random(42))
    # The same draws by hand: uniform(0.5, 1) of a Random seeded alike, times 2, 4, 8, 16, 20, 20.
    draws = random.Random(42)
    assert delays == [ceiling * draws.uniform(0.5, 1.0) for ceiling in (2.0, 4.0, 8.0, 16.0, 20.0, 20.0)]
    assert [round(d, 6) for d in delays] == [
        round(d, 6) for d in Backoff("exponential_jitter", 2.0, 20.0).delays(6, random.Random(42))
    ]
    for delay, ceiling in zip(delays, (2.0, 4.0, 8.0, 16.0, 20.0, 20.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_exponential_jitter_spans_its_whole_range_and_stays_finite() -> None:
    backoff = Backoff("exponential_jitter", base_s=1.0, cap_s=300.0)
    rng = random.Random(7)
    draws = [backoff.delay(3, rng) for _ in range(2000)]
    assert 2.0 <= min(draws) < 2.05 and 3.95 < max(draws) <= 4.0
    assert 150.0 <= backoff.delay(10_000, rng) <= 300.0


def test_the_task_field_names_a_strategy() -> None:
    assert parse_backoff(None) == Backoff(DEFAULT_STRATEGY)
    assert DEFAULT_STRATEGY == "exponential_jitter"
    assert parse_backoff("linear", base_s=3.0, cap_s=9.0) == Backoff("linear", 3.0, 9.0)
    assert set(BACKOFF_STRATEGIES) == {"exponential_jitter", "linear", "fixed"}
    with pytest.raises(TaskFieldInvalid) as caught:
        parse_backoff("exponential")
    assert caught.value.problems == [
        (
            "backoff_strategy",
            "'exponential' is not a backoff strategy: one of exponential_jitter, linear, fixed",
        )
    ]


def test_a_nonsense_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="0 < base"):
        Backoff("fixed", base_s=0.0)
    with pytest.raises(ValueError, match="0 < base"):
        Backoff("linear", base_s=10.0, cap_s=5.0)
    with pytest.raises(ValueError, match="retry numbers start at 1"):
        Backoff().delay(0, random.Random(1))
