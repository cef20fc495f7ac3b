"""Faults: settings per region, seeded draws, and what clients see on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError
from botocore.parsers import ResponseParserError

from monitor.simulator import Faults, Simulator, TimelineBuilder, serve
from monitor.simulator.faults import FaultDice

from .conftest import ACCOUNT, REGION, START, Connect, ec2_client


def _fill(sim: Simulator, count: int) -> list[str]:
    ids = []
    for number in range(1, count + 1):
        task = f"import-ami-{number:017x}"
        sim.add_task(
            ACCOUNT,
            REGION,
            TimelineBuilder(task).phase(START - 1000 + number, "booting"),
        )
        ids.append(task)
    return ids


async def _code(call: Any, **arguments: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as raised:
        await call(**arguments)
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# Settings


def test_a_region_starts_from_the_global_settings_then_goes_its_own_way() -> None:
    """for_region copies the global settings once; later changes stay apart."""
    faults = Faults(throttle_rate=0.2)

    region = faults.for_region("eu-west-1")
    region.error_rate = 0.5
    faults.throttle_rate = 0.9

    assert faults.for_region("eu-west-1") is region
    assert (region.throttle_rate, region.error_rate) == (0.2, 0.5)
    assert faults.effective("eu-west-1") is region
    assert faults.effective("us-east-1") is faults
    assert faults.effective(None) is faults


def test_clear_removes_every_fault_everywhere() -> None:
    """clear() resets the global settings and forgets every region's."""
    faults = Faults(error_rate=1.0, bad_token=True, latency=2.0)
    faults.for_region("eu-west-1").auth_failure = True

    faults.clear()

    assert faults == Faults()
    assert faults.effective("eu-west-1") is faults


@pytest.mark.parametrize(
    "settings",
    [{"throttle_rate": 1.5}, {"error_rate": -0.1}, {"latency": -1.0}],
)
def test_impossible_settings_are_refused(settings: dict[str, Any]) -> None:
    """Rates are probabilities and latency is not negative."""
    with pytest.raises(ValueError, match="must be"):
        Faults(**settings)


def test_draws_are_deterministic_per_seed_and_region() -> None:
    """The same seed gives the same draws; rates hold roughly over many draws."""
    faults = Faults(throttle_rate=0.3)

    dice_a, dice_b = FaultDice(5), FaultDice(5)
    run_a = [dice_a.roll(faults, "eu-west-1").throttle for _ in range(400)]
    run_b = [dice_b.roll(faults, "eu-west-1").throttle for _ in range(400)]
    other_region = [dice_b.roll(faults, "us-east-1").throttle for _ in range(400)]

    assert run_a == run_b
    assert run_a != other_region
    assert 80 <= sum(run_a) <= 160


# On the wire


async def test_faults_can_hit_one_region_only(sim: Simulator, connect: Connect) -> None:
    """A region's own throttling leaves the other regions alone."""
    sim.faults.for_region(REGION).throttle_rate = 1.0

    async with connect() as throttled, connect(region="us-east-1") as calm:
        error = await _code(throttled.describe_import_image_tasks)
        fine = await calm.describe_import_image_tasks()

    assert error == ("RequestLimitExceeded", 503)
    assert fine["ImportImageTasks"] == []
    assert [r.fault for r in sim.requests] == ["throttle", None]


async def test_seeded_rates_give_the_same_outcomes_on_every_run() -> None:
    """Two simulators with one seed fail the same requests in the same order."""
    outcomes = []
    for _ in range(2):
        sim = Simulator(
            scenario="empty",
            seed=11,
            speed=0.0,
            start=START,
            faults=Faults(throttle_rate=0.3, error_rate=0.2),
        )
        async with serve(sim) as endpoint, ec2_client(endpoint.url) as client:
            for _ in range(15):
                with contextlib.suppress(ClientError):
                    await client.describe_import_image_tasks()
        outcomes.append([record.outcome for record in sim.requests])

    assert outcomes[0] == outcomes[1]
    assert {"success", "RequestLimitExceeded"} <= set(outcomes[0])


