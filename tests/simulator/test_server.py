"""The simulator over real HTTP, driven by aioboto3 as the daemon drives it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from monitor.simulator import (
    DiskSpec,
    Endpoint,
    Simulator,
    TaskSpec,
    TimelineBuilder,
    serve,
)
from monitor.simulator.lifecycle import DELETING_SECONDS

from .conftest import ACCESS_KEY, ACCOUNT, REGION, START, Connect, ec2_client

HOUR = 3600.0


def _task_id(number: int) -> str:
    return f"import-ami-{number:017x}"


def _add(sim: Simulator, number: int, at: float = START - 600) -> str:
    """An active, converting task created ``at``."""
    task = _task_id(number)
    sim.add_task(
        ACCOUNT,
        REGION,
        TimelineBuilder(task).phase(at, "pending").phase(at + 60, "converting", 30),
    )
    return task


def _add_in_every_state(sim: Simulator) -> dict[str, str]:
    """One task per Status, by that status."""
    active = _add(sim, 1)
    deleting = _task_id(2)
    sim.add_task(
        ACCOUNT,
        REGION,
        TimelineBuilder(deleting)
        .phase(START - 500, "validating")
        .cancelled(START - 10),
    )
    deleted = _task_id(3)
    sim.add_task(
        ACCOUNT,
        REGION,
        TimelineBuilder(deleted)
        .phase(START - 400, "booting")
        .failed(START - 300, "FirstBootFailure: no network"),
    )
    completed = _task_id(4)
    sim.add_task(
        ACCOUNT,
        REGION,
        TimelineBuilder(completed).phase(START - 300, "booted").completed(START - 5),
    )
    return {
        "active": active,
        "deleting": deleting,
        "deleted": deleted,
        "completed": completed,
    }


async def _all_pages(ec2: Any, **arguments: Any) -> list[list[dict[str, Any]]]:
    paginator = ec2.get_paginator("describe_import_image_tasks")
    return [page["ImportImageTasks"] async for page in paginator.paginate(**arguments)]


async def _error(call: Any, **arguments: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as raised:
        await call(**arguments)
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# Listing and paging


async def test_the_paginator_walks_many_pages_in_a_stable_order(
    sim: Simulator, ec2: Any
) -> None:
    """57 tasks at 5 a page: 12 pages, each task once, oldest first."""
    created = [_add(sim, n, at=START - 6000 + n) for n in range(1, 58)]

    pages = await _all_pages(ec2, PaginationConfig={"PageSize": 5})

    listed = [task["ImportTaskId"] for page in pages for task in page]
    assert [len(page) for page in pages] == [5] * 11 + [2]
    assert listed == created
    describes = [r for r in sim.requests if r.action == "DescribeImportImageTasks"]
    assert len(describes) == 12
    assert {r.params.get("MaxResults") for r in describes} == {"5"}


async def test_pages_hold_at_most_1000_tasks_without_max_results() -> None:
    """Absent MaxResults, a page stops at 1000 and offers a nextToken."""
    # A world of its own: the scale scenario has over a thousand visible tasks.
    sim = Simulator(
        scenario="scale", seed=3, speed=0.0, start=START, accounts={ACCESS_KEY: ACCOUNT}
    )
    visible = len(sim.tasks_of(ACCOUNT, REGION))

    async with serve(sim) as endpoint, ec2_client(endpoint.url) as client:
        page = await client.describe_import_image_tasks()
        rest = await client.describe_import_image_tasks(NextToken=page["NextToken"])

    assert visible > 1000
    assert len(page["ImportImageTasks"]) == 1000
    assert len(rest["ImportImageTasks"]) == visible - 1000
    assert "NextToken" not in rest


async def test_a_task_created_between_pages_shows_up_once_at_the_end(
    sim: Simulator, ec2: Any
) -> None:
    """The token keeps its place by task, not by offset, as tasks come and go."""
    first_ids = [_add(sim, n, at=START - 1000 + n) for n in range(1, 5)]
    page = await ec2.describe_import_image_tasks(MaxResults=2)

    late = _add(sim, 99, at=START)
    sim.clock.advance(1)
    rest = await _all_pages(ec2, NextToken=page["NextToken"], MaxResults=2)

    listed = [t["ImportTaskId"] for t in page["ImportImageTasks"]]
    listed += [t["ImportTaskId"] for p in rest for t in p]
    assert listed == [*first_ids, late]


async def test_a_token_only_works_for_the_query_it_came_from(
    sim: Simulator, ec2: Any
) -> None:
    """Reusing a token with other filters is InvalidPaginationToken (400)."""
    for n in range(1, 4):
        _add(sim, n, at=START - 100 + n)
    page = await ec2.describe_import_image_tasks(MaxResults=1)

    error = await _error(
        ec2.describe_import_image_tasks,
        NextToken=page["NextToken"],
        MaxResults=1,
        Filters=[{"Name": "task-state", "Values": ["active"]}],
    )

    assert error == ("InvalidPaginationToken", 400)


@pytest.mark.parametrize("state", ["active", "deleting", "deleted", "completed"])
async def test_each_task_state_filter_value_selects_that_status(
    sim: Simulator, ec2: Any, state: str
) -> None:
    """Filters.1.Name=task-state with one value lists exactly those tasks."""
    ids = _add_in_every_state(sim)

    result = await ec2.describe_import_image_tasks(
        Filters=[{"Name": "task-state", "Values": [state]}]
    )

    assert [t["ImportTaskId"] for t in result["ImportImageTasks"]] == [ids[state]]
    assert result["ImportImageTasks"][0]["Status"] == state


async def test_filter_values_are_ored_and_filters_are_anded(
    sim: Simulator, ec2: Any
) -> None:
    """Values of one filter widen it; a second filter narrows the result."""
    ids = _add_in_every_state(sim)
    ended = [{"Name": "task-state", "Values": ["deleted", "completed"]}]

    either = await ec2.describe_import_image_tasks(Filters=ended)
    both = await ec2.describe_import_image_tasks(
        Filters=[*ended, {"Name": "task-state", "Values": ["completed", "active"]}]
    )

    assert {t["ImportTaskId"] for t in either["ImportImageTasks"]} == {
        ids["deleted"],
        ids["completed"],
    }
    assert [t["ImportTaskId"] for t in both["ImportImageTasks"]] == [ids["completed"]]


@pytest.mark.parametrize(
    "filters",
    [
        [{"Name": "status", "Values": ["active"]}],
        [{"Name": "task-state", "Values": ["running"]}],
        [{"Name": "task-state", "Values": []}],
    ],
)
async def test_unknown_filters_and_values_are_invalid(
    ec2: Any, filters: list[dict[str, Any]]
) -> None:
    """Only task-state with a documented value is accepted."""
    error = await _error(ec2.describe_import_image_tasks, Filters=filters)

    assert error == ("InvalidParameterValue", 400)


async def test_task_ids_select_tasks_and_unknown_ids_are_left_out(
    sim: Simulator, ec2: Any
) -> None:
    """Known IDs are listed; a well-formed unknown or expired ID is omitted."""
    ids = _add_in_every_state(sim)
    wanted = [ids["completed"], ids["active"], _task_id(12345), "import-ami-0abc1234"]

    result = await ec2.describe_import_image_tasks(ImportTaskIds=wanted)
    sim.clock.advance(8 * 24 * HOUR)
    later = await ec2.describe_import_image_tasks(ImportTaskIds=wanted)

    assert [t["ImportTaskId"] for t in result["ImportImageTasks"]] == [
        ids["active"],
        ids["completed"],
    ]
    assert [t["ImportTaskId"] for t in later["ImportImageTasks"]] == [ids["active"]]


@pytest.mark.parametrize("bad", ["ami-0123456789abcdef0", "import-ami-XYZ", ""])
async def test_malformed_task_ids_are_invalid(ec2: Any, bad: str) -> None:
    """An ID that cannot be an import task ID is InvalidParameterValue."""
    error = await _error(ec2.describe_import_image_tasks, ImportTaskIds=[bad])

    assert error == ("InvalidParameterValue", 400)


@pytest.mark.parametrize("limit", [0, 1001, -5])
async def test_max_results_outside_1_to_1000_is_invalid(ec2: Any, limit: int) -> None:
    """MaxResults must be between 1 and 1000."""
    error = await _error(ec2.describe_import_image_tasks, MaxResults=limit)

    assert error == ("InvalidParameterValue", 400)


async def test_a_garbage_token_is_invalid(ec2: Any) -> None:
    """A token the simulator did not issue is InvalidPaginationToken (400)."""
    error = await _error(ec2.describe_import_image_tasks, NextToken="bm90IGpzb24")

    assert error == ("InvalidPaginationToken", 400)


async def test_every_field_round_trips_with_its_type(sim: Simulator, ec2: Any) -> None:
    """What aioboto3 parses equals what the simulator holds, field by field."""
    spec = TaskSpec(
        _task_id(7),
        disks=(
            DiskSpec(
                size_bytes=705638400.0,
                format="OVA",
                url="s3://bucket/web.ova",
                s3_bucket="bucket",
                s3_key="web.ova",
                description="root & data <1>",
                device_name="/dev/xvda",
            ),
        ),
        description="web-01",
        architecture="arm64",
        platform="Linux",
        license_type="BYOL",
        hypervisor="xen",
        encrypted=True,
        kms_key_id="alias/imports",
        boot_mode="uefi",
        usage_operation="RunInstances",
        tags=(("Name", "web-01"), ("team", "ops")),
        license_arns=("arn:aws:license-manager:eu-west-1:111111111111:lc/1",),
    )
    sim.add_task(
        ACCOUNT,
        REGION,
        TimelineBuilder(spec)
        .phase(START - 60, "converting", 28, disk_progress=[41])
        .completed(START + 60),
    )

    active = (await ec2.describe_import_image_tasks())["ImportImageTasks"]
    sim.clock.advance(60)
    done = (await ec2.describe_import_image_tasks())["ImportImageTasks"]

    assert active == sim.tasks_of(ACCOUNT, REGION, START)
    assert done == sim.tasks_of(ACCOUNT, REGION)
    task, disk = active[0], active[0]["SnapshotDetails"][0]
    assert (task["Progress"], task["Encrypted"], task["BootMode"]) == (
        "28",
        True,
        "uefi",
    )
    assert task["Tags"] == [
        {"Key": "Name", "Value": "web-01"},
        {"Key": "team", "Value": "ops"},
    ]
    assert task["LicenseSpecifications"][0]["LicenseConfigurationArn"].endswith("lc/1")
    assert (disk["DiskImageSize"], disk["Progress"]) == (705638400.0, "41")
    assert isinstance(disk["DiskImageSize"], float)
    assert disk["UserBucket"] == {"S3Bucket": "bucket", "S3Key": "web.ova"}
    assert done[0]["ImageId"].startswith("ami-")
    assert {"Progress", "StatusMessage"}.isdisjoint(done[0])


# Dry runs, permissions and errors


async def test_a_dry_run_that_would_succeed_says_so(ec2: Any) -> None:
    """DryRun=true answers DryRunOperation with HTTP 412."""
    error = await _error(ec2.describe_import_image_tasks, DryRun=True)

    assert error == ("DryRunOperation", 412)


async def test_a_denied_action_is_unauthorized_even_in_a_dry_run(
    sim: Simulator, ec2: Any, connect: Connect
) -> None:
    """A denied key gets UnauthorizedOperation (403), dry run or not."""
    sim.denied.add((ACCESS_KEY, "DescribeImportImageTasks"))

    real = await _error(ec2.describe_import_image_tasks)
    dry = await _error(ec2.describe_import_image_tasks, DryRun=True)
    async with connect(access_key="AKIDALLOWED") as other:
        allowed = await other.describe_import_image_tasks()

    assert real == ("UnauthorizedOperation", 403)
    assert dry == ("UnauthorizedOperation", 403)
    assert allowed["ImportImageTasks"] == []


async def test_throttling_and_internal_errors_have_ec2s_codes(
    sim: Simulator, ec2: Any
) -> None:
    """RequestLimitExceeded is 503 and InternalError is 500."""
    sim.faults.throttle_rate = 1.0
    throttled = await _error(ec2.describe_import_image_tasks)
    sim.faults.throttle_rate = 0.0
    sim.faults.error_rate = 1.0
    failed = await _error(ec2.describe_import_image_tasks)

    assert throttled == ("RequestLimitExceeded", 503)
    assert failed == ("InternalError", 500)


async def test_unknown_actions_and_unsigned_requests_are_refused(
    endpoint: Endpoint,
) -> None:
    """An unknown Action is InvalidAction (400); no SigV4 scope, AuthFailure (401)."""
    signed = {
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20270115/{REGION}/ec2/"
            "aws4_request, SignedHeaders=host, Signature=0"
        )
    }
    form = {"Action": "RunInstances", "Version": "2016-11-15"}
    timeout = aiohttp.ClientTimeout(total=10)

    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(endpoint.url, data=form, headers=signed) as response:
            unknown = (response.status, await response.text())
        form["Action"] = "DescribeImportImageTasks"
        async with http.post(endpoint.url, data=form) as response:
            unsigned = (response.status, await response.text())

    assert unknown[0] == 400
    assert "<Code>InvalidAction</Code>" in unknown[1]
    assert unsigned[0] == 401
    assert "<Code>AuthFailure</Code>" in unsigned[1]


# ImportImage and CancelImportTask


async def test_import_image_starts_a_task_that_runs_to_completion(
    sim: Simulator, ec2: Any
) -> None:
    """The new task is active/pending now and completed hours later."""
    started = await ec2.import_image(
        Description="web-01 from vSphere",
        Architecture="x86_64",
        Platform="Linux",
        LicenseType="BYOL",
        BootMode="uefi",
        Encrypted=False,
        DiskContainers=[
            {
                "Format": "vmdk",
                "UserBucket": {"S3Bucket": "vm-exports", "S3Key": "web-01.vmdk"},
                "Description": "root disk",
            },
            {"Format": "raw", "Url": "s3://vm-exports/web-01-data.raw"},
        ],
        TagSpecifications=[
            {
                "ResourceType": "import-image-task",
                "Tags": [{"Key": "Name", "Value": "web"}],
            }
        ],
    )
    task = started["ImportTaskId"]
    listed = await ec2.describe_import_image_tasks(ImportTaskIds=[task])
    sim.clock.advance(6 * HOUR)
    finished = await ec2.describe_import_image_tasks(ImportTaskIds=[task])

    assert (started["Status"], started["StatusMessage"]) == ("active", "pending")
    assert isinstance(started["Progress"], str)
    assert "BootMode" not in started
    assert [d["DiskImageSize"] for d in started["SnapshotDetails"]] == [0.0, 0.0]
    assert started["Tags"] == [{"Key": "Name", "Value": "web"}]
    (now,) = listed["ImportImageTasks"]
    assert (now["Description"], now["BootMode"], now["Platform"]) == (
        "web-01 from vSphere",
        "uefi",
        "Linux",
    )
    assert now["SnapshotDetails"][1]["Url"] == "s3://vm-exports/web-01-data.raw"
    (done,) = finished["ImportImageTasks"]
    assert done["Status"] == "completed"
    assert done["ImageId"].startswith("ami-")


async def test_import_image_with_the_same_client_token_is_one_task(ec2: Any) -> None:
    """ClientToken makes ImportImage idempotent."""
    disks = [{"Format": "VHD", "Url": "s3://b/k.vhd"}]

    first = await ec2.import_image(DiskContainers=disks, ClientToken="once")
    again = await ec2.import_image(DiskContainers=disks, ClientToken="once")
    other = await ec2.import_image(DiskContainers=disks)

    assert first["ImportTaskId"] == again["ImportTaskId"]
    assert other["ImportTaskId"] != first["ImportTaskId"]


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({}, "MissingParameter"),
        ({"DiskContainers": [{"Format": "vmdk"}]}, "InvalidParameterValue"),
        (
            {"DiskContainers": [{"Format": "qcow2", "Url": "s3://b/k"}]},
            "InvalidParameterValue",
        ),
        (
            {"DiskContainers": [{"Url": "s3://b/k"}], "Platform": "BeOS"},
            "InvalidParameterValue",
        ),
    ],
)
async def test_import_image_checks_its_parameters(
    ec2: Any, arguments: dict[str, Any], code: str
) -> None:
    """No disks, a disk without a source, an unknown format or platform: 400."""
    error = await _error(ec2.import_image, **arguments)

    assert error == (code, 400)


async def test_cancel_import_task_goes_deleting_then_deleted(
    sim: Simulator, ec2: Any
) -> None:
    """Cancel answers active -> deleting; the task ends deleted a minute later."""
    task = _add(sim, 1)

    answer = await ec2.cancel_import_task(ImportTaskId=task)
    deleting = await ec2.describe_import_image_tasks(ImportTaskIds=[task])
    sim.clock.advance(DELETING_SECONDS)
    deleted = await ec2.describe_import_image_tasks(ImportTaskIds=[task])
    again = await _error(ec2.cancel_import_task, ImportTaskId=task)

    assert (answer["ImportTaskId"], answer["PreviousState"], answer["State"]) == (
        task,
        "active",
        "deleting",
    )
    (during,) = deleting["ImportImageTasks"]
    assert (during["Status"], during["StatusMessage"]) == ("deleting", "User cancelled")
    (after,) = deleted["ImportImageTasks"]
    assert after["Status"] == "deleted"
    assert again == ("IncorrectState", 400)


async def test_cancelling_an_unknown_task_is_invalid_conversion_task_id(
    ec2: Any,
) -> None:
    """An ID the region does not hold: InvalidConversionTaskId (400)."""
    unknown = await _error(ec2.cancel_import_task, ImportTaskId=_task_id(404))
    missing = await _error(ec2.cancel_import_task)

    assert unknown == ("InvalidConversionTaskId", 400)
    assert missing == ("MissingParameter", 400)


# Accounts, regions and the request log


async def test_accounts_and_regions_are_separate_worlds(
    sim: Simulator, connect: Connect
) -> None:
    """A task imported in one account and region is invisible from the others."""
    async with connect() as home:
        task = (await home.import_image(DiskContainers=[{"Url": "s3://b/k"}]))[
            "ImportTaskId"
        ]
        home_tasks = (await home.describe_import_image_tasks())["ImportImageTasks"]
    async with connect(region="us-east-1") as other_region:
        region_tasks = (await other_region.describe_import_image_tasks())[
            "ImportImageTasks"
        ]
        cancel = await _error(other_region.cancel_import_task, ImportTaskId=task)
    async with connect(access_key="AKIDSOMEONEELSE") as other_account:
        account_tasks = (await other_account.describe_import_image_tasks())[
            "ImportImageTasks"
        ]

    assert [t["ImportTaskId"] for t in home_tasks] == [task]
    assert region_tasks == []
    assert account_tasks == []
    assert cancel == ("InvalidConversionTaskId", 400)


async def test_every_request_is_recorded_with_who_where_and_how_it_went(
    sim: Simulator, connect: Connect
) -> None:
    """The log has action, access key, account, region and outcome."""
    async with connect(access_key="AKIDUNMAPPED", region="ap-south-1") as client:
        await client.describe_import_image_tasks(MaxResults=10)
        await _error(client.describe_import_image_tasks, DryRun=True)
    async with connect() as mapped:
        await mapped.describe_import_image_tasks()

    ok, dry, known = sim.requests

    assert (ok.action, ok.access_key, ok.region) == (
        "DescribeImportImageTasks",
        "AKIDUNMAPPED",
        "ap-south-1",
    )
    assert ok.account == sim.account_for("AKIDUNMAPPED")
    assert ok.account != ACCOUNT
    assert len(ok.account or "") == 12
    assert (ok.status, ok.outcome) == (200, "success")
    assert ok.params["MaxResults"] == "10"
    assert (dry.status, dry.outcome) == (412, "DryRunOperation")
    assert dry.at == START
    assert (known.access_key, known.account) == (ACCESS_KEY, ACCOUNT)
