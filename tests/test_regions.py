"""`regions = ["all"]`: the account's enabled regions, from DescribeRegions."""

from __future__ import annotations

import pytest

from monitor.config import PollSettings, Target
from monitor.ec2 import Poller
from monitor.simulator import Simulator, serve
from tests.e2e import ACCESS_KEY, use_test_credentials


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_credentials(monkeypatch)


async def test_all_means_every_enabled_region_and_no_other() -> None:
    sim = Simulator(scenario="steady", tasks=1, speed=0.0)
    async with serve(sim) as endpoint:
        target = Target(name="prod", regions=["all"], endpoint_url=endpoint.url)

        async with Poller([target], PollSettings()) as poller:
            polls = await poller.poll({})
            polled = {key.region for key in poller.regions}

    enabled = {name for name, status in sim.regions.items() if status != "not-opted-in"}
    assert polled == enabled
    assert "af-south-1" not in enabled
    assert all(poll.ok for poll in polls)
    assert {poll.region for poll in polls} == enabled


async def test_shards_split_the_discovered_regions() -> None:
    sim = Simulator(scenario="empty", speed=0.0)
    async with serve(sim) as endpoint:
        target = Target(name="prod", regions=["all"], endpoint_url=endpoint.url)
        polled = []
        for shard in ("1/2", "2/2"):
            async with Poller([target], PollSettings(shard=shard)) as poller:
                polled.append({key.region for key in poller.regions})

    enabled = {name for name, status in sim.regions.items() if status != "not-opted-in"}
    assert polled[0] | polled[1] == enabled
    assert not polled[0] & polled[1]


async def test_a_failed_discovery_is_retried_on_the_next_poll() -> None:
    sim = Simulator(scenario="empty", speed=0.0)
    sim.denied.add((ACCESS_KEY, "DescribeRegions"))
    async with serve(sim) as endpoint:
        target = Target(name="prod", regions=["all"], endpoint_url=endpoint.url)
        async with Poller([target], PollSettings()) as poller:
            before = poller.regions
            sim.denied.clear()

            await poller.poll({})

            after = poller.regions

    assert before == ()
    assert len(after) == len([s for s in sim.regions.values() if s != "not-opted-in"])
