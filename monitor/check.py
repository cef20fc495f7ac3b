"""``check-config``: validate the configuration without starting anything.

Exits 0 with a one-line summary, or 78 (EX_CONFIG) with every problem on
stderr, one per line, so it can gate a deploy or an ``ExecStartPre=``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from monitor.config import (
    ALL_REGIONS,
    EX_CONFIG,
    ConfigError,
    Settings,
    config_path,
    load_settings,
    print_problems,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the TOML file to check (default: $EC2_IMPORT_MONITOR_CONFIG, "
        "else /etc/ec2-import-monitor/config.toml if it exists, else defaults)",
    )
    parser.add_argument(
        "--permissions",
        action="store_true",
        help="also ask every target and region, with DryRun, whether the "
        "monitor's calls are allowed (exit 1 if any is not)",
    )


def main(args: argparse.Namespace) -> int:
    source = config_path(args.config, os.environ)
    try:
        settings = load_settings(source)
    except ConfigError as error:
        print_problems(error)
        return EX_CONFIG

    targets = settings.targets
    regions = sum(len(t.regions) for t in targets if t.regions != [ALL_REGIONS])
    every = sum(1 for t in targets if t.regions == [ALL_REGIONS])
    summary = f"{_count(len(targets), 'target')}, {_count(regions, 'region')}"
    if every:
        summary += f" + every enabled region of {_count(every, 'target')}"
    print(f"config OK: {source if source is not None else 'defaults'}: {summary}")
    if args.permissions:
        return _check_permissions(settings)
    return 0


def _check_permissions(settings: Settings) -> int:
    import asyncio

    from monitor.permissions import ALLOWED, check_permissions

    verdicts = asyncio.run(check_permissions(settings))
    for v in verdicts:
        line = f"{v.account}/{v.region}: {v.operation}: {v.outcome}"
        print(line + (f" ({v.detail})" if v.detail else ""))
    return 0 if all(v.outcome == ALLOWED for v in verdicts) else 1


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
