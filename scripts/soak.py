"""Soak: thousands of imports start and end; the daemon's footprint must not grow.

The simulator (``mixed`` scenario, sped up) starts thousands of tasks in the
first minutes, and this script keeps calling ImportImage at a steady rate
for the whole run, so new tasks keep arriving, progressing and ending. The
daemon polls every few seconds and drops ended tasks after a short
``keep_ended``. Every ``--every`` seconds the script samples the daemon's
RSS, open files, exported series, tracked tasks, state file size and poll
duration.

The verdict compares the two halves of the samples taken after a warm-up:
the warm-up lasts until the scenario's last task has ended and has been
dropped, so both halves see the same steady load from the import feed.

Run by hand, not by ``make test``; it stops by itself:

    .venv/bin/python scripts/soak.py                # 10 minutes
    .venv/bin/python scripts/soak.py --minutes 3 --keep-ended 30s --no-write

The samples and the verdict are printed and written into
docs/reliability.md between the ``soak`` markers. The process harness is
``scripts/load_test.py``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import structlog
from botocore.config import Config
from load_test import (
    ACCESS_KEY,
    DOC,
    REGIONS,
    ROOT,
    SECRET_KEY,
    LogTail,
    Rig,
    commit,
    count_series,
    machine,
    metric_max,
    metric_sum,
    mib,
    open_files,
    poll_of,
    replace_section,
    rss_bytes,
    scrape,
    table,
)

log = structlog.get_logger("soak")

#: How much a measure may rise in the second half over the first half's
#: highest value and still count as flat.
TOLERANCES = {"RSS": 0.10, "series": 0.10}
FD_TOLERANCE = 3

SCENARIO = "mixed"

#: An ImportImage task lives 1.7 simulated hours at the median and under
#: four hours in 99 of 100 draws, so four hours covers all but a few.
IMPORT_HOURS = 4.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The daemon at one moment.

    ``rss_peak`` and ``poll_seconds`` cover the time since the previous
    sample: RSS swings by tens of MiB within one poll as the exposition is
    rebuilt, so one reading every ten seconds would mostly measure when it
    was taken.
    """

    at: float
    rss: int
    rss_peak: int
    fds: int
    series: int
    tasks: int
    db_bytes: int
    poll_seconds: float
    polls: int
    skipped: float
    imports: int
    events: Counter[str]


@dataclass
class Imports:
    """What the ImportImage feed did."""

    started: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def feed(
    endpoint: str,
    regions: Sequence[str],
    rate: float,
    stop_at: float,
    imports: Imports,
) -> None:
    """Call ImportImage ``rate`` times a second, round robin over the regions."""
    session = aioboto3.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
    )
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 2},
        connect_timeout=5,
        read_timeout=20,
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                session.client(
                    "ec2", region_name=region, endpoint_url=endpoint, config=config
                )
            )
            for region in regions
        ]
        began = time.monotonic()
        most = int(rate * (stop_at - began)) + 1
        for number in range(most):
            # Paced against the start, so a slow answer is caught up on
            # rather than lowering the rate for the rest of the run.
            delay = began + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= stop_at:
                return
            try:
                await clients[number % len(clients)].import_image(**request(number))
            except Exception as error:
                # Any failure is counted and reported; the feed goes on.
                imports.errors[type(error).__name__] += 1
                continue
            imports.started += 1


def request(number: int) -> dict[str, Any]:
    """ImportImage arguments for one to three disks of a made-up VM."""
    disks = 1 + number % 3
    return {
        "Description": f"soak-{number:06d}",
        "ClientToken": str(uuid.uuid4()),
        "DiskContainers": [
            {
                "Description": f"soak-{number:06d} disk {disk + 1}",
                "Format": "VMDK",
                "UserBucket": {
                    "S3Bucket": "soak-imports",
                    "S3Key": f"soak-{number:06d}/disk{disk + 1}.vmdk",
                },
            }
            for disk in range(disks)
        ],
    }


