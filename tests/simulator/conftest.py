"""Fixtures for the simulator's tests: a world, its endpoint, and clients.

Clients are real aioboto3 clients over loopback HTTP, with retries off so
every error reaches the test as it left the simulator, and a timeout on
every connection and read.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from botocore.config import Config

from monitor.simulator import Endpoint, Simulator, serve

#: Every simulator in these tests starts at this Unix time, frozen.
START = 1_800_000_000.0
ACCESS_KEY = "AKIDSIMTESTER000001"
ACCOUNT = "111111111111"
REGION = "eu-west-1"
AWS_CLI = Path(__file__).resolve().parents[2] / ".venv-awscli" / "bin" / "aws"

Connect = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def sim() -> Simulator:
    """An empty world with frozen time and one known access key."""
    return Simulator(
        scenario="empty",
        seed=1,
        speed=0.0,
        start=START,
        accounts={ACCESS_KEY: ACCOUNT},
    )


@pytest.fixture
async def endpoint(sim: Simulator) -> AsyncIterator[Endpoint]:
    async with serve(sim) as served:
        yield served


def ec2_client(
    url: str, access_key: str = ACCESS_KEY, region: str = REGION
) -> AbstractAsyncContextManager[Any]:
    """An aioboto3 EC2 client for ``url``: no retries, short timeouts."""
    session = aioboto3.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key="not-checked",
        region_name=region,
    )
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=10,
    )
    client: AbstractAsyncContextManager[Any] = session.client(
        "ec2", endpoint_url=url, config=config
    )
    return client


@pytest.fixture
def connect(endpoint: Endpoint) -> Connect:
    """``connect(access_key=..., region=...)``: an EC2 client for the simulator."""

    def client(
        access_key: str = ACCESS_KEY, region: str = REGION
    ) -> AbstractAsyncContextManager[Any]:
        return ec2_client(endpoint.url, access_key, region)

    return client


@pytest.fixture
async def ec2(connect: Connect) -> AsyncIterator[Any]:
    async with connect() as client:
        yield client


@pytest.fixture
def aws_cli() -> Path:
    """The AWS CLI from its own virtualenv; under CI its absence is a failure."""
    if AWS_CLI.is_file() and os.access(AWS_CLI, os.X_OK):
        return AWS_CLI
    message = f"{AWS_CLI} is missing (make tools installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


AwsRun = Callable[..., Awaitable[Any]]


@pytest.fixture
def aws(aws_cli: Path, endpoint: Endpoint) -> AwsRun:
    """``await aws("ec2", "describe-import-image-tasks", ...)``: its JSON output.

    The CLI gets a clean environment: dummy keys, no config files, no
    instance metadata lookups, so nothing on this machine changes its
    behaviour. It runs as an asyncio subprocess, because the simulator
    answering it lives on this test's event loop. A non-zero exit raises
    :class:`AwsCliError` with the CLI's stderr.
    """

    async def run(
        *arguments: str, access_key: str = ACCESS_KEY, region: str = REGION
    ) -> Any:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": "not-checked",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        command = [
            str(aws_cli),
            *arguments,
            "--endpoint-url",
            endpoint.url,
            "--region",
            region,
            "--output",
            "json",
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise AwsCliError(process.returncode or -1, stderr.decode())
        return json.loads(stdout) if stdout.strip() else None

    return run


class AwsCliError(Exception):
    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(f"aws exited {code}: {stderr}")
        self.code = code
        self.stderr = stderr
