"""``run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

from monitor.commands import add_config_option, tune_garbage_collector

#: sysexits.h EX_CANTCREAT: the state file cannot be used as it is.
EX_CANTCREAT = 73


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_or_exit
    from monitor.daemon import serve
    from monitor.logs import configure_logging
    from monitor.store import StoreError

    settings = load_or_exit(args.config)
    configure_logging(settings.log.level, settings.log.format)
    tune_garbage_collector()
    try:
        return asyncio.run(serve(settings, config_path=args.config))
    except StoreError as error:
        # Not a config error, but no restart fixes it either: the unit's
        # RestartPreventExitStatus lists this code too.
        print(f"ec2-import-monitor: state error: {error}", file=sys.stderr)
        return EX_CANTCREAT
