"""Scenarios: seeded, deterministic worlds, each with its own character."""

from __future__ import annotations

from collections import Counter

import pytest

from monitor.simulator import Simulator
from monitor.simulator.lifecycle import FAILURES
from monitor.simulator.scenarios import SCENARIOS, generate

START = 1_800_000_000.0
ACCOUNT = "222222222222"
HOUR = 3600.0
SAMPLES = (0.0, 600.0, 2 * HOUR, 5 * HOUR, 8 * 24 * HOUR)


def _sim(scenario: str, seed: int = 7, tasks: int | None = None) -> Simulator:
    return Simulator(scenario=scenario, seed=seed, tasks=tasks, speed=0.0, start=START)


@pytest.mark.parametrize("scenario", ["steady", "mixed", "stalls"])
def test_the_same_seed_gives_the_same_states_at_the_same_times(scenario: str) -> None:
    """Two independent simulators agree at every sampled time."""
    first, second = _sim(scenario), _sim(scenario)

    for offset in SAMPLES:
        moment = START + offset
        assert first.tasks_of(ACCOUNT, "us-east-1", moment) == second.tasks_of(
            ACCOUNT, "us-east-1", moment
        )


def test_regions_are_the_same_whatever_order_and_time_they_are_created() -> None:
    """A region first asked late, or after another, holds the same tasks."""
    early, late = _sim("mixed"), _sim("mixed")
    early.tasks_of(ACCOUNT, "us-east-1")
    early.tasks_of(ACCOUNT, "eu-west-1")

    late.clock.advance(3 * HOUR)
    late.tasks_of(ACCOUNT, "eu-west-1")
    late.tasks_of(ACCOUNT, "us-east-1")

    for region in ("us-east-1", "eu-west-1"):
        for offset in SAMPLES:
            moment = START + offset
            assert early.tasks_of(ACCOUNT, region, moment) == late.tasks_of(
                ACCOUNT, region, moment
            )


def test_seeds_accounts_and_regions_each_get_their_own_tasks() -> None:
    """Changing the seed, the account or the region changes the tasks."""

    def ids(seed: int, account: str, region: str) -> list[str]:
        timelines = generate("mixed", seed, account, region, START, 10)
        return [timeline.task_id for timeline in timelines]

    base = ids(7, ACCOUNT, "us-east-1")

    assert ids(7, ACCOUNT, "us-east-1") == base
    assert set(ids(8, ACCOUNT, "us-east-1")).isdisjoint(base)
    assert set(ids(7, "333333333333", "us-east-1")).isdisjoint(base)
    assert set(ids(7, ACCOUNT, "us-west-2")).isdisjoint(base)


def test_tasks_sets_the_count_per_region() -> None:
    """``tasks`` overrides the scenario's default count."""
    sim = _sim("steady", tasks=5)

    assert len(sim.timelines_of(ACCOUNT, "us-east-1")) == 5
    assert len(sim.timelines_of(ACCOUNT, "eu-west-1")) == 5


def test_steady_tasks_all_complete() -> None:
    """Every steady task ends completed, with an image."""
    sim = _sim("steady")

    final = sim.tasks_of(ACCOUNT, "us-east-1", START + 6 * HOUR)

    assert len(final) == SCENARIOS["steady"].default_tasks
    assert {task["Status"] for task in final} == {"completed"}
    assert all(task["ImageId"].startswith("ami-") for task in final)


def test_mixed_fails_in_several_phases_cancels_some_and_completes_the_rest() -> None:
    """The ends are varied, and tasks keep appearing over the first hours."""
    sim = _sim("mixed")

    final = sim.tasks_of(ACCOUNT, "us-east-1", START + 12 * HOUR)
    ends = Counter(task.get("StatusMessage", "completed") for task in final)
    visible = [
        len(sim.tasks_of(ACCOUNT, "us-east-1", START + hours * HOUR))
        for hours in (0, 1, 2, 3)
    ]

    assert len(final) == 20
    assert ends["completed"] >= 8
    assert ends["User cancelled"] >= 1
    assert len(set(FAILURES.values()) & set(ends)) >= 3
    assert visible == sorted(visible)
    assert visible[0] < visible[-1] < 20


def test_stalls_freeze_some_tasks_for_hours_while_others_move() -> None:
    """Stalled tasks hold one state through their window; others change in it."""
    sim = _sim("stalls")
    timelines = sim.timelines_of(ACCOUNT, "us-east-1")
    stalled = [timeline for timeline in timelines if timeline.stalls]
    moving = [timeline for timeline in timelines if not timeline.stalls]

    assert len(stalled) == len(timelines) // 3
    assert [s.task_id for s in sim.stalls_of(ACCOUNT, "us-east-1")] == [
        t.task_id for t in stalled
    ]
    for timeline in stalled:
        (stall,) = timeline.stalls
        assert stall.until - stall.since >= 2 * HOUR
        during = {
            repr(
                timeline.state_at(stall.since + fraction * (stall.until - stall.since))
            )
            for fraction in (0.0, 0.3, 0.6, 0.99)
        }
        assert len(during) == 1
        assert timeline.state_at(stall.until) != timeline.state_at(stall.since)

    window = stalled[0].stalls[0]
    assert any(
        timeline.state_at(window.since) != timeline.state_at(window.until)
        for timeline in moving
    )


def test_scale_holds_thousands_of_mostly_active_three_disk_tasks() -> None:
    """2000 tasks per region by default, three disks each, most active."""
    sim = _sim("scale")

    tasks = sim.tasks_of(ACCOUNT, "us-east-1")
    statuses = Counter(task["Status"] for task in tasks)

    assert len(sim.timelines_of(ACCOUNT, "us-east-1")) == 2000
    assert all(len(task["SnapshotDetails"]) == 3 for task in tasks)
    assert statuses["active"] > 0.7 * len(tasks)


def test_empty_has_no_tasks() -> None:
    """The empty scenario starts every region with nothing."""
    assert _sim("empty").tasks_of(ACCOUNT, "us-east-1") == []


def test_an_unknown_scenario_is_refused() -> None:
    """A misspelt scenario name is an error that lists the real ones."""
    with pytest.raises(ValueError, match="steady"):
        _sim("stedy")
