"""``wait``: block until the named imports end; the exit status says how.

It polls with a :class:`~monitor.ec2.Poller` over every configured target and
region, the shard setting aside: one pipeline waits on its own imports
wherever they run. Each poll is what the daemon's is, a region's active
listing plus a lookup by ID of the asked-for tasks not in it, so ``wait``
needs no permission the daemon lacks and shares its retries, deadline and
paging safeguards. A task not yet found is asked for in every region; once
found, only in its own.

A region whose poll fails tells nothing that round (the design's rule 1): its
tasks keep their last known state, the failure is reported once and its
recovery once, and the next poll retries it. A task counts as unknown only
when every region has answered at least once without listing it, so a region
that is down cannot make a real task look unknown; if it stays down, the
timeout decides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from monitor.commands import add_config_option
from monitor.events import iso_time
from monitor.model import COMPLETED, ImportTask
from monitor.terminal import (
    disks_text,
    duration,
    duration_argument,
    percent,
    safe,
    state_text,
)
from monitor.tracker import RegionKey, RegionPoll, deduplicate

if TYPE_CHECKING:
    from monitor.config import Settings

#: Exit statuses; ``--help`` lists them too.
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 2
EXIT_UNKNOWN = 3

#: What ``ImportImage`` returns: 17 hex digits today, 8 characters before.
TASK_ID = re.compile(r"import-ami-[0-9a-z]{8,17}")

DEFAULT_TIMEOUT = "6h"

_PROGRAM = "ec2-import-monitor"

HELP_EPILOG = f"""\
exit status:
  {EXIT_COMPLETED}   every task completed (its AMI is in the output)
  {EXIT_FAILED}   a task failed or was cancelled (its StatusMessage is printed),
      or vanished: no longer listed and not found by ID
  {EXIT_TIMEOUT}   the timeout passed first
  {EXIT_UNKNOWN}   a task ID is malformed, or no configured region has it
  64  the command line is wrong (usage)
  78  the configuration cannot be used

Progress goes to stderr: a bar per task on a terminal, else one line per
change. stdout carries the result alone: a line per task, or with --json one
JSON object. A region whose poll fails is retried every interval and never
counts as a task failing.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = HELP_EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "task_ids", nargs="+", metavar="TASK_ID", help="import-ami-... task IDs"
    )
    add_config_option(parser)
    parser.add_argument(
        "--timeout",
        type=duration_argument,
        default=duration_argument(DEFAULT_TIMEOUT),
        help=f'give up after this long, e.g. "45m" (default {DEFAULT_TIMEOUT})',
    )
    parser.add_argument(
        "--interval",
        type=duration_argument,
        help='time between polls, e.g. "30s" (default: the config\'s poll.interval)',
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object"
    )


