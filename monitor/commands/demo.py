"""``demo``: the daemon against the built-in simulator, in one process.

The simulator runs faster than real time and the daemon reads the
simulator's clock, so stall thresholds and ETAs are in simulated time: a
two-hour conversion plays out in minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

DEMO_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
DEMO_ACCESS_KEY = "AKIADEMODEMODEMO0001"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default="127.0.0.1:8780", help="HOST:PORT for /metrics and /"
    )
    parser.add_argument("--scenario", default="mixed", help="simulator scenario")
    parser.add_argument("--seed", type=int, default=1, help="scenario seed")
    parser.add_argument(
        "--speed", type=float, default=30.0, help="simulated seconds per real second"
    )
    parser.add_argument("--tasks", type=int, default=6, help="tasks per region")
    parser.add_argument(
        "--interval", default="5s", help="poll interval, in real time (e.g. 5s)"
    )


def main(args: argparse.Namespace) -> int:
    from monitor.config import (
        EX_CONFIG,
        ConfigError,
        print_problems,
        validate_settings,
    )
    from monitor.logs import configure_logging

    with tempfile.TemporaryDirectory(prefix="ec2-import-monitor-demo-") as tmp:
        try:
            settings = validate_settings(
                {
                    "poll": {"interval": args.interval},
                    "metrics": {"listen": args.listen},
                    "state": {"path": str(Path(tmp) / "state.db")},
                    "targets": [{"name": "demo", "regions": list(DEMO_REGIONS)}],
                },
                "demo",
            )
        except ConfigError as error:
            print_problems(error)
            return EX_CONFIG

        configure_logging(settings.log.level, settings.log.format)
        _use_demo_credentials()
        return asyncio.run(_demo(settings, args))


async def _demo(settings: object, args: argparse.Namespace) -> int:
    from monitor.config import Settings
    from monitor.daemon import serve
    from monitor.simulator import Simulator
    from monitor.simulator import serve as serve_simulator

    assert isinstance(settings, Settings)
    simulator = Simulator(
        scenario=args.scenario, seed=args.seed, tasks=args.tasks, speed=args.speed
    )

    async with serve_simulator(simulator, host="127.0.0.1", port=0) as endpoint:
        settings = settings.model_copy(
            update={
                "targets": [
                    target.model_copy(update={"endpoint_url": endpoint.url})
                    for target in settings.targets
                ]
            }
        )

        def announce(port: int) -> None:
            base = f"http://{settings.metrics.host}:{port}"
            print(
                f"\nec2-import-monitor demo: simulator ({args.scenario}, "
                f"x{args.speed:g} speed) at {endpoint.url}\n"
                f"  status page  {base}/\n"
                f"  metrics      {base}/metrics\n"
                "  stop with Ctrl-C\n",
                file=sys.stderr,
                flush=True,
            )

        trickle = None
        if args.speed > 0:
            trickle = asyncio.create_task(_keep_importing(simulator, args.seed))
        try:
            return await serve(
                settings, clock=simulator.clock.now, on_listening=announce
            )
        finally:
            if trickle is not None:
                trickle.cancel()


#: Simulated seconds between new imports in each region, on average.
NEW_IMPORT_EVERY = 40 * 60.0


async def _keep_importing(simulator: Any, seed: int) -> None:
    """Start a new import now and then, so the demo never runs dry.

    The scenario's own tasks all start within its first hours; at demo speed
    they would be over in minutes.
    """
    from monitor.simulator.lifecycle import FAILURES, Plan, realistic
    from monitor.simulator.scenarios import random_spec

    rng = random.Random(f"demo/{seed}")
    account = simulator.account_for(DEMO_ACCESS_KEY)
    while True:
        await asyncio.sleep(
            NEW_IMPORT_EVERY / simulator.clock.speed / len(DEMO_REGIONS)
        )
        region = rng.choice(DEMO_REGIONS)
        plans = [
            Plan(outcome="complete"),
            Plan(outcome="fail", fail_in=rng.choice(list(FAILURES))),
            Plan(outcome="cancel", cancel_after=rng.uniform(300.0, 1800.0)),
        ]
        plan = rng.choices(plans, weights=[7, 2, 1])[0]
        spec = random_spec(rng, f"vm-imports-{account}-{region}")
        timeline = realistic(spec, simulator.clock.now(), rng, plan)
        simulator.add_task(account, region, timeline)


def _use_demo_credentials() -> None:
    # The simulator ignores signatures but botocore will not sign without
    # credentials; never let real ones near a demo.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_EC2"):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = DEMO_ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = "demo-secret-not-a-real-key"  # noqa: S105
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
