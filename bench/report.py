"""Tables and the RESULTS.md text: Markdown, readable in a terminal too."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clients import AWS_CLI, Result

MIB = 1024 * 1024

#: Libraries whose versions decide the figures.
LIBRARIES = (
    "aioboto3",
    "aiobotocore",
    "botocore",
    "boto3",
    "aiohttp",
    "prometheus_client",
    "pydantic",
    "structlog",
)


@dataclass(frozen=True, slots=True)
class GridPoint:
    """Every client at one (regions, active tasks, latency)."""

    regions: int
    active: int
    latency: float
    cold: list[Result]
    steady: list[Result]
    render_seconds: float
    render_gzip_seconds: float
    render_bytes: int
    render_series: int

    @property
    def title(self) -> str:
        return (
            f"{self.regions} region(s) x {self.active} active tasks, "
            f"{self.latency * 1000:g} ms latency"
        )

    def find(self, client: str) -> Result:
        for result in (*self.cold, *self.steady):
            if result.client == client:
                return result
        raise KeyError(client)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with columns padded to line up in a terminal."""
    widths = [
        max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))
    ]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        for row in (header, ["-" * w for w in widths], *rows)
    ]
    return "\n".join(line + " |" for line in lines)


def seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def factor(value: float) -> str:
    return f"{value:.2f}x"


def result_rows(results: Sequence[Result], baseline: Result) -> list[list[str]]:
    rows = []
    for result in results:
        tasks = str(result.tasks) if result.tasks >= 0 else "differs!"
        rows.append(
            [
                result.client,
                seconds(result.wall),
                seconds(result.cpu),
                f"{result.rss_mib:.0f}",
                f"{result.requests:g}",
                tasks,
                seconds(result.server_cpu),
                factor(result.wall / baseline.wall) if baseline.wall else "-",
            ]
        )
    return rows


RESULT_HEADER = (
    "client",
    "wall s",
    "CPU s",
    "peak RSS MiB",
    "requests",
    "tasks",
    "simulator CPU s",
    "its wall / monitor's",
)


def grid_point_text(point: GridPoint) -> str:
    """One grid point: the one-pass processes, then the steady state."""
    once = point.find("monitor once")
    poll = point.find("monitor poll")
    seen = {result.tasks for result in (*point.cold, *point.steady)}
    warning = (
        "**The clients did not all see the same tasks: these figures are not "
        f"comparable ({sorted(seen)}).**"
        if len(seen) > 1
        else "Every client saw the same tasks."
    )
    return "\n\n".join(
        [
            f"### {point.title}",
            warning,
            "One pass, each client a fresh process (median of the repeats):",
            table(RESULT_HEADER, result_rows(point.cold, once)),
            "Steady state, in-process: the daemon's polls after the first "
            "(median), and the listing alone inside the script processes above "
            "(median; clients made beforehand). The CLI has no steady state, so "
            "its one-pass figure is repeated. RSS is the whole process's peak:",
            table(RESULT_HEADER, result_rows(point.steady, poll)),
            f"/metrics render at this scale: {seconds(point.render_seconds)} s "
            f"for the text, {seconds(point.render_gzip_seconds)} s with its gzipped "
            f"copy as the daemon makes them; {point.render_bytes / MIB:.1f} MiB, "
            f"{point.render_series} series.",
        ]
    )


RATIO_HEADER = (
    "grid point",
    "once: CLI/mon",
    "once: boto3/mon",
    "once: mon/floor",
    "poll: CLI/mon",
    "poll: boto3/mon",
    "poll: mon/floor",
)


def ratio_rows(points: Sequence[GridPoint]) -> list[list[str]]:
    """Speed-ups over the CLI and boto3 (above 1: the monitor is faster), and
    the monitor's slow-down against the floor (1 would be as fast)."""
    rows = []
    for point in points:
        once, poll = point.find("monitor once"), point.find("monitor poll")
        cli = point.find("aws cli loop")
        rows.append(
            [
                point.title,
                factor(cli.wall / once.wall),
                factor(point.find("boto3 loop").wall / once.wall),
                factor(once.wall / point.find("floor").wall),
                factor(cli.wall / poll.wall),
                factor(point.find("boto3 round").wall / poll.wall),
                factor(poll.wall / point.find("floor round").wall),
            ]
        )
    return rows


def target_lines(point: GridPoint) -> list[str]:
    """The targets at the target point, each said met or not, both ways."""
    once, poll = point.find("monitor once"), point.find("monitor poll")
    cli = point.find("aws cli loop")
    checks = [
        ("at least 5x faster than the AWS CLI loop", cli.wall / once.wall, 5.0, True),
        ("", cli.wall / poll.wall, 5.0, True),
        (
            "at least 2x faster than the boto3 loop",
            point.find("boto3 loop").wall / once.wall,
            2.0,
            True,
        ),
        ("", point.find("boto3 round").wall / poll.wall, 2.0, True),
        (
            "within 2x of the floor",
            once.wall / point.find("floor").wall,
            2.0,
            False,
        ),
        ("", poll.wall / point.find("floor round").wall, 2.0, False),
    ]
    lines = []
    for index in range(0, len(checks), 2):
        name = checks[index][0]
        parts = []
        for (_, value, bound, higher_is_better), how in zip(
            checks[index : index + 2], ("`once`", "steady poll"), strict=True
        ):
            met = value >= bound if higher_is_better else value <= bound
            parts.append(f"{how} {factor(value)} ({'met' if met else 'NOT met'})")
        lines.append(f"- {name}: " + "; ".join(parts))
    return lines


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / (1024 * 1024):.1f} GiB"
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in LIBRARIES
    )
    cli = subprocess.run(
        [str(AWS_CLI), "--version"], capture_output=True, text=True, check=False
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": versions,
        "aws cli": (cli.stdout or cli.stderr).strip(),
    }


def load() -> str:
    """The load averages now: other work on the machine shows up here."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
