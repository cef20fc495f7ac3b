"""Prometheus metrics, built from the tracker's state at render time.

Nothing here holds long-lived labelled children for tasks: the collector
walks the state it is given, so a task that is gone is gone from /metrics.
Only what accumulates across polls (request and event counts) is kept in
counters, with every known label value created at zero up front.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.events import EVENT_NAMES, Event
from monitor.model import ACTIVE, PHASES, TASK_STATUSES, UNKNOWN
from monitor.tracker import RegionKey, Rules, TrackerState, estimate_eta

PREFIX = "ec2_import_"
FROM_LAST_POLL = " (as of the last poll)"
TASK_LABELS = ("account", "region", "task_id")
DISK_LABELS = (*TASK_LABELS, "device")
REGION_LABELS = ("account", "region")
OUTCOMES = ("success", "throttled", "client_error", "server_error", "network_error")
OTHER_PHASE = "other"


class MonitorCounters:
    """What accumulates across polls: API attempts, events, skipped polls."""

    def __init__(self, regions: Iterable[RegionKey], operations: Sequence[str]):
        self.requests: Counter[tuple[str, str, str, str]] = Counter()
        self.events: Counter[tuple[str, str, str]] = Counter()
        self.polls_skipped = 0
        self.add_regions(regions, operations)

    def add_regions(
        self, regions: Iterable[RegionKey], operations: Sequence[str]
    ) -> None:
        for account, region in regions:
            for operation in operations:
                for outcome in OUTCOMES:
                    self.requests[(account, region, operation, outcome)] += 0
            for name in EVENT_NAMES:
                self.events[(account, region, name)] += 0

    def record_request(
        self, account: str, region: str, operation: str, outcome: str
    ) -> None:
        self.requests[(account, region, operation, outcome)] += 1

    def record_events(self, events: Iterable[Event]) -> None:
        for event in events:
            self.events[(event.account, event.region, event.name)] += 1


@dataclass(frozen=True, slots=True)
class View:
    """Everything one render reads: immutable, so a render needs no lock."""

    state: TrackerState
    now: float
    rules: Rules


class TaskCollector(Collector):
    """Per-task, per-disk and per-region series from one :class:`View`."""

    def __init__(self, view: View) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from _task_families(self._view)
        yield from _region_families(self._view.state)


class CounterCollector(Collector):
    def __init__(self, counters: MonitorCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            PREFIX + "api_requests",
            "EC2 API HTTP attempts, retries included, by outcome.",
            labels=(*REGION_LABELS, "operation", "outcome"),
        )
        for request_labels, count in sorted(self._counters.requests.items()):
            requests.add_metric(request_labels, count)
        yield requests

        events = CounterMetricFamily(
            PREFIX + "events",
            "Events emitted, by event name.",
            labels=(*REGION_LABELS, "event"),
        )
        for event_labels, count in sorted(self._counters.events.items()):
            events.add_metric(event_labels, count)
        yield events

        skipped = CounterMetricFamily(
            PREFIX + "polls_skipped",
            "Scheduled polls skipped because the previous one was still running.",
        )
        skipped.add_metric((), self._counters.polls_skipped)
        yield skipped

        build = InfoMetricFamily(
            PREFIX + "monitor_build", "The running ec2-import-monitor version."
        )
        build.add_metric((), {"version": __version__})
        yield build


def render_both(view: View, counters: MonitorCounters) -> tuple[bytes, bytes]:
    """The exposition as text and gzipped, made once per poll, off the loop."""
    text = render(view, counters)
    return text, gzip.compress(text, compresslevel=6, mtime=0)


def render(view: View, counters: MonitorCounters) -> bytes:
    """The text exposition of everything; call it off the event loop."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskCollector(view))
    registry.register(CounterCollector(counters))
    return generate_latest(registry)


class StateSet:
    """A gauge with one series per possible state, 1 for the current one.

    prometheus_client's StateSetMetricFamily names the state label after the
    metric itself; dashboards and rules want ``status="active"``.
    """

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], state_label: str
    ) -> None:
        self.family = _gauge(name, help_text, (*labels, state_label))

    def add(
        self, labels: Sequence[str], states: Iterable[str], current: str | None
    ) -> None:
        for state in states:
            self.family.add_metric([*labels, state], float(state == current))


def _gauge(name: str, help_text: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text + FROM_LAST_POLL, labels=labels)


