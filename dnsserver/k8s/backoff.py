"""Retry delays for a failing API: exponential, jittered, capped, reset by a success."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays drawn uniformly from [base, min(cap, base * 2**attempt)].

    Full jitter spreads the retries of many pods; the floor of `base` keeps any one watcher
    from ever retrying faster than 1/base per second, however the dice fall.
    """

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rand = rand

    def next(self) -> float:
        """The delay before the next retry; each call widens the window up to the cap."""
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return self.base + self._rand() * (ceiling - self.base)

    def reset(self) -> None:
        self.attempt = 0
