"""Simulated time: a real clock sped up, plus manual jumps.

Everything in the simulator that changes with time reads this clock, so a
test can freeze it (``speed=0``) and step it exactly, and a demo can run a
three-hour import in six minutes (``speed=30``).
"""

from __future__ import annotations

import time


class SimClock:
    """Unix-seconds clock: ``start + speed * real elapsed + manual advances``."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, not {speed}")
        self.start = time.time() if start is None else start
        self.speed = speed
        self._real_origin = time.monotonic()
        self._advanced = 0.0

    def now(self) -> float:
        elapsed = time.monotonic() - self._real_origin
        return self.start + self.speed * elapsed + self._advanced

    def advance(self, seconds: float) -> float:
        """Jump ahead by ``seconds`` of simulated time; returns the new now."""
        if seconds < 0:
            raise ValueError("simulated time never runs backwards")
        self._advanced += seconds
        return self.now()

    def __repr__(self) -> str:
        return f"SimClock(now={self.now():.1f}, speed={self.speed})"
