"""Task timelines: exact hand-written steps and realistic generated lives."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from monitor.model import PHASES
from monitor.simulator.lifecycle import (
    DELETING_SECONDS,
    FAILURES,
    RETENTION,
    DiskSpec,
    GiB,
    Plan,
    TaskSpec,
    Timeline,
    TimelineBuilder,
    realistic,
)

T0 = 1_800_000_000.0
TASK = "import-ami-0123456789abcdef0"
TWO_DISKS = TaskSpec(
    TASK,
    disks=(DiskSpec(size_bytes=8 * GiB), DiskSpec(size_bytes=24 * GiB)),
)


def _simple() -> Timeline:
    return (
        TimelineBuilder(TASK)
        .phase(T0, "pending", 2)
        .phase(T0 + 300, "converting", 28)
        .phase(T0 + 900, "preparing ami", 88)
        .completed(T0 + 3600, image_id="ami-0fedcba9876543210")
        .build()
    )


def _generated(plan: Plan, seed: int = 1, spec: TaskSpec = TWO_DISKS) -> Timeline:
    return realistic(spec, T0, random.Random(seed), plan)


def test_a_hand_written_timeline_is_exact_at_every_step() -> None:
    """Each step holds from its time until the next one's, no earlier."""
    timeline = _simple()

    before = timeline.state_at(T0 - 0.001)
    pending = timeline.state_at(T0)
    still_pending = timeline.state_at(T0 + 299.999)
    converting = timeline.state_at(T0 + 300)

    assert before is None
    assert pending is not None
    assert still_pending == pending
    assert (pending["Status"], pending["StatusMessage"], pending["Progress"]) == (
        "active",
        "pending",
        "2",
    )
    assert converting is not None
    assert (converting["StatusMessage"], converting["Progress"]) == ("converting", "28")


def test_a_completed_task_has_an_image_and_no_progress_or_message() -> None:
    """Completed: ImageId present; Progress and StatusMessage absent."""
    state = _simple().state_at(T0 + 3600)

    assert state is not None
    assert state["Status"] == "completed"
    assert state["ImageId"] == "ami-0fedcba9876543210"
    assert "Progress" not in state
    assert "StatusMessage" not in state
    disk = state["SnapshotDetails"][0]
    assert disk["Status"] == "completed"
    assert disk["SnapshotId"].startswith("snap-")
    assert disk["DeviceName"] == "/dev/sda1"
    assert "Progress" not in disk


def test_disk_size_is_zero_while_pending_then_bytes() -> None:
    """DiskImageSize is 0.0 while pending, then the size in bytes, as a float."""
    timeline = _simple()

    pending = timeline.state_at(T0)
    converting = timeline.state_at(T0 + 300)

    assert pending is not None
    assert converting is not None
    assert pending["SnapshotDetails"][0]["DiskImageSize"] == 0.0
    size = converting["SnapshotDetails"][0]["DiskImageSize"]
    assert isinstance(size, float)
    assert size == 8 * GiB


def test_disk_progress_can_be_set_per_disk() -> None:
    """disk_progress sets each disk: 100 completes it, None has not started."""
    spec = TaskSpec(TASK, disks=(DiskSpec(), DiskSpec(), DiskSpec()))
    timeline = (
        TimelineBuilder(spec)
        .phase(T0, "converting", 40, disk_progress=[100, 40, None])
        .build()
    )

    state = timeline.state_at(T0)

    assert state is not None
    first, second, third = state["SnapshotDetails"]
    assert first["Status"] == "completed"
    assert "Progress" not in first
    assert (second["Status"], second["Progress"]) == ("active", "40")
    assert third["Status"] == "active"
    assert "Progress" not in third


def test_a_failure_goes_deleting_then_deleted_with_its_message() -> None:
    """A failure shows deleting briefly, then deleted, both with the message."""
    message = FAILURES["converting"]
    timeline = (
        TimelineBuilder(TASK)
        .phase(T0, "pending")
        .phase(T0 + 200, "converting", 33)
        .failed(T0 + 1000, message)
        .build()
    )

    deleting = timeline.state_at(T0 + 1000)
    deleted = timeline.state_at(T0 + 1000 + DELETING_SECONDS)

    assert deleting is not None
    assert deleted is not None
    assert (deleting["Status"], deleting["StatusMessage"]) == ("deleting", message)
    assert (deleted["Status"], deleted["StatusMessage"]) == ("deleted", message)
    assert "Progress" not in deleted
    assert "ImageId" not in deleted
    assert deleted["SnapshotDetails"][0]["Status"] == "deleted"
    assert timeline.ended_at == T0 + 1000 + DELETING_SECONDS


def test_cancelling_cuts_the_timeline_at_that_moment() -> None:
    """cancelled(at) keeps the past, then deleting and deleted with the reason."""
    timeline = _simple()

    cancelled = timeline.cancelled(T0 + 400)

    assert cancelled.state_at(T0 + 399) == timeline.state_at(T0 + 399)
    deleting = cancelled.state_at(T0 + 400)
    deleted = cancelled.state_at(T0 + 400 + DELETING_SECONDS)
    assert deleting is not None
    assert deleted is not None
    assert (deleting["Status"], deleting["StatusMessage"]) == (
        "deleting",
        "User cancelled",
    )
    assert deleted["Status"] == "deleted"
    later = cancelled.state_at(T0 + 3600)
    assert later is not None
    assert later["Status"] == "deleted"


