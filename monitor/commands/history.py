"""``history``: one task's timeline, from the events the daemon stored.

It opens the state database read-only, so it is safe beside a running
daemon. Events older than ``[state] keep_history`` have been pruned.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from monitor.commands import add_config_option, add_json_option
from monitor.terminal import columns, percent, safe

#: Exit status when the store has never heard of the task.
EX_UNKNOWN_TASK = 3

HEADER = ("TIME", "EVENT", "PHASE", "PROGRESS", "DETAIL")

#: Record keys shown in their own column (or the title), not in DETAIL.
_SHOWN = frozenset(
    {
        "event",
        "account",
        "region",
        "task_id",
        "observed_at",
        "phase",
        "last_phase",
        "progress",
        "before",
        "after",
        "device",
    }
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id", metavar="TASK_ID", help="an ImportTaskId")
    add_config_option(parser)
    add_json_option(parser)


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_or_exit
    from monitor.logs import configure_logging
    from monitor.store import Store, StoreError

    settings = load_or_exit(args.config)
    configure_logging("warning", settings.log.format, stream=sys.stderr)
    task_id: str = args.task_id

    try:
        store = Store.open(settings.state.path, read_only=True)
        try:
            records = store.history(task_id)
            places = sorted(
                {(t.account, t.region) for t in store.tasks(task_id)}
                | {(str(r.get("account")), str(r.get("region"))) for r in records}
            )
        finally:
            store.close()
    except StoreError as error:
        print(f"ec2-import-monitor: {error}", file=sys.stderr)
        return 1

    if not places:
        print(
            f"ec2-import-monitor: task {safe(task_id)} is unknown to the state "
            f"store {safe(str(settings.state.path))}",
            file=sys.stderr,
        )
        return EX_UNKNOWN_TASK

    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    where = ", ".join(f"{account}/{region}" for account, region in places)
    sys.stdout.write(safe(f"{task_id} in {where}") + "\n")
    sys.stdout.write(columns(HEADER, [as_row(record) for record in records]))
    return 0


def as_row(record: Mapping[str, Any]) -> tuple[str, ...]:
    """One event record as table cells: before -> after where it has both."""
    name = str(record.get("event", ""))
    changes = "before" in record or "after" in record
    change = f"{_text(record.get('before'))} -> {_text(record.get('after'))}"
    details = []

    if name == "task_phase_changed":
        phase = change
    else:
        phase = _text(record.get("phase") or record.get("last_phase"))

    if name.endswith("_progressed"):
        progress = (
            f"{percent(record.get('before')) or '-'} -> "
            f"{percent(record.get('after')) or '-'}"
        )
    else:
        progress = percent(record.get("progress"))

    if "device" in record:
        details.append(f"disk {_text(record['device'])}")
    if changes and name.endswith("status_changed"):
        details.append(f"status {change}")
    details.extend(
        f"{key}={_value(value)}"
        for key, value in record.items()
        if key not in _SHOWN and value is not None
    )

    return (
        _text(record.get("observed_at")),
        name,
        phase,
        progress,
        " ".join(details),
    )


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _value(value: object) -> str:
    if isinstance(value, str):
        # Quoted only when needed, so key=value pairs stay readable and
        # a message with spaces stays one visible unit.
        plain = value and not any(ch.isspace() or ch in "\"'=" for ch in value)
        return value if plain else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)
