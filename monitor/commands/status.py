"""``status``: the tracked tasks as the daemon last saved them, without AWS.

It opens the state database read-only, so it is safe beside a running
daemon; what it shows is as fresh as the daemon's last poll.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from monitor.commands import add_config_option, add_json_option
from monitor.terminal import columns, percent

if TYPE_CHECKING:
    from monitor.tracker import TrackedTask

HEADER = (
    "TASK",
    "ACCOUNT",
    "REGION",
    "STATUS",
    "PHASE",
    "PROGRESS",
    "STALLED",
    "LAST CHANGE",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    add_json_option(parser)


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_or_exit
    from monitor.logs import configure_logging
    from monitor.store import Store, StoreError

    settings = load_or_exit(args.config)
    configure_logging("warning", settings.log.format, stream=sys.stderr)

    try:
        store = Store.open(settings.state.path, read_only=True)
        try:
            tasks = store.tasks()
        finally:
            store.close()
    except StoreError as error:
        print(f"ec2-import-monitor: {error}", file=sys.stderr)
        return 1

    if args.json:
        json.dump([as_json(tracked) for tracked in tasks], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(columns(HEADER, [as_row(t) for t in tasks]))
    return 0


def as_json(tracked: TrackedTask) -> dict[str, Any]:
    from monitor.events import iso_time

    task = tracked.task
    return {
        "task_id": task.task_id,
        "account": tracked.account,
        "region": tracked.region,
        "status": task.status,
        "phase": task.phase,
        "status_message": task.status_message,
        "progress": task.progress,
        "stalled": tracked.stalled,
        "overdue": tracked.overdue,
        "first_seen": iso_time(tracked.first_seen),
        "last_change": iso_time(tracked.last_change),
        "ended_at": None if tracked.ended_at is None else iso_time(tracked.ended_at),
        "image_id": task.image_id,
        "description": task.description,
    }


def as_row(tracked: TrackedTask) -> tuple[str, ...]:
    from monitor.events import iso_time

    task = tracked.task
    return (
        task.task_id,
        tracked.account,
        tracked.region,
        task.status,
        task.phase or "",
        percent(task.progress),
        "yes" if tracked.stalled else "no",
        iso_time(tracked.last_change),
    )
