"""Targets with a role: assumed through a real STS (moto's server), then renewed."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.config import Target
from monitor.credentials import session_for
from monitor.simulator import Simulator, serve
from tests.conftest import free_port, require_tool
from tests.e2e import ACCESS_KEY, use_test_credentials

ROOT = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/ImportWatcher"


@pytest.fixture
async def sts_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """moto's server on loopback, and botocore pointed at it for STS."""
    moto = require_tool("moto_server", str(ROOT / ".venv-moto/bin/moto_server"))
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        moto,
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(url + "/moto-api/"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.2)
        use_test_credentials(monkeypatch)
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", url)
        yield url
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


async def access_keys_seen(target: Target, calls: int) -> list[str]:
    """The access key each EC2 call carried, as the simulator recorded it."""
    sim = Simulator(scenario="steady", tasks=2, speed=0.0)
    async with serve(sim) as endpoint:
        session = session_for(target)
        async with session.client(
            "ec2", region_name="eu-west-1", endpoint_url=endpoint.url
        ) as ec2:
            for _ in range(calls):
                await ec2.describe_import_image_tasks()
    return [str(record.access_key) for record in sim.requests]


async def test_a_targets_calls_carry_the_assumed_roles_credentials(
    sts_url: str,
) -> None:
    target = Target(
        name="prod", regions=["eu-west-1"], role_arn=ROLE, external_id="ops-imports"
    )

    keys = await access_keys_seen(target, calls=3)

    assert len(keys) == 3
    assert ACCESS_KEY not in keys, "the source credentials went to EC2"
    assert all(key.startswith("ASIA") for key in keys), keys
    assert len(set(keys)) == 1, "an hour-long session is reused, not renewed"


async def test_the_session_names_the_role_and_session_name(sts_url: str) -> None:
    target = Target(
        name="prod",
        regions=["eu-west-1"],
        role_arn=ROLE,
        role_session_name="imports-prod",
    )

    async with session_for(target).client(
        "sts", region_name="us-east-1", endpoint_url=sts_url
    ) as sts:
        identity = await sts.get_caller_identity()

    assert identity["Arn"].endswith(":assumed-role/ImportWatcher/imports-prod")


async def test_credentials_near_expiry_are_renewed_without_failing_a_call(
    sts_url: str,
) -> None:
    """A 15-minute session is inside botocore's renewal window from the start.

    So every call renews it first; none of them fails while it does, which is
    what a long-running monitor relies on at each hourly expiry.
    """
    target = Target(
        name="prod", regions=["eu-west-1"], role_arn=ROLE, role_duration=900
    )

    keys = await access_keys_seen(target, calls=3)

    assert len(keys) == 3
    assert len(set(keys)) == 3, keys


async def test_a_target_without_a_role_uses_the_ambient_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_test_credentials(monkeypatch)

    keys = await access_keys_seen(Target(name="dev", regions=["eu-west-1"]), 1)

    assert keys == [ACCESS_KEY]
