"""Properties of parsing and tracking over generated input (hypothesis).

DESIGN.md rule 4: no input from the API crashes the daemon. Rule 1: a region
whose poll failed produces no task events. And whatever the API says, the
events the tracker derives never contradict the snapshots they came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from monitor import events as ev
from monitor.events import Event
from monitor.metrics import MonitorCounters, View, render
from monitor.model import PHASES, TASK_STATUSES, UNKNOWN, ImportTask
from monitor.tracker import RegionKey, RegionPoll, Rules, TaskKey, TrackerState, observe

T0 = 1_800_000_000.0
ACCOUNT = "prod"
REGIONS = ("us-east-1", "eu-west-1")
TASK_IDS = tuple(f"import-ami-0{n:016x}" for n in range(1, 5))
TERMINAL = frozenset({ev.TASK_COMPLETED, ev.TASK_FAILED, ev.TASK_VANISHED})

#: Ended tasks are kept for the whole generated run, so "at most one end per
#: task" is not confused by a task forgotten and then seen again.
RULES = Rules(
    stall_threshold=lambda phase, size: 600.0,
    max_age=3600.0,
    keep_ended=10 * 365 * 86400.0,
)

#: Few examples, no deadline: the module must stay well under 20 seconds on a
#: loaded machine, and a slow example is not a failure.
FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Strategies: from plausible API values to anything JSON-like.

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
progress_values = (
    st.integers(-50, 150).map(str)
    | st.sampled_from(["28", "", "n/a", "nan", "inf", "-inf", "1e400", "99.5%", " 7 "])
    | st.floats()
    | junk
)
status_values = st.sampled_from([*TASK_STATUSES, "ACTIVE", "failed", ""]) | junk
message_values = st.sampled_from([*PHASES, "ClientError: no", "User cancelled"]) | junk
disk_dicts = st.fixed_dictionaries(
    {},
    optional={
        "DeviceName": st.text(max_size=8) | junk,
        "DiskImageSize": st.floats() | st.integers() | junk,
        "Format": st.sampled_from(["VMDK", "RAW"]) | junk,
        "Progress": progress_values,
        "SnapshotId": st.text(max_size=8) | junk,
        "Status": status_values,
        "StatusMessage": message_values,
        "UserBucket": st.fixed_dictionaries({}, optional={"S3Bucket": junk}) | junk,
    },
)
api_dicts = st.fixed_dictionaries(
    {},
    optional={
        "ImportTaskId": st.sampled_from(TASK_IDS) | junk,
        "Status": status_values,
        "StatusMessage": message_values,
        "Progress": progress_values,
        "ImageId": st.text(max_size=8) | junk,
        "Description": st.text(max_size=20) | junk,
        "Encrypted": st.booleans() | st.sampled_from(["true", "False", "yes"]) | junk,
        "Tags": st.lists(
            st.fixed_dictionaries({}, optional={"Key": junk, "Value": junk}) | junk,
            max_size=3,
        )
        | junk,
        "SnapshotDetails": st.lists(disk_dicts | junk, max_size=3) | junk,
        "Unexpected": junk,
    },
)


def parsed(items: Sequence[Any]) -> tuple[ImportTask, ...]:
    tasks = (ImportTask.from_api(item) for item in items)
    return tuple(task for task in tasks if task is not None)


class TestArbitraryApiInput:
    """Whatever the API sends, parsing and tracking carry on."""

    @FAST
    @given(item=api_dicts | junk)
    def test_from_api_never_raises_and_keeps_values_in_range(self, item: Any) -> None:
        """A parsed task has a known status and ratios within 0..1."""
        task = ImportTask.from_api(item)

        if task is not None:
            assert task.task_id
            assert task.status in (*TASK_STATUSES, UNKNOWN)
            assert task.progress is None or 0.0 <= task.progress <= 1.0
            for disk in task.disks:
                assert disk.progress is None or 0.0 <= disk.progress <= 1.0
                assert disk.size_bytes is None or disk.size_bytes >= 0.0

    @FAST
    @given(
        cycles=st.lists(
            st.tuples(
                st.booleans(),
                st.lists(api_dicts, max_size=6),
                st.lists(api_dicts, max_size=3),
                st.sets(st.sampled_from(TASK_IDS)),
            ),
            min_size=1,
            max_size=5,
        )
    )
    def test_observe_and_the_exposition_never_raise(
        self, cycles: list[tuple[bool, list[Any], list[Any], set[str]]]
    ) -> None:
        """Duplicates, odd fields and lookups of anything fold without error."""
        state = TrackerState()
        counters = MonitorCounters([RegionKey(ACCOUNT, REGIONS[0])], ["Describe"])

        for number, (ok, active, resolved, looked_up) in enumerate(cycles):
            poll = RegionPoll(
                ACCOUNT,
                REGIONS[0],
                ok=ok,
                active=parsed(active),
                resolved=parsed(resolved),
                looked_up=frozenset(looked_up),
                error=None if ok else "InternalError: try again",
            )
            now = T0 + 300.0 * number
            state, events = observe(state, [poll], now, RULES)
            counters.record_events(events)
            exposition = render(View(state, now, RULES), counters).decode()

            assert list(text_string_to_metric_families(exposition))


# The state sequence: per cycle and region, a poll that worked or failed.


@dataclass(frozen=True)
class Snapshot:
    """What one region's poll brought back in one cycle."""

    ok: bool
    active: tuple[ImportTask, ...]
    resolved: tuple[ImportTask, ...]
    looked_up: frozenset[str]

    def entries(self, task_id: str | None) -> list[ImportTask]:
        return [t for t in (*self.active, *self.resolved) if t.task_id == task_id]


