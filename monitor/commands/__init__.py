"""One module per command; each has ``add_arguments(parser)`` and ``main(args)``.

The options several commands share are defined once here, so ``--config``
means the same thing everywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the TOML config (default: $EC2_IMPORT_MONITOR_CONFIG, else "
        "/etc/ec2-import-monitor/config.toml if it exists, else defaults)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