def scenario_seconds(tasks: int, regions: Sequence[str], seed: int) -> float:
    """Simulated seconds from the simulator's start to its scenario's last end."""
    from monitor.simulator.protocol import derived_account
    from monitor.simulator.scenarios import generate

    account = derived_account(ACCESS_KEY)
    latest = 0.0
    for region in regions:
        for timeline in generate(SCENARIO, seed, account, region, 0.0, tasks):
            ended = timeline.ended_at
            latest = max(latest, ended if ended is not None else 0.0)
    return latest


class PeakRss:
    """The daemon's highest RSS since the last :meth:`take`, read twice a second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0

    async def watch(self, stop_at: float) -> None:
        most = int((stop_at - time.monotonic()) * 2) + 2
        for _ in range(most):
            if time.monotonic() >= stop_at:
                return
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(0.5)

    def take(self) -> int:
        peak, self.peak = max(self.peak, rss_bytes(self.pid)), 0
        return peak


def file_bytes(path: Path) -> int:
    """The SQLite file with its write-ahead log and shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += Path(f"{path}{suffix}").stat().st_size
    return total


def events_by_name(body: bytes) -> Counter[str]:
    counts: Counter[str] = Counter()
    pattern = re.compile(rb'^ec2_import_events_total\{.*event="([a-z_]+)".* (\S+)$')
    for line in body.splitlines():
        found = pattern.match(line)
        if found:
            counts[found.group(1).decode()] += int(float(found.group(2)))
    return counts


async def take_sample(
    session: aiohttp.ClientSession,
    rig: Rig,
    tail: LogTail,
    began: float,
    imports: Imports,
    peak: PeakRss,
) -> Sample:
    assert rig.daemon is not None
    pid = rig.daemon.pid
    polls = [p for p in map(poll_of, tail.read()) if p is not None]
    body = await scrape(session, rig.metrics_url)
    last_region_poll = metric_max(body, "ec2_import_poll_duration_seconds")
    return Sample(
        at=time.monotonic() - began,
        rss=rss_bytes(pid),
        rss_peak=peak.take(),
        fds=open_files(pid),
        series=count_series(body),
        tasks=int(metric_sum(body, "ec2_import_tasks")),
        db_bytes=file_bytes(rig.state_path),
        poll_seconds=max((p.seconds for p in polls), default=last_region_poll),
        polls=len(polls),
        skipped=metric_sum(body, "ec2_import_polls_skipped_total"),
        imports=imports.started,
        events=events_by_name(body),
    )


# The verdict


@dataclass(frozen=True, slots=True)
class Judgement:
    measure: str
    first: tuple[float, float]
    second: tuple[float, float]
    allowed: float
    slope: float

    @property
    def flat(self) -> bool:
        return self.second[1] <= self.first[1] + self.allowed


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per minute."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    rise = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return rise / spread * 60.0


def judge(samples: Sequence[Sample], warmup: float) -> list[Judgement]:
    """Flat means: the second half's highest value is within tolerance of the
    first half's highest (RSS and series 10 %, open files 3).

    RSS is each window's peak. Falling is flat too: a leak only ever adds.
    """
    steady = [s for s in samples if s.at >= warmup]
    middle = len(steady) // 2
    first, second = steady[:middle], steady[middle:]
    if len(first) < 2 or len(second) < 2:
        return []

    verdicts = []
    measures: tuple[tuple[str, Callable[[Sample], float]], ...] = (
        ("RSS", lambda s: float(s.rss_peak)),
        ("open files", lambda s: float(s.fds)),
        ("series", lambda s: float(s.series)),
    )
    for name, value in measures:
        one = [value(s) for s in first]
        two = [value(s) for s in second]
        share = TOLERANCES.get(name)
        allowed = max(one) * share if share is not None else float(FD_TOLERANCE)
        verdicts.append(
            Judgement(
                measure=name,
                first=(min(one), max(one)),
                second=(min(two), max(two)),
                allowed=allowed,
                slope=slope_per_minute([(s.at, value(s)) for s in second]),
            )
        )
    return verdicts


def shown(measure: str, value: float) -> str:
    return mib(value) if measure == "RSS" else f"{value:.0f}"


