"""The monitor end to end: aioboto3 against the simulator over real HTTP."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.events import Event
from monitor.model import ImportTask
from monitor.simulator import DiskSpec, TaskSpec, TimelineBuilder
from tests.e2e import T0, Run, monitor_run, use_test_credentials

GIB = 2.0**30
OK_ID = "import-ami-0aaaaaaaaaaaaaaa1"
BAD_ID = "import-ami-0bbbbbbbbbbbbbbb2"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_credentials(monkeypatch)


def summary(events: list[Event]) -> list[tuple[object, ...]]:
    """Each event as (name, the values that matter for it)."""
    out: list[tuple[object, ...]] = []
    for event in events:
        f = event.fields
        if event.name in ("task_progressed", "snapshot_progressed") or event.name in (
            "task_phase_changed",
            "task_status_changed",
            "snapshot_status_changed",
        ):
            out.append((event.name, f.get("device"), f["before"], f["after"]))
        elif event.name == "task_discovered":
            out.append((event.name, f["phase"], f["progress"]))
        elif event.name == "task_completed":
            out.append((event.name, f["image_id"]))
        elif event.name == "task_failed":
            out.append((event.name, f["status_message"]))
        else:
            out.append((event.name,))
    return out


class TestHandWrittenTasks:
    """Two scripted imports, polled every five simulated minutes."""

    async def test_each_task_produces_exactly_its_sequence_of_events(self) -> None:
        async with monitor_run() as run:
            self.script(run)

            await run.poll_every(300, until=2 * 3600)

        tasks = run.by_task()
        assert summary(tasks[OK_ID]) == [
            ("task_discovered", "pending", 0.02),
            ("task_phase_changed", None, "pending", "validating"),
            ("task_progressed", None, 0.02, 0.05),
            ("task_phase_changed", None, "validating", "converting"),
            ("task_progressed", None, 0.05, 0.28),
            ("snapshot_progressed", "disk0", None, 0.4),
            ("task_progressed", None, 0.28, 0.39),
            ("snapshot_progressed", "disk0", 0.4, 0.8),
            ("task_status_changed", None, "active", "completed"),
            ("snapshot_status_changed", "disk0", "active", "completed"),
            ("task_completed", "ami-0123456789abcdef0"),
        ]
        assert summary(tasks[BAD_ID]) == [
            ("task_discovered", "pending", 0.02),
            ("task_phase_changed", None, "pending", "converting"),
            ("task_progressed", None, 0.02, 0.28),
            ("snapshot_progressed", "disk0", None, 0.22),
            ("task_status_changed", None, "active", "deleting"),
            ("snapshot_status_changed", "disk0", "active", "deleted"),
            ("task_status_changed", None, "deleting", "deleted"),
            ("task_failed", "ClientError: Unsupported kernel version 2.6.32"),
        ]
        assert set(tasks) == {OK_ID, BAD_ID}

    async def test_metrics_show_tasks_and_disks_from_the_last_poll(self) -> None:
        async with monitor_run() as run:
            self.script(run)

            await run.poll_every(300, until=1200)
            exposition = run.monitor.web.exposition.decode()

        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition)
            for s in family.samples
        }
        task = (("account", "e2e"), ("region", "us-east-1"), ("task_id", OK_ID))
        disk = (*task[:1], ("device", "disk0"), *task[1:])
        assert samples[("ec2_import_task_progress_ratio", task)] == 0.39
        assert samples[("ec2_import_snapshot_progress_ratio", disk)] == 0.8
        assert samples[("ec2_import_snapshot_disk_size_bytes", disk)] == 20 * GIB
        phase = tuple(sorted((*task, ("phase", "converting"))))
        assert samples[("ec2_import_task_phase", phase)] == 1.0
        region = (("account", "e2e"), ("region", "eu-west-1"))
        assert samples[("ec2_import_poll_success", region)] == 1.0

    @staticmethod
    def script(run: Run) -> None:
        disk = (DiskSpec(size_bytes=20 * GIB),)
        run.sim.add_task(
            run.account_id,
            "us-east-1",
            TimelineBuilder(TaskSpec(OK_ID, disks=disk))
            .phase(T0, "pending")
            .phase(T0 + 300, "validating")
            .phase(T0 + 600, "converting", 28, disk_progress=[40])
            .phase(T0 + 1200, "converting", 39, disk_progress=[80])
            .completed(T0 + 1800, image_id="ami-0123456789abcdef0"),
        )
        run.sim.add_task(
            run.account_id,
            "us-east-1",
            TimelineBuilder(TaskSpec(BAD_ID, disks=disk))
            .phase(T0, "pending")
            .phase(T0 + 300, "converting", 28)
            .failed(T0 + 850, "ClientError: Unsupported kernel version 2.6.32"),
        )


class TestMixedScenario:
    """Hours of the mixed scenario: failures, cancels, late starters."""

    async def test_every_task_is_reported_consistently_with_the_simulator(
        self,
    ) -> None:
        async with monitor_run("mixed", tasks=12) as run:
            await run.poll_every(120, until=8 * 3600)
            truth = {
                region: {
                    t.task_id: t
                    for t in map(
                        ImportTask.from_api, run.sim.tasks_of(run.account_id, region)
                    )
                    if t is not None
                }
                for region in ("us-east-1", "eu-west-1")
            }

        seen = 0
        for task_id, events in run.by_task().items():
            assert task_id is not None, [e.name for e in events]
            region = events[0].region
            final = truth[region][task_id]
            names = [event.name for event in events]
            seen += 1

            assert names[0] == "task_discovered"
            assert names.count("task_discovered") == 1
            endings = [n for n in names if n in ("task_completed", "task_failed")]
            if final.status == "completed":
                assert endings == ["task_completed"]
                done = next(e for e in events if e.name == "task_completed")
                assert done.fields["image_id"] == final.image_id
            elif final.status == "deleted":
                assert endings == ["task_failed"]
            else:
                assert endings == []
            if endings:
                assert names[-1] == endings[0], "nothing after the end"
            for event in events:
                if event.name == "task_progressed":
                    assert event.fields["after"] > (event.fields["before"] or 0)

        # Tasks that had already ended before the first poll were never in
        # the active listing, so the monitor rightly never heard of them.
        alive = [
            timeline.task_id
            for region in ("us-east-1", "eu-west-1")
            for timeline in run.sim.timelines_of(run.account_id, region)
            if timeline.created_at <= T0 + 8 * 3600
            and (timeline.ended_at is None or timeline.ended_at > T0)
        ]
        assert seen == len(alive)