def main(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError

    from monitor.config import EX_CONFIG, load_or_exit
    from monitor.logs import configure_logging

    settings = load_or_exit(args.config)
    interactive = sys.stderr.isatty()
    # Log lines would tear the bars; the result goes to stdout either way.
    configure_logging(
        "error" if interactive else "warning", settings.log.format, stream=sys.stderr
    )
    interval = args.interval or settings.poll.interval
    # Named twice, waited on once, reported once.
    task_ids = args.task_ids = list(dict.fromkeys(args.task_ids))

    malformed = [task_id for task_id in task_ids if not TASK_ID.fullmatch(task_id)]
    if malformed:
        outcome = Outcome("unknown", EXIT_UNKNOWN, [Watched(t) for t in task_ids])
        for task_id in malformed:
            _error(f"{safe(task_id)}: not an import task ID (import-ami-...)")
    else:
        try:
            outcome = asyncio.run(_wait(settings, args, interval, interactive))
        except BotoCoreError as error:
            _error(f"cannot set up the EC2 clients: {safe(error)}")
            return EX_CONFIG
        _explain(outcome, args.timeout)

    if args.json:
        json.dump(outcome.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.writelines(result_line(watched) + "\n" for watched in outcome.tasks)
    return outcome.code


@dataclass
class Watched:
    """One task waited on: where it was found and how it was last seen."""

    task_id: str
    account: str | None = None
    region: str | None = None
    task: ImportTask | None = None
    #: Found once, then neither listed as active nor found by ID.
    vanished: bool = False

    @property
    def where(self) -> RegionKey | None:
        if self.account is None or self.region is None:
            return None
        return RegionKey(self.account, self.region)

    @property
    def ended(self) -> bool:
        return self.vanished or (self.task is not None and self.task.ended)

    @property
    def result(self) -> str:
        """``completed``, ``failed``, ``vanished``, ``running`` or ``not_found``."""
        if self.task is None:
            return "not_found"
        if self.vanished:
            return "vanished"
        if self.task.status == COMPLETED:
            return "completed"
        if self.task.failed:
            return "failed"
        return "running"

    def as_json(self) -> dict[str, Any]:
        task = self.task
        return {
            "task_id": self.task_id,
            "result": self.result,
            "status": task.status if task else None,
            "image_id": task.image_id if task else None,
            "status_message": task.status_message if task else None,
            "phase": task.phase if task else None,
            "progress": task.progress if task else None,
            "account": self.account,
            "region": self.region,
        }


@dataclass
class Outcome:
    """How the wait ended: ``completed``, ``failed``, ``timeout`` or ``unknown``."""

    name: str
    code: int
    tasks: list[Watched]
    #: Regions that had not answered once when the wait ended.
    silent: list[RegionKey] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.name,
            "exit_status": self.code,
            "tasks": [watched.as_json() for watched in self.tasks],
        }


class Reporter(Protocol):
    """Where progress goes while waiting."""

    def changed(self, watched: Watched) -> None: ...

    def region_failed(self, key: RegionKey, error: str | None) -> None: ...

    def region_recovered(self, key: RegionKey) -> None: ...


class Waiter:
    """The wait's bookkeeping: which task is where, and when the wait is over.

    Pure apart from telling ``reporter``; :func:`poll_until_ended` polls.
    """

    def __init__(self, task_ids: Iterable[str], reporter: Reporter) -> None:
        self.tasks = {task_id: Watched(task_id) for task_id in task_ids}
        self.reporter = reporter
        #: Regions with at least one successful poll.
        self.answered: set[RegionKey] = set()
        self.failing: set[RegionKey] = set()
        #: Every region polled, as the poller set them up.
        self.regions: Sequence[RegionKey] = ()

    def lookups(self) -> dict[RegionKey, frozenset[str]]:
        """Per region, the task IDs its next poll must account for."""
        unfound = {w.task_id for w in self.tasks.values() if w.where is None}
        return {
            key: frozenset(
                unfound
                | {
                    w.task_id
                    for w in self.tasks.values()
                    if w.where == key and not w.ended
                }
            )
            for key in self.regions
        }

    def apply(self, polls: Iterable[RegionPoll]) -> None:
        for poll in polls:
            if not poll.ok:
                # Nothing in a failed poll is trusted: no task moves on it.
                if poll.key not in self.failing:
                    self.failing.add(poll.key)
                    self.reporter.region_failed(poll.key, poll.error)
                continue

            if poll.key in self.failing:
                self.failing.discard(poll.key)
                self.reporter.region_recovered(poll.key)
            self.answered.add(poll.key)
            self._apply_listing(poll)

    def _apply_listing(self, poll: RegionPoll) -> None:
        listed = deduplicate((*poll.active, *poll.resolved))

        for watched in self.tasks.values():
            if watched.ended or watched.where not in (None, poll.key):
                continue
            task = listed.get(watched.task_id)
            if task is None:
                # Only a lookup that asked for the task can say it is gone.
                if watched.task is not None and watched.task_id in poll.looked_up:
                    watched.vanished = True
                    self.reporter.changed(watched)
                continue
            if watched.where is None:
                watched.account, watched.region = poll.account, poll.region
            if task != watched.task:
                watched.task = task
                self.reporter.changed(watched)

    def outcome(self) -> Outcome | None:
        """The end of the wait, or ``None`` while it goes on."""
        tasks = list(self.tasks.values())
        everywhere = all(key in self.answered for key in self.regions)
        if everywhere and any(w.where is None for w in tasks):
            return Outcome("unknown", EXIT_UNKNOWN, tasks)
        if all(w.ended for w in tasks):
            if any(w.result != "completed" for w in tasks):
                return Outcome("failed", EXIT_FAILED, tasks)
            return Outcome("completed", EXIT_COMPLETED, tasks)
        return None

    def timed_out(self) -> Outcome:
        silent = [key for key in self.regions if key not in self.answered]
        return Outcome("timeout", EXIT_TIMEOUT, list(self.tasks.values()), silent)


async def poll_until_ended(
    settings: Settings, waiter: Waiter, interval: float
) -> Outcome:
    """Poll every ``interval`` seconds until the wait has an outcome.

    It never gives up by itself: the caller bounds it with ``asyncio.timeout``
    and asks :meth:`Waiter.timed_out` for the outcome when that fires.
    """
    from monitor.ec2 import Poller

    poll_settings = settings.poll.model_copy(update={"interval": interval})
    loop = asyncio.get_running_loop()

    async with Poller(settings.targets, poll_settings) as poller:
        waiter.regions = poller.regions
        while True:
            started = loop.time()
            waiter.apply(await poller.poll(waiter.lookups()))
            outcome = waiter.outcome()
            if outcome is not None:
                return outcome
            await asyncio.sleep(max(0.0, started + interval - loop.time()))


class LineReporter:
    """One line per change: for logs, CI output and anything not a terminal."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval

    def changed(self, watched: Watched) -> None:
        self._say(progress_line(watched))

    def region_failed(self, key: RegionKey, error: str | None) -> None:
        self._say(
            f"{_where(key)}: poll failed, retrying every "
            f"{duration(self.interval)}: {safe(error)}"
        )

    def region_recovered(self, key: RegionKey) -> None:
        self._say(f"{_where(key)}: poll recovered")

    def _say(self, text: str) -> None:
        self.stream.write(f"{iso_time(time.time())} {text}\n")
        self.stream.flush()


class BarReporter:
    """A rich bar per task, on a terminal."""

    def __init__(self, progress: Progress, task_ids: Iterable[str]) -> None:
        self.progress = progress
        self.bars: dict[str, TaskID] = {
            task_id: progress.add_task(
                safe(task_id), total=100, where="", state="looking for it"
            )
            for task_id in task_ids
        }

    @staticmethod
    def columns() -> list[ProgressColumn]:
        # markup=False: phases and messages come from the API.
        return [
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[where]}", markup=False),
            TextColumn("{task.fields[state]}", markup=False),
        ]

    def changed(self, watched: Watched) -> None:
        task = watched.task
        if task is None:
            return
        done = 1.0 if task.status == COMPLETED else task.progress or 0.0
        state = "vanished" if watched.vanished else state_text(task)
        self.progress.update(
            self.bars[watched.task_id],
            completed=done * 100,
            where=_where(watched.where),
            state=state,
        )
        if watched.ended:
            self.progress.stop_task(self.bars[watched.task_id])

    def region_failed(self, key: RegionKey, error: str | None) -> None:
        self.progress.console.print(
            Text(f"{_where(key)}: poll failed, retrying: {safe(error)}", "yellow")
        )

    def region_recovered(self, key: RegionKey) -> None:
        self.progress.console.print(Text(f"{_where(key)}: poll recovered"))


def progress_line(watched: Watched) -> str:
    """A task's state as the line reporter prints it on each change."""
    words = [safe(watched.task_id), _where(watched.where)]
    task = watched.task
    if watched.vanished:
        words.append("vanished: no longer listed, and not found by ID")
    elif task is not None:
        words.append(state_text(task))
        if task.progress is not None:
            words.append(percent(task.progress))
        if task.disks and not task.ended:
            words.append(f"disks={disks_text(task)}")
    return " ".join(words)


def result_line(watched: Watched) -> str:
    """The line per task on stdout when the wait is over."""
    words = [safe(watched.task_id), watched.result]
    task = watched.task
    if watched.where is not None:
        words.append(_where(watched.where))
    if task is not None and task.status == COMPLETED:
        words.append(safe(task.image_id))
    elif task is not None and task.failed:
        words.append(safe(task.status_message))
    elif task is not None and not watched.vanished:
        words.append(state_text(task) + " " + percent(task.progress))
    return " ".join(word for word in words if word).rstrip()


async def _wait(
    settings: Settings, args: argparse.Namespace, interval: float, interactive: bool
) -> Outcome:
    task_ids: list[str] = args.task_ids
    if not interactive:
        waiter = Waiter(task_ids, LineReporter(sys.stderr, interval))
        return await _bounded(settings, waiter, interval, args.timeout)

    console = Console(stderr=True)
    with Progress(*BarReporter.columns(), console=console) as progress:
        waiter = Waiter(task_ids, BarReporter(progress, task_ids))
        return await _bounded(settings, waiter, interval, args.timeout)


async def _bounded(
    settings: Settings, waiter: Waiter, interval: float, seconds: float
) -> Outcome:
    try:
        async with asyncio.timeout(seconds):
            return await poll_until_ended(settings, waiter, interval)
    except TimeoutError:
        return waiter.timed_out()


def _explain(outcome: Outcome, timeout: float) -> None:
    """Why the exit status is not 0, on stderr, whatever the output format."""
    for watched in outcome.tasks:
        task = watched.task
        if outcome.name == "unknown" and task is None:
            _error(f"{safe(watched.task_id)}: not found in any configured region")
        elif watched.vanished:
            _error(
                f"{safe(watched.task_id)}: vanished: no longer listed and not "
                "found by ID"
            )
        elif task is not None and task.failed:
            _error(f"{safe(watched.task_id)} failed: {safe(task.status_message)}")
        elif outcome.name == "timeout" and not watched.ended:
            state = "not found" if task is None else state_text(task)
            _error(f"{safe(watched.task_id)}: still {state} after {duration(timeout)}")
    if outcome.silent:
        regions = ", ".join(_where(key) for key in outcome.silent)
        _error(f"never answered: {regions}")


def _where(key: RegionKey | None) -> str:
    return "" if key is None else f"{safe(key.account)}/{safe(key.region)}"


def _error(message: str) -> None:
    print(f"{_PROGRAM}: {message}", file=sys.stderr)
