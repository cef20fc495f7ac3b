"""SimClock: simulated time as a sped-up real clock plus manual jumps."""

from __future__ import annotations

import time

import pytest

from monitor.simulator.clock import SimClock


def test_speed_zero_stands_still_until_advanced() -> None:
    """A frozen clock moves only by advance(), and exactly by that much."""
    clock = SimClock(start=1000.0, speed=0.0)

    time.sleep(0.01)
    before = clock.now()
    after = clock.advance(300.5)

    assert before == 1000.0
    assert after == 1300.5
    assert clock.now() == 1300.5


def test_speed_scales_real_elapsed_time() -> None:
    """At speed 1000, a real 50 ms is about 50 simulated seconds."""
    clock = SimClock(start=0.0, speed=1000.0)

    real_start = time.monotonic()
    time.sleep(0.05)
    simulated = clock.now()
    real = time.monotonic() - real_start

    assert 45.0 <= simulated <= real * 1000.0 + 1.0


def test_manual_advances_add_to_a_running_clock() -> None:
    """advance() also works on a running clock, on top of its speed."""
    clock = SimClock(start=0.0, speed=1.0)

    now = clock.advance(3600.0)

    assert 3600.0 <= now < 3601.0


def test_start_defaults_to_now() -> None:
    """Without a start, simulated time begins at the wall clock."""
    clock = SimClock(speed=0.0)

    assert abs(clock.now() - time.time()) < 5.0


def test_time_never_runs_backwards() -> None:
    """Negative speeds and negative advances are refused."""
    with pytest.raises(ValueError, match="speed"):
        SimClock(start=0.0, speed=-1.0)
    with pytest.raises(ValueError, match="backwards"):
        SimClock(start=0.0, speed=0.0).advance(-1.0)
