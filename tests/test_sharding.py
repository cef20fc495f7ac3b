"""Shards split the (target, region) pairs between monitor instances."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from monitor.config import PollSettings, Target
from monitor.ec2 import Poller
from monitor.sharding import Shard, owner

REGIONS = [
    f"{area}-{direction}-{number}"
    for area in ("us", "eu", "ap", "ca", "sa", "me", "af")
    for direction in ("east", "west", "north", "south", "central")
    for number in (1, 2)
]
PAIRS = [(f"account-{n}", region) for n in range(12) for region in REGIONS]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_every_pair_is_owned_by_exactly_one_shard(count: int) -> None:
    shards = [Shard(index, count) for index in range(1, count + 1)]

    owners = [[s for s in shards if s.owns(*pair)] for pair in PAIRS]

    assert all(len(found) == 1 for found in owners)


def test_shards_get_similar_shares() -> None:
    counts = [0] * 4
    for pair in PAIRS:
        counts[owner(*pair, count=4) - 1] += 1

    fair = len(PAIRS) / 4
    assert all(0.8 * fair <= count <= 1.2 * fair for count in counts), counts


@pytest.mark.parametrize("count", [2, 4, 8])
def test_adding_a_shard_moves_only_what_the_new_shard_takes(count: int) -> None:
    """Going from N to N+1 shards moves about 1/(N+1) of the pairs, all to N+1."""
    before = {pair: owner(*pair, count=count) for pair in PAIRS}
    after = {pair: owner(*pair, count=count + 1) for pair in PAIRS}

    moved = [pair for pair in PAIRS if before[pair] != after[pair]]

    assert all(after[pair] == count + 1 for pair in moved)
    assert len(moved) <= 1.3 * len(PAIRS) / (count + 1)


def test_the_assignment_is_the_same_in_every_process() -> None:
    """Instances must agree, so no per-process hash seed may leak in."""
    script = (
        "from monitor.sharding import owner; "
        "print([owner('prod', r, 3) for r in ('us-east-1', 'eu-west-1', 'ap-south-1')])"
    )

    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2", "3")
    }

    assert len(runs) == 1


@pytest.mark.parametrize(
    ("text", "shard"),
    [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 3/3 ", Shard(3, 3))],
)
def test_shard_specs_parse(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "2/0", "-1/2"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)


async def test_instances_with_different_shards_poll_disjoint_regions_covering_all() -> (
    None
):
    """What each daemon polls: its shard's regions of every target, no more."""
    regions = ["us-east-1", "eu-west-1", "ap-south-1", "ca-central-1"]
    targets = [Target(name=name, regions=regions) for name in ("prod", "staging")]

    polled = []
    for index in (1, 2, 3):
        async with Poller(targets, PollSettings(shard=f"{index}/3")) as poller:
            polled.append(set(poller.regions))

    assert set().union(*polled) == {(t.name, r) for t in targets for r in regions}
    assert sum(map(len, polled)) == 8