async def test_latency_delays_a_request_without_blocking_others(
    sim: Simulator, connect: Connect
) -> None:
    """A slow region answers late while another region answers at once."""
    sim.faults.for_region(REGION).latency = 0.4
    finished: list[str] = []

    async def call(client: Any, name: str) -> None:
        await client.describe_import_image_tasks()
        finished.append(name)

    async with connect() as slow, connect(region="us-east-1") as fast:
        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(call(slow, "slow"), call(fast, "fast")), timeout=10
        )
        took = time.monotonic() - began

    assert finished == ["fast", "slow"]
    assert took >= 0.4


async def test_malformed_xml_fails_the_parser(sim: Simulator, ec2: Any) -> None:
    """malformed_rate=1 answers 200 with XML botocore cannot parse."""
    sim.faults.malformed_rate = 1.0

    with pytest.raises(ResponseParserError):
        await ec2.describe_import_image_tasks()

    assert (sim.requests[-1].status, sim.requests[-1].fault) == (200, "malformed")


@pytest.mark.parametrize("setting", ["truncate_rate", "drop_connection"])
async def test_a_cut_or_dropped_connection_reaches_the_client(
    sim: Simulator, ec2: Any, setting: str
) -> None:
    """A body cut short, or no response at all, is a connection error."""
    setattr(sim.faults, setting, 1.0 if setting.endswith("rate") else True)

    with pytest.raises(ConnectionClosedError):
        await ec2.describe_import_image_tasks()

    expected = "truncate" if setting == "truncate_rate" else "drop_connection"
    assert sim.requests[-1].fault == expected


async def test_auth_failure_refuses_every_call(sim: Simulator, ec2: Any) -> None:
    """auth_failure answers AuthFailure (401) whatever the action."""
    sim.faults.auth_failure = True

    describe = await _code(ec2.describe_import_image_tasks)
    cancel = await _code(ec2.cancel_import_task, ImportTaskId="import-ami-01234567")

    assert describe == ("AuthFailure", 401)
    assert cancel == ("AuthFailure", 401)


async def test_bad_token_rejects_the_second_page(sim: Simulator, ec2: Any) -> None:
    """bad_token: the first page works, every NextToken is invalid."""
    _fill(sim, 3)
    sim.faults.bad_token = True

    first = await ec2.describe_import_image_tasks(MaxResults=2)
    error = await _code(
        ec2.describe_import_image_tasks, MaxResults=2, NextToken=first["NextToken"]
    )

    assert len(first["ImportImageTasks"]) == 2
    assert error == ("InvalidPaginationToken", 400)


async def test_repeat_task_starts_each_page_with_the_last_one(
    sim: Simulator, ec2: Any
) -> None:
    """repeat_task: every page after the first repeats the previous page's last."""
    ids = _fill(sim, 6)
    sim.faults.repeat_task = True
    paginator = ec2.get_paginator("describe_import_image_tasks")

    pages = [
        [task["ImportTaskId"] for task in page["ImportImageTasks"]]
        async for page in paginator.paginate(PaginationConfig={"PageSize": 2})
    ]

    assert pages == [ids[0:2], ids[1:4], ids[3:6]]


async def test_token_loop_sends_page_two_back_to_page_one(
    sim: Simulator, ec2: Any
) -> None:
    """token_loop: following page 2's nextToken gives page 1 again, forever."""
    _fill(sim, 6)
    sim.faults.token_loop = True

    one = await ec2.describe_import_image_tasks(MaxResults=2)
    two = await ec2.describe_import_image_tasks(
        MaxResults=2, NextToken=one["NextToken"]
    )
    again = await ec2.describe_import_image_tasks(
        MaxResults=2, NextToken=two["NextToken"]
    )

    assert again["ImportImageTasks"] == one["ImportImageTasks"]
    assert again["NextToken"] == one["NextToken"]
    assert two["ImportImageTasks"] != one["ImportImageTasks"]
