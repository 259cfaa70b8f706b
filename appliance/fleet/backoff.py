"""Reconnect delays with full jitter, so a district's Pis do not reconnect in lockstep."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Full-jitter exponential backoff: delay n is uniform in [0, min(cap, base * 2**n)].

    A floor keeps a tight loop from spinning when the random draw is near zero.
    """

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 120.0,
        floor: float = 0.2,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.floor, self._rand = base, cap, floor, rand
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * float(2 ** min(self.attempt, 30)))
        self.attempt += 1
        return max(self.floor, ceiling * self._rand())

    def reset(self) -> None:
        self.attempt = 0
