"""Tasks drawn for people: rich tables and bars on a terminal, plain lines off one.

Shared by ``watch`` and ``wait``. Every piece of text that comes from the API
(descriptions, failure messages, phases) goes through :func:`safe` and into a
:class:`rich.text.Text`, never into a markup string: an import's description
is written by whoever started it, and neither an escape sequence nor a
``[link=...]`` tag in it may reach the terminal as anything but text.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from monitor.events import iso_time
from monitor.model import COMPLETED, ImportTask, SnapshotDisk
from monitor.tracker import RegionHealth, TrackedTask, estimate_eta

GIB = 2.0**30

#: Descriptions are cut to this many characters in a table cell or a line.
MAX_DESCRIPTION = 60

STALLED = "STALLED"
OVERDUE = "OVERDUE"


def safe(text: object) -> str:
    """Text with every non-printable character shown as its escape.

    ``str.isprintable`` is false for control characters (ESC, BEL, CR) and
    for format characters such as the bidirectional overrides, which could
    otherwise make a line read differently from what it holds.
    """
    if text is None:
        return ""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in str(text)
    )


def percent(ratio: object) -> str:
    """A 0..1 ratio as a whole percentage; empty when there is none."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float):
        return "" if ratio is None else safe(ratio)
    return f"{ratio * 100:.0f}%"


def columns(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain table: left-aligned columns two spaces apart, cells made safe."""
    cells = [[safe(cell) for cell in row] for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines) + "\n"


def duration(seconds: float | None) -> str:
    """A rough duration for people: ``45s``, ``12m``, ``3h05m``, ``2d4h``."""
    if seconds is None:
        return ""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def size(size_bytes: float | None) -> str:
    """Bytes as GiB with one decimal; empty while the API still says 0."""
    if not size_bytes:
        return ""
    return f"{size_bytes / GIB:.1f} GiB"


def disk_ratio(disk: SnapshotDisk) -> float | None:
    """How far a disk is; a completed disk no longer carries ``Progress``."""
    if disk.status == COMPLETED:
        return 1.0
    return disk.progress


def disks_text(task: ImportTask) -> str:
    """Every disk in a few characters: ``disk0:100% disk1:45% disk2:active``."""
    return " ".join(
        f"{disk.device}:{percent(disk_ratio(disk)) or safe(disk.status) or '?'}"
        for disk in task.disks
    )


def state_text(task: ImportTask) -> str:
    """The status, then the phase while active, the AMI or the failure reason."""
    detail = task.phase if task.phase is not None else task.status_message
    if task.status == COMPLETED:
        detail = task.image_id
    return safe(task.status) + (f" {safe(detail)}" if detail else "")


def short(text: str | None, limit: int = MAX_DESCRIPTION) -> str:
    cleaned = safe(text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def markers(tracked: TrackedTask) -> list[str]:
    found = []
    if tracked.stalled:
        found.append(STALLED)
    if tracked.overdue:
        found.append(OVERDUE)
    return found


def age(tracked: TrackedTask, now: float) -> float:
    """Seconds since first seen, up to now or to the end of the task."""
    return (tracked.ended_at or now) - tracked.first_seen


def task_line(tracked: TrackedTask, now: float) -> str:
    """One plain line about a task, for logs and pipes: no colour, no escapes."""
    task = tracked.task
    words = [
        iso_time(now),
        safe(task.task_id),
        f"{safe(tracked.account)}/{safe(tracked.region)}",
        state_text(task),
    ]
    if task.progress is not None:
        words.append(percent(task.progress))
    if task.disks:
        words.append(f"disks={disks_text(task)}")
    words.append(f"age={duration(age(tracked, now))}")
    eta = estimate_eta(tracked, now)
    if eta is not None:
        words.append(f"eta={duration(eta)}")
    words.extend(markers(tracked))
    if task.description:
        words.append(f'description="{short(task.description)}"')
    return " ".join(words)


def region_line(health: RegionHealth, now: float) -> str:
    return (
        f"{iso_time(now)} {safe(health.account)}/{safe(health.region)} "
        f"poll failed: {safe(health.error)}"
    )


#: Characters of a progress bar in the ``watch`` table.
BAR_WIDTH = 14


def progress_cell(task: ImportTask) -> RenderableType:
    """The task's bar, and under it one bar per disk with the disk's size.

    A disk without a number yet (pending, or queued behind another disk)
    shows its status instead of a bar.
    """
    grid = Table.grid(padding=(0, 1))
    overall = 1.0 if task.status == COMPLETED else task.progress
    grid.add_row(
        Text("task"),
        _bar(overall),
        Text(percent(overall).rjust(4)),
        Text(size(task.total_size_bytes), style="dim"),
    )
    for disk in task.disks:
        ratio = disk_ratio(disk)
        grid.add_row(
            Text(disk.device, style="dim"),
            _bar(ratio) if ratio is not None else Text(safe(disk.status), style="dim"),
            Text(percent(ratio).rjust(4)),
            Text(size(disk.size_bytes), style="dim"),
        )
    return grid


def tasks_table(
    tasks: Sequence[TrackedTask],
    regions: Iterable[RegionHealth],
    now: float,
    interval: float,
) -> RenderableType:
    """The ``watch`` screen: a row per task with its bars, then region trouble.

    About 115 columns wide with three disks; narrower terminals cut the
    description and phase first.
    """
    heading = Text(
        f"EC2 image imports at {iso_time(now)} "
        f"(polled every {duration(interval)}; Ctrl-C quits)",
        style="bold",
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("TASK", no_wrap=True, min_width=12)
    table.add_column("WHERE", no_wrap=True, min_width=9)
    table.add_column("PHASE", min_width=9)
    table.add_column("PROGRESS", no_wrap=True)
    table.add_column("AGE", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)

    for tracked in tasks:
        task = tracked.task
        name = Text(safe(task.task_id))
        if task.description:
            name.append("\n" + short(task.description, len(name)), style="dim")
        phase = Text(state_text(task), style=_status_style(task))
        for marker in markers(tracked):
            phase.append(f"\n{marker}", style="bold red")
        table.add_row(
            name,
            Text(f"{safe(tracked.account)}\n{safe(tracked.region)}"),
            phase,
            progress_cell(task),
            Text(duration(age(tracked, now))),
            Text(duration(estimate_eta(tracked, now))),
        )

    notes = [
        Text(
            f"{safe(h.account)}/{safe(h.region)}: poll failed: {safe(h.error)}",
            style="yellow",
        )
        for h in regions
        if not h.ok
    ]
    if not tasks:
        notes.insert(0, Text("No active imports.", style="dim"))
    return Group(heading, table, *notes)


def _bar(ratio: float | None) -> ProgressBar:
    if ratio is None:
        # No number yet: a bar that shows work without claiming an amount.
        return ProgressBar(total=None, width=BAR_WIDTH, pulse=True)
    return ProgressBar(total=100.0, completed=ratio * 100, width=BAR_WIDTH)


def _status_style(task: ImportTask) -> str:
    if task.status == COMPLETED:
        return "green"
    if task.failed:
        return "red"
    return ""


def duration_argument(text: str) -> float:
    """An argparse ``type`` for durations such as ``"30s"`` or ``"6h"``."""
    from monitor.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is too short: the minimum is 1s")
    return seconds
