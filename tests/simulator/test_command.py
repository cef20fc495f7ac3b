"""``simulate``: its flags, what it prints, and how it stops."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from botocore.exceptions import ClientError

from monitor.simulator import command

from .conftest import ec2_client

# The command as the CLI runs it, without depending on the rest of the CLI.
RUNNER = (
    "import argparse, sys\n"
    "from monitor.simulator import command\n"
    "parser = argparse.ArgumentParser()\n"
    "command.add_arguments(parser)\n"
    "sys.exit(command.main(parser.parse_args(sys.argv[1:])))\n"
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


@asynccontextmanager
async def _simulate(
    *argv: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Run ``simulate`` and yield it with the URL it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUNNER,
        "--listen",
        "127.0.0.1:0",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        url = None
        async with asyncio.timeout(20):
            while url is None:
                line = (await process.stdout.readline()).decode()
                assert line, "simulate exited before printing its endpoint"
                found = re.search(r"EC2 import simulator on (http://\S+)", line)
                url = found.group(1) if found else None
        yield process, url
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_defaults() -> None:
    """Without flags: 127.0.0.1:8787, the mixed scenario, 30x, no faults."""
    args = _parse()

    assert args.listen == ("127.0.0.1", 8787)
    assert (args.scenario, args.seed, args.speed, args.tasks) == (
        "mixed",
        0,
        30.0,
        None,
    )
    assert (args.throttle_rate, args.error_rate, args.latency) == (0.0, 0.0, 0.0)
    assert (args.malformed_rate, args.truncate_rate) == (0.0, 0.0)


def test_every_flag_is_read() -> None:
    """Each documented flag lands in its setting."""
    args = _parse(
        "--listen=[::1]:9000",
        "--scenario=stalls",
        "--seed=4",
        "--speed=0",
        "--tasks=3",
        "--throttle-rate=0.1",
        "--error-rate=0.2",
        "--latency=0.5",
        "--malformed-rate=0.3",
        "--truncate-rate=0.4",
    )

    assert args.listen == ("::1", 9000)
    assert (args.scenario, args.seed, args.speed, args.tasks) == ("stalls", 4, 0.0, 3)
    assert (args.throttle_rate, args.error_rate, args.latency) == (0.1, 0.2, 0.5)
    assert (args.malformed_rate, args.truncate_rate) == (0.3, 0.4)


@pytest.mark.parametrize(
    "argv",
    [
        ["--listen", "8787"],
        ["--listen", "localhost:http"],
        ["--scenario", "chaos"],
        ["--throttle-rate", "1.5"],
        ["--speed", "-2"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    """A bad address, scenario, rate or speed stops argparse with exit 2."""
    with pytest.raises(SystemExit) as raised:
        _parse(*argv)

    assert raised.value.code == 2


def test_the_instructions_show_how_to_point_clients_at_it() -> None:
    """The AWS CLI line, the daemon's variable, and dummy credentials."""
    url = "http://127.0.0.1:8787"

    text = command.instructions(url, "mixed", 30.0)

    assert f"aws ec2 describe-import-image-tasks --endpoint-url {url}" in text
    assert "--region us-east-1" in text
    assert f"AWS_ENDPOINT_URL_EC2={url}" in text
    assert "AWS_ACCESS_KEY_ID=" in text
    assert "AWS_SECRET_ACCESS_KEY=" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_it_serves_its_scenario_and_exits_zero_on_a_signal(
    signum: signal.Signals,
) -> None:
    """It answers with the scenario it was given, and a signal ends it with 0."""
    async with _simulate("--scenario", "steady", "--tasks", "3", "--speed", "0") as (
        process,
        url,
    ):
        async with ec2_client(url) as client:
            result = await client.describe_import_image_tasks()

        process.send_signal(signum)
        code = await asyncio.wait_for(process.wait(), timeout=10)

    assert 1 <= len(result["ImportImageTasks"]) <= 3
    assert code == 0


async def test_fault_flags_reach_the_server() -> None:
    """--throttle-rate 1 makes every call RequestLimitExceeded."""
    async with _simulate("--throttle-rate", "1", "--scenario", "empty") as (
        process,
        url,
    ):
        async with ec2_client(url) as client:
            with pytest.raises(ClientError, match="RequestLimitExceeded"):
                await client.describe_import_image_tasks()
        process.terminate()
        code = await asyncio.wait_for(process.wait(), timeout=10)

    assert code == 0
