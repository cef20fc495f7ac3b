"""The real AWS CLI, as a subprocess, against the simulator.

The CLI vendors its own botocore, newer than the daemon's, so these tests
check the wire format against a second, independent client.
"""

from __future__ import annotations

import pytest

from monitor.simulator import DiskSpec, Simulator, TaskSpec, TimelineBuilder

from .conftest import ACCOUNT, REGION, START, AwsCliError, AwsRun

pytestmark = pytest.mark.awscli


def _fill(sim: Simulator) -> dict[str, list[str]]:
    """Seven tasks: four active (one with every field), three ended."""
    ids: dict[str, list[str]] = {"active": [], "ended": []}
    for number in range(1, 8):
        task = f"import-ami-{number:017x}"
        spec = TaskSpec(
            task,
            disks=(DiskSpec(size_bytes=705638400.0, device_name="/dev/sda1"),),
            description=f"vm {number}",
            hypervisor="xen",
            encrypted=number == 1,
            kms_key_id="alias/imports" if number == 1 else None,
            boot_mode="uefi",
            usage_operation="RunInstances",
            tags=(("Name", f"vm-{number}"),),
            license_arns=("arn:aws:license-manager:eu-west-1:1:lc/1",),
        )
        builder = TimelineBuilder(spec).phase(START - 900 + number, "pending")
        if number <= 4:
            builder.phase(START - 300, "converting", 20 + number)
            ids["active"].append(task)
        else:
            builder.phase(START - 300, "booted").completed(START - 60)
            ids["ended"].append(task)
        sim.add_task(ACCOUNT, REGION, builder)
    return ids


async def test_the_cli_lists_what_the_simulator_holds(
    sim: Simulator, aws: AwsRun
) -> None:
    """describe-import-image-tasks prints exactly the simulator's tasks."""
    _fill(sim)

    output = await aws("ec2", "describe-import-image-tasks")

    assert output["ImportImageTasks"] == sim.tasks_of(ACCOUNT, REGION)
    first = output["ImportImageTasks"][0]
    assert first["Encrypted"] is True
    assert first["SnapshotDetails"][0]["DiskImageSize"] == 705638400.0


async def test_the_cli_pages_with_page_size(sim: Simulator, aws: AwsRun) -> None:
    """--page-size 2 over seven tasks takes four requests and joins them."""
    _fill(sim)

    output = await aws("ec2", "describe-import-image-tasks", "--page-size", "2")

    assert output["ImportImageTasks"] == sim.tasks_of(ACCOUNT, REGION)
    pages = [r for r in sim.requests if r.action == "DescribeImportImageTasks"]
    assert len(pages) == 4
    assert all(r.params["MaxResults"] == "2" for r in pages)
    assert [("NextToken" in r.params) for r in pages] == [False, True, True, True]


async def test_the_cli_filters_by_task_state(sim: Simulator, aws: AwsRun) -> None:
    """--filters Name=task-state,Values=active lists only the active tasks."""
    ids = _fill(sim)

    active = await aws(
        "ec2",
        "describe-import-image-tasks",
        "--filters",
        "Name=task-state,Values=active",
    )
    ended = await aws(
        "ec2",
        "describe-import-image-tasks",
        "--filters",
        "Name=task-state,Values=completed,deleted",
        "--import-task-ids",
        ids["ended"][0],
        ids["active"][0],
    )

    assert [t["ImportTaskId"] for t in active["ImportImageTasks"]] == ids["active"]
    assert [t["ImportTaskId"] for t in ended["ImportImageTasks"]] == ids["ended"][:1]


async def test_the_cli_imports_and_cancels(sim: Simulator, aws: AwsRun) -> None:
    """import-image creates a task; cancel-import-task sends it to deleting."""
    started = await aws(
        "ec2",
        "import-image",
        "--description",
        "db-02 from the CLI",
        "--disk-containers",
        "Format=vmdk,UserBucket={S3Bucket=vm-exports,S3Key=db-02.vmdk}",
        "Format=raw,Url=s3://vm-exports/db-02-data.raw",
    )
    task = started["ImportTaskId"]
    cancelled = await aws("ec2", "cancel-import-task", "--import-task-id", task)

    (held,) = sim.tasks_of(ACCOUNT, REGION)
    assert (started["Status"], started["StatusMessage"]) == ("active", "pending")
    assert held["ImportTaskId"] == task
    assert held["Description"] == "db-02 from the CLI"
    assert [d.get("Format") for d in held["SnapshotDetails"]] == ["vmdk", "raw"]
    assert cancelled == {
        "ImportTaskId": task,
        "PreviousState": "active",
        "State": "deleting",
    }
    assert (held["Status"], held["StatusMessage"]) == ("deleting", "User cancelled")


async def test_the_cli_reports_ec2_errors(aws: AwsRun) -> None:
    """A dry run exits non-zero with DryRunOperation, as against real EC2."""
    with pytest.raises(AwsCliError) as raised:
        await aws("ec2", "describe-import-image-tasks", "--dry-run")

    assert raised.value.code == 255
    assert "DryRunOperation" in raised.value.stderr
