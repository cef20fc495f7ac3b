"""Faults the simulator can inject, globally or per region.

Rates are probabilities per request, drawn from a ``random.Random`` per
region seeded from the simulator's seed, so the same seed and the same
sequence of requests to a region give the same faults. Every request draws
all its numbers whether or not a rate is set, so turning one fault on does
not reshuffle the others.

The switches serve the fault matrix of the monitor's tests: ``bad_token``
rejects every ``NextToken``; ``repeat_task`` starts every page after the
first with the previous page's last task; ``token_loop`` makes page 2's
``nextToken`` lead back to page 1; ``auth_failure`` fails every call with
``AuthFailure``; ``drop_connection`` closes the connection without a
response.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace


@dataclass
class Faults:
    """Fault settings; ``for_region`` gives a region its own copy to change."""

    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency: float = 0.0
    malformed_rate: float = 0.0
    truncate_rate: float = 0.0
    bad_token: bool = False
    repeat_task: bool = False
    token_loop: bool = False
    auth_failure: bool = False
    drop_connection: bool = False
    regions: dict[str, Faults] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate", "malformed_rate", "truncate_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, not {self.latency}")

    def for_region(self, region: str) -> Faults:
        """The region's own settings, created as a copy of the global ones.

        Once a region has its own settings, later changes to the global
        settings no longer reach it.
        """
        if region not in self.regions:
            self.regions[region] = replace(self, regions={})
        return self.regions[region]

    def effective(self, region: str | None) -> Faults:
        """The settings that apply to a request in ``region``."""
        if region is None:
            return self
        return self.regions.get(region, self)

    def clear(self) -> None:
        """Back to no faults anywhere."""
        for setting in fields(self):
            if setting.name != "regions":
                setattr(self, setting.name, setting.default)
        self.regions.clear()


@dataclass(frozen=True, slots=True)
class Draw:
    """Which rate-based faults hit one request."""

    throttle: bool
    error: bool
    malformed: bool
    truncate: bool


class FaultDice:
    """Per-region random draws, deterministic given the seed."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._by_region: dict[str, random.Random] = {}

    def roll(self, faults: Faults, region: str | None) -> Draw:
        key = region or ""
        rng = self._by_region.get(key)
        if rng is None:
            rng = self._by_region[key] = random.Random(f"faults/{self._seed}/{key}")
        throttle, error, malformed, truncate = (rng.random() for _ in range(4))
        return Draw(
            throttle=throttle < faults.throttle_rate,
            error=error < faults.error_rate,
            malformed=malformed < faults.malformed_rate,
            truncate=truncate < faults.truncate_rate,
        )