def verdict_rows(verdicts: Sequence[Judgement]) -> list[tuple[str, ...]]:
    return [
        (
            v.measure,
            f"{shown(v.measure, v.first[0])} .. {shown(v.measure, v.first[1])}",
            f"{shown(v.measure, v.second[0])} .. {shown(v.measure, v.second[1])}",
            f"+{shown(v.measure, v.allowed)}",
            f"{shown(v.measure, v.slope)}/min",
            "flat" if v.flat else "GROWING",
        )
        for v in verdicts
    ]


VERDICT_HEADER = (
    "measure",
    "first half",
    "second half",
    "allowed rise",
    "second-half slope",
    "verdict",
)
SAMPLE_HEADER = (
    "t",
    "RSS",
    "RSS peak",
    "fds",
    "series",
    "tasks",
    "state file",
    "slowest poll",
    "polls",
    "skipped",
    "imports",
)


def sample_rows(samples: Sequence[Sample], warmup: float) -> list[tuple[str, ...]]:
    return [
        (
            f"{s.at:.0f} s{'' if s.at >= warmup else ' (warm-up)'}",
            mib(s.rss),
            mib(s.rss_peak),
            f"{s.fds}",
            f"{s.series}",
            f"{s.tasks}",
            mib(s.db_bytes),
            f"{s.poll_seconds:.2f} s",
            f"{s.polls}",
            f"{s.skipped:g}",
            f"{s.imports}",
        )
        for s in samples
    ]


def markdown(args: argparse.Namespace, run: Run, verdicts: Sequence[Judgement]) -> str:
    samples, warmup, imports = run.samples, run.warmup, run.imports
    described = ", ".join(f"{key} {value}" for key, value in run.host.items())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    last = samples[-1].events if samples else Counter()
    ended = last["task_completed"] + last["task_failed"]
    errors = ", ".join(f"{n} {kind}" for kind, n in imports.errors.most_common())
    stop = "killed" if run.stop_seconds is None else f"{run.stop_seconds:.2f} s"
    return "\n\n".join(
        [
            f"Measured {when} at commit {commit()} on: {described}.",
            f"Command: `{' '.join(['python', 'scripts/soak.py', *args.argv])}` "
            f"({args.minutes:g} min; scenario `{SCENARIO}`, {args.tasks} tasks in "
            f"each of {len(args.regions)} regions, simulator at {args.speed:g}x; "
            f"ImportImage {args.rate:g}/s; poll interval {args.interval}, "
            f"keep_ended {args.keep_ended}).",
            f"Over the run the daemon discovered {last['task_discovered']} tasks "
            f"and saw {ended} of them end ({last['task_completed']} completed, "
            f"{last['task_failed']} failed); the feed started "
            f"{imports.started} imports ({errors or 'no errors'}). "
            f"The daemon stopped {stop} after SIGTERM.",
            f"Warm-up: the first {warmup:.0f} s (until the scenario's last task "
            "and nearly every import started at the beginning has ended, plus "
            "keep_ended, plus two poll intervals); the verdict compares the two "
            "halves of the samples after it. RSS is judged on each window's peak.",
            table(VERDICT_HEADER, verdict_rows(verdicts))
            if verdicts
            else too_short(warmup),
            table(SAMPLE_HEADER, sample_rows(samples, warmup)),
        ]
    )


# The run


@dataclass
class Run:
    """One soak: the samples and what the report says about the run."""

    host: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    warmup: float = 0.0
    imports: Imports = field(default_factory=Imports)
    stop_seconds: float | None = None


