"""What the device emulators share: delivery after a latency, and dropped messages.

ROS-free. An emulator stands in for a vendor driver in tests and demos: it must
behave like the device, which answers late, measures with noise and loses
messages now and then. The bridges are tested against that, not against an
ideal echo.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class DelayLine(Generic[T]):
    """A queue that hands items out ``latency`` seconds after they went in, dropping some.

    ``drop_rate`` is the probability that an item is lost (decided when it goes
    in, from a seeded generator, so a run is reproducible).
    """

    def __init__(self, latency: float, drop_rate: float, rng: np.random.Generator) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0 s, got {latency}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.latency = float(latency)
        self.drop_rate = float(drop_rate)
        self.rng = rng
        self.queue: collections.deque[tuple[float, T]] = collections.deque()
        self.received = 0
        self.dropped = 0

    def put(self, now: float, item: T) -> None:
        self.received += 1
        if self.drop_rate and self.rng.random() < self.drop_rate:
            self.dropped += 1
            return
        self.queue.append((now + self.latency, item))

    def due(self, now: float) -> list[T]:
        """The items whose latency has passed at ``now``, oldest first."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            out.append(self.queue.popleft()[1])
        return out
