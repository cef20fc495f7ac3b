"""``ec2-import-monitor simulate``: the fake EC2 endpoint on its own.

It prints how to point the AWS CLI and the daemon at it, then serves until
Ctrl-C or SIGTERM, and exits 0 either way.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.simulator.server import Simulator

DEFAULT_LISTEN = "127.0.0.1:8787"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Imported here only for the names: the scenarios module is light.
    from monitor.simulator.scenarios import SCENARIOS

    parser.add_argument(
        "--listen",
        type=_listen,
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to serve the EC2 API (default {DEFAULT_LISTEN}; port 0 picks one)",
    )
    parser.add_argument(
        "--scenario",
        default="mixed",
        choices=sorted(SCENARIOS),
        help="which tasks each account and region starts with (default mixed)",
    )
    parser.add_argument("--seed", type=int, default=0, help="scenario seed")
    parser.add_argument(
        "--speed",
        type=_non_negative,
        default=30.0,
        help="simulated seconds per real second (default 30; 0 freezes time)",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="tasks per account and region (default: the scenario's own)",
    )
    for flag, what in (
        ("--throttle-rate", "RequestLimitExceeded (503)"),
        ("--error-rate", "InternalError (500)"),
        ("--malformed-rate", "invalid XML"),
        ("--truncate-rate", "a body cut short"),
    ):
        parser.add_argument(
            flag,
            type=_rate,
            default=0.0,
            metavar="R",
            help=f"share of requests answered with {what} (0..1)",
        )
    parser.add_argument(
        "--latency",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="real seconds added to every request",
    )


def main(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.simulator.faults import Faults
    from monitor.simulator.server import Simulator

    host, port = args.listen
    sim = Simulator(
        scenario=args.scenario,
        seed=args.seed,
        tasks=args.tasks,
        speed=args.speed,
        faults=Faults(
            throttle_rate=args.throttle_rate,
            error_rate=args.error_rate,
            latency=args.latency,
            malformed_rate=args.malformed_rate,
            truncate_rate=args.truncate_rate,
        ),
    )
    # A second Ctrl-C while shutting down is still a clean exit.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(sim, host, port))
    return 0


async def run(sim: Simulator, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    import asyncio
    import signal

    from monitor.simulator.server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async with serve(sim, host, port) as endpoint:
        print(instructions(endpoint.url, sim.scenario, sim.clock.speed), flush=True)
        await stop.wait()


def instructions(url: str, scenario: str, speed: float) -> str:
    """What to paste to talk to the simulator."""
    return f"""\
EC2 import simulator on {url} (scenario {scenario}, {speed:g}x simulated time)

Any access key works; it picks the account. The region is the one you sign for.

  export AWS_ACCESS_KEY_ID=AKIDSIMULATOR AWS_SECRET_ACCESS_KEY=simulator
  aws ec2 describe-import-image-tasks --endpoint-url {url} --region us-east-1

The daemon, with the same dummy credentials:

  AWS_ENDPOINT_URL_EC2={url} ec2-import-monitor run

Ctrl-C stops it."""


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"wants HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value