def _task_families(view: View) -> Iterator[Metric]:
    progress = _gauge("task_progress_ratio", "Import progress, 0 to 1", TASK_LABELS)
    status = StateSet("task_status", "Task status", TASK_LABELS, "status")
    phase = StateSet(
        "task_phase", "Phase (StatusMessage) of an active task", TASK_LABELS, "phase"
    )
    info = InfoMetricFamily(
        PREFIX + "task",
        "Attributes of an import task" + FROM_LAST_POLL,
        labels=TASK_LABELS,
    )
    first_seen = _gauge(
        "task_first_seen_timestamp_seconds",
        "When the monitor first saw the task",
        TASK_LABELS,
    )
    last_change = _gauge(
        "task_last_change_timestamp_seconds",
        "When the task last changed progress, phase, status or a disk",
        TASK_LABELS,
    )
    stalled = _gauge(
        "task_stalled", "1 when the task has not moved for its threshold", TASK_LABELS
    )
    threshold = _gauge(
        "task_stall_threshold_seconds",
        "How long the task may go without change before it counts as stalled",
        TASK_LABELS,
    )
    overdue = _gauge(
        "task_overdue",
        "1 when an active task is older than the maximum age",
        TASK_LABELS,
    )
    eta = _gauge(
        "task_eta_seconds",
        "Estimated seconds to completion, absent without a basis",
        TASK_LABELS,
    )
    disk_size = _gauge(
        "snapshot_disk_size_bytes", "Disk image size in bytes", DISK_LABELS
    )
    disk_progress = _gauge(
        "snapshot_progress_ratio", "Disk import progress, 0 to 1", DISK_LABELS
    )
    disk_status = StateSet("snapshot_status", "Disk status", DISK_LABELS, "status")
    disk_info = InfoMetricFamily(
        PREFIX + "snapshot",
        "Attributes of an imported disk" + FROM_LAST_POLL,
        labels=DISK_LABELS,
    )
    counts: Counter[tuple[str, str, str]] = Counter()

    for key, tracked in sorted(view.state.tasks.items()):
        if tracked.vanished:
            continue
        task = tracked.task
        labels = list(key)
        counts[(key.account, key.region, task.status)] += 1

        if task.progress is not None:
            progress.add_metric(labels, task.progress)
        statuses = (
            TASK_STATUSES if task.status != UNKNOWN else (*TASK_STATUSES, UNKNOWN)
        )
        status.add(labels, statuses, task.status)
        if task.status == ACTIVE:
            # Only the current phase: ten zeros per task would be most of
            # the exposition at scale, and rules select "== 1" anyway.
            current = task.phase if task.phase in PHASES else OTHER_PHASE
            phase.add(labels, (current,), current)
        info.add_metric(
            labels,
            {
                "description": task.description or "",
                "architecture": task.architecture or "",
                "platform": task.platform or "",
                "license_type": task.license_type or "",
                "boot_mode": task.boot_mode or "",
                "image_id": task.image_id or "",
                "status_message": task.status_message or "",
            },
        )
        first_seen.add_metric(labels, tracked.first_seen)
        last_change.add_metric(labels, tracked.last_change)
        if task.status == ACTIVE:
            stalled.add_metric(labels, float(tracked.stalled))
            threshold.add_metric(
                labels, view.rules.stall_threshold(task.phase, task.total_size_bytes)
            )
            overdue.add_metric(labels, float(tracked.overdue))
            estimate = estimate_eta(tracked, view.now)
            if estimate is not None:
                eta.add_metric(labels, estimate)

        for disk in task.disks:
            disk_labels = [*labels, disk.device]
            if disk.size_bytes is not None:
                disk_size.add_metric(disk_labels, disk.size_bytes)
            if disk.progress is not None:
                disk_progress.add_metric(disk_labels, disk.progress)
            # Like the phase, only the current status: three disks of four
            # states each would triple the task's own series.
            if disk.status is not None:
                disk_status.add(disk_labels, (disk.status,), disk.status)
            disk_info.add_metric(
                disk_labels,
                {
                    "device_name": disk.device_name or "",
                    "format": disk.format or "",
                    "snapshot_id": disk.snapshot_id or "",
                    "status_message": disk.status_message or "",
                    "description": disk.description or "",
                },
            )

    tasks = _gauge("tasks", "Tracked tasks by status", (*REGION_LABELS, "status"))
    for region_key in sorted(view.state.regions):
        for name in TASK_STATUSES:
            counts[(region_key.account, region_key.region, name)] += 0
    for count_labels, count in sorted(counts.items()):
        tasks.add_metric(count_labels, count)

    yield from (progress, status.family, phase.family, info, first_seen, last_change)
    yield from (stalled, threshold, overdue, eta, tasks)
    yield from (disk_size, disk_progress, disk_status.family, disk_info)


def _region_families(state: TrackerState) -> Iterator[Metric]:
    success = _gauge("poll_success", "1 when the last poll succeeded", REGION_LABELS)
    duration = _gauge(
        "poll_duration_seconds", "How long the last poll took", REGION_LABELS
    )
    last_success = _gauge(
        "poll_last_success_timestamp_seconds",
        "When a poll last succeeded",
        REGION_LABELS,
    )
    last_attempt = _gauge(
        "poll_timestamp_seconds", "When the last poll ran", REGION_LABELS
    )

    for key, health in sorted(state.regions.items()):
        labels = list(key)
        success.add_metric(labels, float(health.ok))
        duration.add_metric(labels, health.duration)
        last_attempt.add_metric(labels, health.last_attempt)
        if health.last_success is not None:
            last_success.add_metric(labels, health.last_success)

    yield from (success, duration, last_success, last_attempt)
