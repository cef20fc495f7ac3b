"""The tracker turns successive snapshots into events; these are its rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from monitor.events import Event
from monitor.model import ImportTask
from monitor.tracker import (
    RegionKey,
    RegionPoll,
    Rules,
    TaskKey,
    TrackerState,
    estimate_eta,
    observe,
)

ACCOUNT = "prod"
REGION = "eu-west-1"
T0 = 1_800_000_000.0
RULES = Rules(
    stall_threshold=lambda phase, size: 7200.0 if phase == "converting" else 1800.0,
    max_age=12 * 3600.0,
    keep_ended=24 * 3600.0,
)


def api_task(
    task_id: str = "import-ami-0123456789abcdef0",
    status: str = "active",
    message: str | None = "converting",
    progress: str | None = "28",
    disks: Sequence[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    item: dict[str, Any] = {"ImportTaskId": task_id, "Status": status}
    if message is not None:
        item["StatusMessage"] = message
    if progress is not None:
        item["Progress"] = progress
    item["SnapshotDetails"] = list(disks)
    item.update(extra)
    return item


def task(**kwargs: Any) -> ImportTask:
    parsed = ImportTask.from_api(api_task(**kwargs))
    assert parsed is not None
    return parsed


def listing(
    *tasks: ImportTask,
    looked_up: Sequence[str] = (),
    resolved: Sequence[ImportTask] = (),
) -> RegionPoll:
    return RegionPoll(
        ACCOUNT,
        REGION,
        ok=True,
        active=tasks,
        resolved=tuple(resolved),
        looked_up=frozenset(looked_up),
    )


def failed_poll(
    error: str = "RequestLimitExceeded: Request limit exceeded.",
) -> RegionPoll:
    return RegionPoll(ACCOUNT, REGION, ok=False, error=error)


def run(
    *cycles: tuple[float, RegionPoll], state: TrackerState | None = None
) -> tuple[TrackerState, list[list[Event]]]:
    """Feed polls at the given offsets from T0; return the state and events."""
    state = state or TrackerState()
    per_cycle = []
    for offset, poll in cycles:
        state, events = observe(state, [poll], T0 + offset, RULES)
        per_cycle.append(events)
    return state, per_cycle


def names(events: Sequence[Event]) -> list[str]:
    return [event.name for event in events]


class TestDiscovery:
    def test_a_new_task_is_discovered_once(self) -> None:
        """First sight is one task_discovered; an unchanged repeat is silent."""
        first = task()

        _, (cycle1, cycle2) = run((0, listing(first)), (60, listing(first)))

        assert names(cycle1) == ["task_discovered"]
        assert cycle1[0].fields["progress"] == pytest.approx(0.28)
        assert cycle1[0].task_id == first.task_id
        assert cycle2 == []

    def test_a_task_listed_twice_in_one_poll_is_one_task(self) -> None:
        """Duplicates across pages collapse to the copy furthest along."""
        early, late = task(progress="20"), task(progress="35")

        state, (cycle,) = run((0, listing(late, early)))

        assert names(cycle) == ["task_discovered"]
        tracked = state.tasks[TaskKey(ACCOUNT, REGION, early.task_id)]
        assert tracked.task.progress == pytest.approx(0.35)


class TestChanges:
    def test_progress_up_is_reported_with_before_and_after(self) -> None:
        _, (_, cycle) = run(
            (0, listing(task(progress="28"))), (60, listing(task(progress="39")))
        )

        assert names(cycle) == ["task_progressed"]
        assert cycle[0].fields["before"] == pytest.approx(0.28)
        assert cycle[0].fields["after"] == pytest.approx(0.39)

    def test_progress_going_down_is_never_reported_as_progress(self) -> None:
        _, (_, cycle) = run(
            (0, listing(task(progress="39"))), (60, listing(task(progress="20")))
        )

        assert "task_progressed" not in names(cycle)

    def test_non_numeric_progress_is_no_progress_and_no_crash(self) -> None:
        _, (_, cycle) = run(
            (0, listing(task(progress="28"))), (60, listing(task(progress="n/a")))
        )

        assert cycle == []

    def test_a_phase_change_is_reported(self) -> None:
        _, (_, cycle) = run(
            (0, listing(task(message="validating", progress="5"))),
            (60, listing(task(message="converting", progress="5"))),
        )

        assert names(cycle) == ["task_phase_changed"]
        assert (cycle[0].fields["before"], cycle[0].fields["after"]) == (
            "validating",
            "converting",
        )

    def test_disk_status_and_progress_changes_are_reported_per_disk(self) -> None:
        pending = {"DiskImageSize": 0.0, "Status": "active", "Format": "VMDK"}
        moving = {**pending, "DiskImageSize": 705638400.0, "Progress": "40"}
        done = {**moving, "Status": "completed", "Progress": "100"}

        _, (_, second, third) = run(
            (0, listing(task(disks=[pending, pending]))),
            (60, listing(task(disks=[moving, pending]))),
            (120, listing(task(disks=[done, pending]))),
        )

        assert names(second) == ["snapshot_progressed"]
        assert second[0].fields["device"] == "disk0"
        assert names(third) == ["snapshot_status_changed", "snapshot_progressed"]
        assert (third[0].fields["before"], third[0].fields["after"]) == (
            "active",
            "completed",
        )


class TestEndings:
    def test_a_task_that_left_the_listing_is_resolved_by_id_as_completed(self) -> None:
        """Rule 2: the by-ID lookup tells how it ended; completion is reported once."""
        active = task()
        completed = task(
            status="completed", message=None, progress=None, ImageId="ami-1"
        )

        state, (_, cycle, later) = run(
            (0, listing(active)),
            (60, listing(looked_up=[active.task_id], resolved=[completed])),
            (120, listing()),
        )

        assert names(cycle) == ["task_status_changed", "task_completed"]
        assert cycle[1].fields["image_id"] == "ami-1"
        assert later == []
        assert state.open_task_ids(ACCOUNT, REGION) == frozenset()

    def test_a_failure_carries_its_status_message(self) -> None:
        active = task(message="booting", progress="60")
        failed = task(
            status="deleted",
            message="FirstBootFailure: the instance failed to boot",
            progress=None,
        )

        _, (_, cycle) = run(
            (0, listing(active)),
            (60, listing(looked_up=[active.task_id], resolved=[failed])),
        )

        assert names(cycle) == ["task_status_changed", "task_failed"]
        assert cycle[1].fields["status_message"].startswith("FirstBootFailure")
        assert cycle[1].fields["last_phase"] == "booting"

    def test_a_cancel_passes_through_deleting_and_fails_once(self) -> None:
        active = task()
        deleting = task(status="deleting", message="User cancelled")
        deleted = task(status="deleted", message="User cancelled", progress=None)

        _, (_, second, third) = run(
            (0, listing(active)),
            (60, listing(looked_up=[active.task_id], resolved=[deleting])),
            (120, listing(looked_up=[active.task_id], resolved=[deleted])),
        )

        assert names(second) == ["task_status_changed"]
        assert names(third) == ["task_status_changed", "task_failed"]
        assert third[1].fields["status_message"] == "User cancelled"

    def test_a_task_the_lookup_cannot_find_has_vanished(self) -> None:
        active = task()

        state, (_, cycle) = run(
            (0, listing(active)), (60, listing(looked_up=[active.task_id]))
        )

        assert names(cycle) == ["task_vanished"]
        assert state.open_task_ids(ACCOUNT, REGION) == frozenset()

    def test_a_vanished_task_listed_again_is_not_reported_again(self) -> None:
        """A stale page must not bring a vanished task back as a new one."""
        active = task()

        _, (_, _, cycle) = run(
            (0, listing(active)),
            (60, listing(looked_up=[active.task_id])),
            (120, listing(active)),
        )

        assert cycle == []

    def test_a_task_missing_from_the_listing_but_not_looked_up_is_kept(self) -> None:
        """Without a lookup there is no evidence the task is gone."""
        active = task()

        state, (_, cycle) = run((0, listing(active)), (60, listing()))

        assert cycle == []
        assert state.open_task_ids(ACCOUNT, REGION) == {active.task_id}

    def test_an_ended_task_is_forgotten_after_the_retention_time(self) -> None:
        active = task()
        completed = task(status="completed", message=None, progress=None)

        state, _ = run(
            (0, listing(active)),
            (60, listing(looked_up=[active.task_id], resolved=[completed])),
            (60 + RULES.keep_ended - 1, listing()),
        )
        assert len(state.tasks) == 1

        state, _ = run((60 + RULES.keep_ended, listing()), state=state)
        assert state.tasks == {}

    def test_a_stale_active_copy_never_revives_an_ended_task(self) -> None:
        active = task()
        completed = task(status="completed", message=None, progress=None)

        _, (_, _, cycle) = run(
            (0, listing(active)),
            (60, listing(looked_up=[active.task_id], resolved=[completed])),
            (120, listing(active)),
        )

        assert cycle == []


class TestFailedPolls:
    def test_a_failed_poll_brings_no_task_events_and_keeps_the_state(self) -> None:
        """Rule 1: a failed region yields poll_failed once and nothing else."""
        active = task()

        state, (_, second, third) = run(
            (0, listing(active)), (60, failed_poll()), (120, failed_poll())
        )

        assert names(second) == ["poll_failed"]
        assert "RequestLimitExceeded" in second[0].fields["error"]
        assert third == []
        assert state.open_task_ids(ACCOUNT, REGION) == {active.task_id}
        assert not state.regions[RegionKey(ACCOUNT, REGION)].ok

    def test_recovery_is_reported_and_catches_up_on_what_happened(self) -> None:
        active = task()
        completed = task(status="completed", message=None, progress=None)

        _, (_, _, cycle) = run(
            (0, listing(active)),
            (60, failed_poll()),
            (180, listing(looked_up=[active.task_id], resolved=[completed])),
        )

        assert names(cycle) == [
            "poll_recovered",
            "task_status_changed",
            "task_completed",
        ]
        assert cycle[0].fields["failed_for_seconds"] == 120

    def test_no_stall_is_declared_while_the_region_cannot_be_seen(self) -> None:
        _, (_, cycle) = run(
            (0, listing(task(message="validating"))), (3 * 3600, failed_poll())
        )

        assert names(cycle) == ["poll_failed"]


class TestStalls:
    def test_a_task_without_change_past_its_threshold_stalls_once(self) -> None:
        frozen = task(message="validating", progress="5")

        _, (_, before, at, after) = run(
            (0, listing(frozen)),
            (1799, listing(frozen)),
            (1800, listing(frozen)),
            (1860, listing(frozen)),
        )

        assert before == []
        assert names(at) == ["task_stalled"]
        assert at[0].fields["phase"] == "validating"
        assert at[0].fields["threshold_seconds"] == 1800
        assert after == []

    def test_the_threshold_depends_on_the_phase(self) -> None:
        """Converting legitimately takes long: 30 min without change is fine."""
        frozen = task(message="converting")

        _, (_, cycle) = run((0, listing(frozen)), (3600, listing(frozen)))

        assert cycle == []

    def test_a_stalled_task_that_moves_again_has_resumed(self) -> None:
        frozen = task(message="validating", progress="5")
        moved = task(message="validating", progress="6")

        state, (_, stalled, resumed) = run(
            (0, listing(frozen)), (1800, listing(frozen)), (2400, listing(moved))
        )

        assert names(stalled) == ["task_stalled"]
        assert names(resumed) == ["task_progressed", "task_resumed"]
        assert resumed[1].fields["stalled_for_seconds"] == 2400
        assert not state.tasks[TaskKey(ACCOUNT, REGION, frozen.task_id)].stalled

    def test_a_task_older_than_the_maximum_age_is_overdue_once(self) -> None:
        def at(hour: int) -> tuple[float, RegionPoll]:
            return hour * 3600.0, listing(
                task(message="converting", progress=str(hour))
            )

        _, cycles = run(*(at(hour) for hour in range(14)))

        overdue = [e for cycle in cycles for e in cycle if e.name == "task_overdue"]
        assert len(overdue) == 1
        assert overdue[0].time == T0 + 12 * 3600


class TestEta:
    def test_eta_uses_the_average_rate_over_steps_and_plateaus(self) -> None:
        """20 % gained over 40 minutes, plateaus included: 80 % left is 160 min."""
        state, _ = run(
            (0, listing(task(progress="10"))),
            (600, listing(task(progress="25"))),
            (2400, listing(task(progress="30"))),
        )
        tracked = state.tasks[TaskKey(ACCOUNT, REGION, task().task_id)]

        eta = estimate_eta(tracked, T0 + 2400)

        assert eta == pytest.approx(0.70 * 2400 / 0.20)

    def test_there_is_no_eta_without_a_basis(self) -> None:
        state, _ = run((0, listing(task(progress="10"))))
        tracked = state.tasks[TaskKey(ACCOUNT, REGION, task().task_id)]

        assert estimate_eta(tracked, T0 + 3600) is None