async def soak(args: argparse.Namespace, workdir: Path) -> Run:
    rig = Rig(
        workdir=workdir,
        scenario=SCENARIO,
        tasks=args.tasks,
        speed=args.speed,
        regions=args.regions,
        interval=args.interval,
        keep_ended=args.keep_ended,
    )
    # Before the rig starts, so the load average is other work's, not ours.
    run = Run(host=machine())
    samples, imports = run.samples, run.imports
    async with aiohttp.ClientSession() as session:
        try:
            log.info("starting", workdir=str(workdir), minutes=args.minutes)
            simulator_began = time.monotonic()
            await rig.start(session)
            assert rig.daemon is not None
            began = time.monotonic()
            stop_at = began + args.minutes * 60.0
            lives = max(
                scenario_seconds(args.tasks, args.regions, args.seed),
                IMPORT_HOURS * 3600.0,
            )
            run.warmup = max(
                0.0,
                lives / args.speed
                + args.keep_ended_seconds
                + 2 * args.interval_seconds
                - (began - simulator_began),
            )
            feeder = asyncio.create_task(
                feed(rig.endpoint, args.regions, args.rate, stop_at, imports)
            )
            peak = PeakRss(rig.daemon.pid)
            watcher = asyncio.create_task(peak.watch(stop_at + args.every))
            tail = LogTail(rig.daemon_log)

            for _ in range(int(args.minutes * 60 / args.every) + 2):
                samples.append(
                    await take_sample(session, rig, tail, began, imports, peak)
                )
                latest = samples[-1]
                log.info(
                    "sampled",
                    t=round(latest.at),
                    rss_mib=round(latest.rss / 1024**2, 1),
                    fds=latest.fds,
                    series=latest.series,
                    tasks=latest.tasks,
                    imports=latest.imports,
                )
                if rig.daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited; see {workdir}")
                wait = min(args.every, stop_at - time.monotonic())
                if wait <= 0:
                    break
                await asyncio.sleep(wait)

            await asyncio.wait_for(feeder, timeout=30)
            watcher.cancel()
        finally:
            await rig.stop()
    run.stop_seconds = rig.stop_seconds
    return run


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="default 10")
    parser.add_argument("--every", type=float, default=10.0, help="sample period, s")
    parser.add_argument(
        "--regions", type=int, default=4, help=f"1..{len(REGIONS)} (default 4)"
    )
    parser.add_argument(
        "--tasks", type=int, default=500, help="scenario tasks per region (500)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=300.0,
        help="simulated seconds per real second (default 300)",
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, help="ImportImage calls per second (10)"
    )
    parser.add_argument("--interval", default="5s", help="poll interval (default 5s)")
    parser.add_argument(
        "--keep-ended", default="2m", help="the daemon's keep_ended (default 2m)"
    )
    parser.add_argument("--seed", type=int, default=0, help="scenario seed")
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not update {DOC.name}"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs and state in a temp dir"
    )
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 120:
        parser.error("--minutes is more than 0 and at most 120")
    if not 1 <= args.regions <= len(REGIONS):
        parser.error(f"--regions is 1..{len(REGIONS)}")
    if args.tasks < 1:
        parser.error("--tasks is at least 1: readiness waits for a task in /metrics")
    if args.speed <= 0 or args.rate <= 0 or args.every < 1:
        parser.error("--speed and --rate are positive, --every at least 1")
    for flag, value in (
        ("--interval", args.interval),
        ("--keep-ended", args.keep_ended),
    ):
        if not re.fullmatch(r"\d+[sm]", value):
            parser.error(f"{flag} is whole seconds or minutes, like 5s or 2m")
    args.argv = list(argv)
    args.regions = REGIONS[: args.regions]
    args.interval_seconds = _seconds(args.interval)
    args.keep_ended_seconds = _seconds(args.keep_ended)
    return args


def _seconds(text: str) -> float:
    return float(text[:-1]) * (60.0 if text.endswith("m") else 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="ec2-import-soak-"))
    try:
        run = asyncio.run(soak(args, workdir))
    finally:
        if args.keep:
            log.info("kept", workdir=str(workdir))
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    verdicts = judge(run.samples, run.warmup)
    print()
    print(table(SAMPLE_HEADER, sample_rows(run.samples, run.warmup)))
    print()
    if verdicts:
        print(table(VERDICT_HEADER, verdict_rows(verdicts)))
    else:
        print(too_short(run.warmup))
    if not args.no_write:
        replace_section(DOC, "soak", markdown(args, run, verdicts))
        log.info("written", doc=str(DOC.relative_to(ROOT)))
    if not verdicts:
        return 2
    return 0 if all(v.flat for v in verdicts) else 1


def too_short(warmup: float) -> str:
    return (
        f"Too few samples after the {warmup:.0f} s warm-up for a verdict: "
        "run longer, or shorten --keep-ended."
    )


if __name__ == "__main__":
    sys.exit(main())
