"""Retry delays of a failed run: `exponential_jitter`, `linear` and `fixed` backoff, base and cap set.

For retry k (1 = the first retry, after the first failed attempt), with base b and cap c:
- `fixed`: min(b, c) every time;
- `linear`: min(b·k, c);
- `exponential_jitter`: min(b·2^(k-1), c) times a factor drawn uniformly from [0.5, 1] ("equal
  jitter", as the webhook delivery queue uses): retries of runs that failed together spread out, yet
  none comes sooner than half its exponential delay. The random source is passed in, so a seeded
  `random.Random` makes the delays exact in tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, get_args

from coral_server.scheduler.errors import TaskFieldInvalid

__all__ = [
    "BACKOFF_STRATEGIES",
    "DEFAULT_BASE_S",
    "DEFAULT_CAP_S",
    "DEFAULT_STRATEGY",
    "Backoff",
    "BackoffStrategy",
    "parse_backoff",
]

BackoffStrategy = Literal["exponential_jitter", "linear", "fixed"]
BACKOFF_STRATEGIES: tuple[BackoffStrategy, ...] = get_args(BackoffStrategy)
DEFAULT_STRATEGY: BackoffStrategy = "exponential_jitter"
DEFAULT_BASE_S = 10.0
DEFAULT_CAP_S = 600.0
_JITTER = (0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Backoff:
    """A strategy with its base and cap, in seconds."""

    strategy: BackoffStrategy = DEFAULT_STRATEGY
    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S

    def __post_init__(self) -> None:
        if self.strategy not in BACKOFF_STRATEGIES:
            raise ValueError(f"unknown backoff strategy {self.strategy!r}")
        if not self.base_s > 0 or not self.cap_s >= self.base_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1 or more); `rng` draws the jitter."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, not {retry}")
        if self.strategy == "fixed":
            return self.base_s
        if self.strategy == "linear":
            return min(self.cap_s, self.base_s * retry)
        exponent = min(retry - 1, 62)  # keeps the float finite however many retries
        return min(self.cap_s, self.base_s * 2.0**exponent) * rng.uniform(*_JITTER)

    def delays(self, retries: int, rng: random.Random) -> list[float]:
        """The delays before retries 1 … `retries`."""
        return [self.delay(retry, rng) for retry in range(1, retries + 1)]


def parse_backoff(
    strategy: str | None, *, base_s: float = DEFAULT_BASE_S, cap_s: float = DEFAULT_CAP_S
) -> Backoff:
    """The task field `backoff_strategy` (None: the default) as a `Backoff`; raises
    `TaskFieldInvalid` naming the field for an unknown strategy."""
    name = DEFAULT_STRATEGY if strategy is None else strategy
    if name not in BACKOFF_STRATEGIES:
        known = ", ".join(BACKOFF_STRATEGIES)
        raise TaskFieldInvalid([("backoff_strategy", f"'{name}' is not a backoff strategy: one of {known}")])
    return Backoff(name, base_s, cap_s)
