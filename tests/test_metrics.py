"""The exposition is built from the tracker's state at render time."""

from __future__ import annotations

import subprocess
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import MonitorCounters, View, render
from monitor.model import ImportTask
from monitor.tracker import RegionKey, RegionPoll, Rules, TrackerState, observe

T0 = 1_800_000_000.0
RULES = Rules(
    stall_threshold=lambda phase, size: 1800.0, max_age=43200.0, keep_ended=86400.0
)
REGION = RegionKey("prod", "eu-west-1")


def state_with(*entries: dict[str, Any]) -> TrackerState:
    tasks = tuple(t for t in map(ImportTask.from_api, entries) if t is not None)
    state, _ = observe(
        TrackerState(), [RegionPoll(*REGION, ok=True, active=tasks)], T0, RULES
    )
    return state


def samples(exposition: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


ACTIVE_TASK: dict[str, Any] = {
    "ImportTaskId": "import-ami-1",
    "Status": "active",
    "StatusMessage": "converting",
    "Progress": "28",
    "Description": 'web01 "quoted" \\ back\nslash',
    "SnapshotDetails": [
        {
            "DiskImageSize": 705638400.0,
            "Status": "active",
            "Progress": "40",
            "Format": "VMDK",
        }
    ],
}


class TestTaskSeries:
    def test_progress_status_phase_and_disks_are_exported(self) -> None:
        state = state_with(ACTIVE_TASK)

        found = samples(
            render(View(state, T0, RULES), MonitorCounters([REGION], ["op"]))
        )

        task = {"account": "prod", "region": "eu-west-1", "task_id": "import-ami-1"}
        disk = {**task, "device": "disk0"}
        assert found[("ec2_import_task_progress_ratio", labels(**task))] == 0.28
        assert found[("ec2_import_task_status", labels(**task, status="active"))] == 1
        assert (
            found[("ec2_import_task_status", labels(**task, status="completed"))] == 0
        )
        assert found[("ec2_import_task_phase", labels(**task, phase="converting"))] == 1
        assert found[("ec2_import_task_stalled", labels(**task))] == 0
        assert (
            found[("ec2_import_snapshot_disk_size_bytes", labels(**disk))]
            == 705638400.0
        )
        assert found[("ec2_import_snapshot_progress_ratio", labels(**disk))] == 0.40
        assert (
            found[("ec2_import_snapshot_status", labels(**disk, status="active"))] == 1
        )
        assert (
            found[
                (
                    "ec2_import_tasks",
                    labels(account="prod", region="eu-west-1", status="active"),
                )
            ]
            == 1
        )
        assert (
            found[
                ("ec2_import_poll_success", labels(account="prod", region="eu-west-1"))
            ]
            == 1
        )

    def test_free_text_appears_only_in_info_and_survives_escaping(self) -> None:
        state = state_with(ACTIVE_TASK)

        found = samples(render(View(state, T0, RULES), MonitorCounters([], [])))

        info = [key for key in found if key[0] == "ec2_import_task_info"]
        (only,) = info
        assert ("description", ACTIVE_TASK["Description"]) in only[1]

    def test_a_task_gone_from_the_state_is_gone_from_metrics(self) -> None:
        state = state_with(ACTIVE_TASK)
        empty = TrackerState(tasks={}, regions=state.regions)

        exposition = render(View(empty, T0, RULES), MonitorCounters([], [])).decode()

        assert "import-ami-1" not in exposition

    def test_counters_start_at_zero_for_every_known_label(self) -> None:
        counters = MonitorCounters([REGION], ["DescribeImportImageTasks"])

        found = samples(render(View(TrackerState(), T0, RULES), counters))

        throttled = labels(
            account="prod",
            region="eu-west-1",
            operation="DescribeImportImageTasks",
            outcome="throttled",
        )
        assert found[("ec2_import_api_requests_total", throttled)] == 0
        assert (
            found[
                (
                    "ec2_import_events_total",
                    labels(account="prod", region="eu-west-1", event="task_failed"),
                )
            ]
            == 0
        )


def test_promtool_finds_nothing_to_lint(promtool: str) -> None:
    """`promtool check metrics` reports no problem with the exposition."""
    state = state_with(ACTIVE_TASK)
    exposition = render(
        View(state, T0, RULES), MonitorCounters([REGION], ["DescribeImportImageTasks"])
    )

    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""