def test_an_ended_task_cannot_be_cancelled() -> None:
    """Cancelling a completed task is an error, not a rewrite of history."""
    with pytest.raises(ValueError, match="cannot be cancelled"):
        _simple().cancelled(T0 + 4000)


def test_ended_tasks_disappear_seven_days_after_they_end() -> None:
    """Visible until RETENTION after the end, gone from then on."""
    timeline = _simple()
    ended = T0 + 3600

    assert RETENTION == 7 * 24 * 3600
    assert timeline.state_at(ended + RETENTION - 1) is not None
    assert timeline.state_at(ended + RETENTION) is None


def test_an_active_task_never_expires() -> None:
    """A task stuck active stays visible however long it takes."""
    timeline = TimelineBuilder(TASK).phase(T0, "booting").build()

    assert timeline.state_at(T0 + 30 * RETENTION) is not None


@pytest.mark.parametrize(
    "wrong",
    [
        lambda b: b.phase(T0, "sleeping"),
        lambda b: b.phase(T0, "pending").phase(T0 - 1, "validating"),
        lambda b: b.phase(T0, "pending").completed(T0 + 1).phase(T0 + 2, "booting"),
        lambda b: b.failed(T0, "ClientError: no step before"),
        lambda b: b.phase(T0, "converting", 20, disk_progress=[1, 2]),
    ],
)
def test_the_builder_refuses_impossible_timelines(
    wrong: Callable[[TimelineBuilder], object],
) -> None:
    """Unknown phases, time going back, steps after the end, mismatched disks."""
    builder = TimelineBuilder(TASK)

    with pytest.raises(ValueError, match=r"phase|before|ended|disk"):
        wrong(builder)


@pytest.mark.parametrize("seed", range(8))
def test_generated_tasks_walk_the_phases_in_order(seed: int) -> None:
    """Phases never go back, Progress never falls, and it ends completed."""
    timeline = _generated(Plan(), seed)

    active = [step for step in timeline.steps if step.status == "active"]
    order = [PHASES.index(step.message or "") for step in active]
    progress = [step.progress or 0 for step in active]

    assert order == sorted(order)
    assert sorted(set(order)) == list(range(len(PHASES)))
    assert progress == sorted(progress)
    assert timeline.steps[-1].status == "completed"


def test_converting_creeps_and_the_disks_convert_one_after_another() -> None:
    """Many small Progress steps; a disk starts once the one before is done."""
    timeline = _generated(Plan())

    converting = [s for s in timeline.steps if s.message == "converting"]

    assert len({step.progress for step in converting}) >= 20
    for step in converting:
        first, second = step.disks
        if second.progress is not None and second.progress > 0:
            assert first.status == "completed"


def test_generated_durations_are_realistic() -> None:
    """A typical import takes between 30 minutes and 3 hours."""
    rng = random.Random(5)
    durations = []
    for _ in range(40):
        size = rng.uniform(4, 40) * GiB
        spec = TaskSpec(TASK, disks=(DiskSpec(size_bytes=size),))
        timeline = realistic(spec, T0, rng, Plan())
        durations.append((timeline.ended_at or 0) - T0)

    durations.sort()
    median = durations[len(durations) // 2]

    assert durations[0] >= 1800
    assert durations[-1] <= 3 * 3600
    assert 2400 <= median <= 2 * 3600


@pytest.mark.parametrize("phase", list(FAILURES))
def test_a_planned_failure_happens_in_its_phase(phase: str) -> None:
    """The last active step is in the failing phase; the message matches it."""
    timeline = _generated(Plan(outcome="fail", fail_in=phase))

    last_active = [s for s in timeline.steps if s.status == "active"][-1]

    assert last_active.message == phase
    assert [s.status for s in timeline.steps[-2:]] == ["deleting", "deleted"]
    assert timeline.steps[-1].message == FAILURES[phase]


def test_a_planned_cancellation_ends_deleted_at_its_time() -> None:
    """cancel_after seconds after creation the task is deleting, then deleted."""
    timeline = _generated(Plan(outcome="cancel", cancel_after=1200.0))

    deleting = timeline.state_at(T0 + 1200)
    deleted = timeline.state_at(T0 + 1200 + DELETING_SECONDS)

    assert deleting is not None
    assert deleted is not None
    assert deleting["Status"] == "deleting"
    assert (deleted["Status"], deleted["StatusMessage"]) == (
        "deleted",
        "User cancelled",
    )


def test_a_stall_freezes_the_task_and_says_where_and_when() -> None:
    """No step happens inside the stall window, which is as long as planned."""
    plan = Plan(stall_in="converting", stall_at=39, stall_for=4 * 3600.0)

    timeline = _generated(plan)

    (stall,) = timeline.stalls
    assert (stall.task_id, stall.message, stall.progress) == (TASK, "converting", 39)
    assert stall.until - stall.since >= 4 * 3600.0
    assert not [s for s in timeline.steps if stall.since < s.at < stall.until]
    frozen = timeline.state_at(stall.since + 3 * 3600.0)
    assert frozen is not None
    assert (frozen["StatusMessage"], frozen["Progress"]) == ("converting", "39")
    assert timeline.steps[-1].status == "completed"
