"""``run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="TOML config (default: the system one, if any)"
    )


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_or_exit
    from monitor.daemon import serve
    from monitor.logs import configure_logging

    settings = load_or_exit(args.config)
    configure_logging(settings.log.level, settings.log.format)
    return asyncio.run(serve(settings))
