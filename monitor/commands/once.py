"""``once``: one poll of every target and region, as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from monitor.commands import (
    add_config_option,
    add_json_option,
    tune_garbage_collector,
)
from monitor.terminal import columns, percent
from monitor.tracker import TrackerState


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    add_json_option(parser)


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_or_exit
    from monitor.logs import configure_logging

    settings = load_or_exit(args.config)
    # Only problems go to stderr; stdout carries the table or JSON alone.
    configure_logging("warning", settings.log.format, stream=sys.stderr)
    tune_garbage_collector()
    state = asyncio.run(_poll(settings))

    if args.json:
        json.dump(as_json(state), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(as_table(state))

    failed = [health for health in state.regions.values() if not health.ok]
    for health in failed:
        print(
            f"ec2-import-monitor: {health.account}/{health.region}: poll failed: "
            f"{health.error}",
            file=sys.stderr,
        )
    return 1 if failed else 0


async def _poll(settings: Any) -> TrackerState:
    from monitor.daemon import Monitor
    from monitor.store import read_saved_state

    # A one-off look never writes the daemon's state, but reads it when it
    # can: the history it holds is what an ETA is estimated from.
    monitor = Monitor(settings, persist=False)
    monitor.state = read_saved_state(settings.state.path)
    await monitor.start()
    try:
        await monitor.poll_once(report=False)
    finally:
        await monitor.close()
    return monitor.state


def as_json(state: TrackerState) -> dict[str, Any]:
    from monitor.tracker import estimate_eta

    now = max((h.last_attempt for h in state.regions.values()), default=0.0)
    return {
        "regions": [
            {
                "account": health.account,
                "region": health.region,
                "ok": health.ok,
                "error": health.error,
                "duration_seconds": round(health.duration, 3),
            }
            for health in sorted(
                state.regions.values(), key=lambda h: (h.account, h.region)
            )
        ],
        "tasks": [
            {
                "account": tracked.account,
                "region": tracked.region,
                "eta_seconds": estimate_eta(tracked, now),
                **tracked.task.to_dict(),
            }
            for _, tracked in sorted(state.tasks.items())
        ],
    }


def as_table(state: TrackerState) -> str:
    from monitor.tracker import estimate_eta

    now = max((h.last_attempt for h in state.regions.values()), default=0.0)
    header = (
        "TASK",
        "ACCOUNT",
        "REGION",
        "STATUS",
        "PHASE",
        "PROGRESS",
        "ETA",
        "DISKS",
    )
    rows = [header]
    for _, tracked in sorted(state.tasks.items()):
        task = tracked.task
        eta = estimate_eta(tracked, now)
        disks = " ".join(
            f"{disk.device}:{percent(disk.progress) or disk.status or '?'}"
            for disk in task.disks
        )
        rows.append(
            (
                task.task_id,
                tracked.account,
                tracked.region,
                task.status + (" (stalled)" if tracked.stalled else ""),
                task.phase or "",
                percent(task.progress),
                "" if eta is None else f"{round(eta / 60)}m",
                disks,
            )
        )
    return columns(header, rows[1:])
