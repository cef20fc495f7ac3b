"""``watch``: a live terminal view of every active import, redrawn every poll.

It polls with a :class:`~monitor.daemon.Monitor` of its own that announces
nothing and persists nothing: the daemon's store is never written, so
``watch`` can run beside the daemon or without one. When the daemon's state
file is there and readable, it is read once at start, so ages and ETAs count
from what the daemon has seen rather than from the moment ``watch`` started.

On a terminal the view is a rich table with a bar per task and per disk;
anywhere else (a pipe, a log file) it is one plain line per task per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from monitor.commands import add_config_option
from monitor.events import iso_time
from monitor.terminal import (
    duration_argument,
    region_line,
    task_line,
    tasks_table,
)
from monitor.tracker import RegionHealth, RegionKey, TrackedTask, TrackerState

if TYPE_CHECKING:
    from monitor.config import Settings

HELP_EPILOG = """\
watch polls AWS itself, as often as the daemon does unless --interval says
otherwise, and keeps what it tracks in memory only; the daemon's own state
file is only read, once, for the ages and ETAs of tasks the daemon already
knows. Off a terminal it prints
one plain line per task per poll. Ctrl-C quits (exit status 0).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = HELP_EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_option(parser)
    parser.add_argument(
        "--interval",
        type=duration_argument,
        help='time between polls, e.g. "30s" (default: the config\'s poll.interval)',
    )


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_or_exit
    from monitor.logs import configure_logging

    settings = load_or_exit(args.config)
    interactive = sys.stdout.isatty()
    # Log lines written under the live view would tear it; on a terminal only
    # errors get through, and they go to stderr either way.
    configure_logging(
        "error" if interactive else "warning", settings.log.format, stream=sys.stderr
    )
    interval = args.interval or settings.poll.interval

    # asyncio.run cancels the poll on Ctrl-C, so the clients are closed
    # before this returns.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(settings, interval, interactive))
    return 0


class View(Protocol):
    def polling(self, regions: int) -> None: ...

    def show(self, state: TrackerState, regions: Collection[RegionKey]) -> None: ...


class LineView:
    """One plain line per task per poll; a task that ends shows up once more."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        #: When the current poll began: tasks that ended before it are left out.
        self.since = time.time()

    def polling(self, regions: int) -> None:
        self.since = time.time()

    def show(self, state: TrackerState, regions: Collection[RegionKey]) -> None:
        now = time.time()
        tasks = visible(state, regions, since=self.since)
        lines = [task_line(tracked, now) for tracked in tasks]
        lines += [
            region_line(h, now) for h in region_health(state, regions) if not h.ok
        ]
        if not tasks:
            lines.insert(0, f"{iso_time(now)} no active imports")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class LiveView:
    """The rich table, redrawn in place; tasks that end stay on it, finished."""

    def __init__(self, live: Live, interval: float) -> None:
        self.live = live
        self.interval = interval
        self.started = time.time()

    def polling(self, regions: int) -> None:
        if self.live.renderable is None or isinstance(self.live.renderable, Text):
            self.live.update(Text(f"Polling {regions} region(s)..."), refresh=True)

    def show(self, state: TrackerState, regions: Collection[RegionKey]) -> None:
        self.live.update(
            tasks_table(
                visible(state, regions, since=self.started),
                region_health(state, regions),
                time.time(),
                self.interval,
            ),
            refresh=True,
        )


def visible(
    state: TrackerState, regions: Collection[RegionKey], since: float
) -> list[TrackedTask]:
    """Active tasks of the polled regions, and those that ended from ``since`` on.

    Active ones come first, oldest first; the finished ones follow.
    """
    shown = [
        tracked
        for key, tracked in state.tasks.items()
        if (key.account, key.region) in regions
        and (tracked.ended_at is None or tracked.ended_at >= since)
    ]
    return sorted(
        shown,
        key=lambda t: (t.ended_at is not None, t.first_seen, t.task.task_id),
    )


def region_health(
    state: TrackerState, regions: Collection[RegionKey]
) -> list[RegionHealth]:
    return [state.regions[key] for key in sorted(regions) if key in state.regions]


def watch_settings(settings: Settings, interval: float) -> Settings:
    """The settings watch polls with: its own interval, and no shard.

    A shard divides the daemons' work; one person watching wants it all.
    """
    poll = settings.poll.model_copy(update={"interval": interval, "shard": "1/1"})
    return settings.model_copy(update={"poll": poll})


async def watch(settings: Settings, interval: float, view: View) -> None:
    """Poll every ``interval`` seconds and show each result, until cancelled."""
    from monitor.daemon import Monitor
    from monitor.store import read_saved_state

    monitor = Monitor(watch_settings(settings, interval), persist=False)
    monitor.state = read_saved_state(settings.state.path)
    await monitor.start()
    try:
        regions = frozenset(monitor.poller.regions)
        while True:
            started = time.monotonic()
            view.polling(len(regions))
            await monitor.poll_once(report=False)
            view.show(monitor.state, regions)
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))
    finally:
        await monitor.close()


async def _run(settings: Settings, interval: float, interactive: bool) -> None:
    # SIGTERM ends the view as Ctrl-C does: the live view restores the cursor.
    current = asyncio.current_task()
    assert current is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, current.cancel)

    with contextlib.suppress(asyncio.CancelledError):
        if not interactive:
            await watch(settings, interval, LineView(sys.stdout))
            return

        with Live(console=Console(), auto_refresh=False) as live:
            await watch(settings, interval, LiveView(live, interval))
