"""The ``ec2-import-monitor`` command line.

Each command lives in the module that does its work and registers itself
here with an ``add_arguments(parser)`` and a ``main(args) -> int`` pair, so
this file stays a table of contents.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from monitor import __version__

#: command name -> (module holding ``add_arguments`` and ``main``, help text)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("monitor.commands.run", "run the daemon"),
    "once": ("monitor.commands.once", "poll every target once; print a table"),
    "demo": (
        "monitor.commands.demo",
        "run the daemon against the built-in simulator",
    ),
    "simulate": (
        "monitor.simulator.command",
        "serve the fake EC2 import API alone",
    ),
    "check-config": ("monitor.check", "validate the configuration and exit"),
    "status": ("monitor.commands.status", "list tracked tasks from the state store"),
    "history": ("monitor.commands.history", "show one task's timeline"),
    "watch": ("monitor.commands.watch", "a live terminal view of every import"),
    "wait": (
        "monitor.commands.wait",
        "block until imports end; exit 0 completed, 1 failed, 2 timeout, 3 unknown",
    ),
}


#: sysexits.h EX_USAGE. argparse's own 2 would read as `wait`'s timeout.
EX_USAGE = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser, with only the named command's module imported.

    Without a command name the parser can only print help or an error, and
    those need no command's arguments: each import costs start-up time.
    """
    parser = _Parser(
        prog="ec2-import-monitor",
        description="Watch AWS EC2 VM Import tasks and export their progress.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.main)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(words)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