def task_dict(
    task_id: str, status: str, phase: str | None, progress: int | None
) -> dict[str, Any]:
    item: dict[str, Any] = {"ImportTaskId": task_id, "Status": status}
    if phase is not None:
        item["StatusMessage"] = phase
    if progress is not None:
        item["Progress"] = str(progress)
    return item


well_formed = st.builds(
    task_dict,
    st.sampled_from(TASK_IDS),
    st.sampled_from([*TASK_STATUSES, "weird"]),
    st.none() | st.sampled_from(PHASES),
    st.none() | st.integers(0, 100),
)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    ok = draw(st.sampled_from([True, True, True, False]))
    return Snapshot(
        ok=ok,
        active=parsed(draw(st.lists(well_formed, max_size=5))),
        resolved=parsed(draw(st.lists(well_formed, max_size=2))),
        looked_up=frozenset(draw(st.sets(st.sampled_from(TASK_IDS)))),
    )


cycle_lists = st.lists(
    st.tuples(st.floats(1.0, 900.0), st.tuples(snapshots(), snapshots())),
    min_size=1,
    max_size=12,
)


#: The state before a cycle, each region's snapshot, and the events it made.
Cycle = tuple[TrackerState, Mapping[str, Snapshot], list[Event]]


def run_cycles(cycles: Sequence[tuple[float, tuple[Snapshot, ...]]]) -> list[Cycle]:
    """Feed every cycle; return (state before, snapshots, events) for each.

    Nothing about the world is assumed: a task a lookup did not find may be
    listed again later, and must not be reported a second time.
    """
    state = TrackerState()
    now = T0
    history: list[Cycle] = []
    for step, raw in cycles:
        now += step
        by_region = dict(zip(REGIONS, raw, strict=True))
        polls = [
            RegionPoll(
                ACCOUNT,
                region,
                ok=snap.ok,
                active=snap.active if snap.ok else (),
                resolved=snap.resolved if snap.ok else (),
                looked_up=snap.looked_up if snap.ok else frozenset(),
                error=None if snap.ok else "RequestLimitExceeded: slow down",
            )
            for region, snap in by_region.items()
        ]
        before = state
        state, events = observe(state, polls, now, RULES)
        history.append((before, by_region, events))
    return history


class TestEventsFollowTheSnapshots:
    """Over random snapshot sequences, events never contradict the snapshots."""

    @FAST
    @given(cycles=cycle_lists)
    def test_no_task_event_from_a_region_whose_poll_failed(
        self, cycles: list[tuple[float, tuple[Snapshot, ...]]]
    ) -> None:
        """A failed poll yields at most poll_failed for its region, nothing else."""
        for _, snaps, events in run_cycles(cycles):
            for event in events:
                if not snaps[event.region].ok:
                    assert event.name == ev.POLL_FAILED, event
                    assert event.task_id is None

    @FAST
    @given(cycles=cycle_lists)
    def test_endings_and_changes_match_the_poll_they_came_from(
        self, cycles: list[tuple[float, tuple[Snapshot, ...]]]
    ) -> None:
        """Completed, failed, vanished and progress name what the poll held."""
        for before, snaps, events in run_cycles(cycles):
            for event in events:
                snap = snaps[event.region]
                seen = snap.entries(event.task_id)
                statuses = {task.status for task in seen}
                if event.name == ev.TASK_COMPLETED:
                    assert "completed" in statuses, event
                elif event.name == ev.TASK_FAILED:
                    assert "deleted" in statuses, event
                elif event.name == ev.TASK_VANISHED:
                    assert event.task_id in snap.looked_up
                    assert seen == [], event
                elif event.name == ev.TASK_PROGRESSED:
                    after = event.fields["after"]
                    old = event.fields["before"]
                    assert old is None or after > old, event
                    assert after in {task.progress for task in seen}, event
                elif event.name == ev.TASK_STATUS_CHANGED:
                    assert event.fields["after"] in statuses, event
                    key = TaskKey(ACCOUNT, event.region, event.task_id or "")
                    assert before.tasks[key].task.status == event.fields["before"]

    @FAST
    @given(cycles=cycle_lists)
    def test_each_task_ends_at_most_once(
        self, cycles: list[tuple[float, tuple[Snapshot, ...]]]
    ) -> None:
        """Completed, failed or vanished: one of them, once, per task."""
        ends: dict[tuple[str, str | None], list[str]] = {}

        for _, _, events in run_cycles(cycles):
            for event in events:
                if event.name in TERMINAL:
                    ends.setdefault((event.region, event.task_id), []).append(
                        event.name
                    )

        assert all(len(names) == 1 for names in ends.values()), ends

    @FAST
    @given(cycles=cycle_lists)
    def test_a_task_is_discovered_only_when_not_already_tracked(
        self, cycles: list[tuple[float, tuple[Snapshot, ...]]]
    ) -> None:
        """task_discovered at most once per task while the tracker holds it."""
        for before, snaps, events in run_cycles(cycles):
            discovered = [e for e in events if e.name == ev.TASK_DISCOVERED]
            keys = [TaskKey(ACCOUNT, e.region, e.task_id or "") for e in discovered]

            assert len(keys) == len(set(keys))
            for event, key in zip(discovered, keys, strict=True):
                assert key not in before.tasks, event
                assert snaps[event.region].entries(event.task_id), event
