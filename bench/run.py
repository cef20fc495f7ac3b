"""``make bench``: this monitor against the AWS CLI, a boto3 loop and the floor.

Each grid point (regions x active tasks per region x simulated latency)
runs every client against the same simulator, which runs as a process of
its own with its clock frozen, so all of them list the very same tasks:

- ``monitor once``: ``python -m monitor once --json``, a whole process;
- ``monitor poll``: the daemon's ``Monitor.poll_once``, polled in a row;
- ``aws cli loop``: ``aws ec2 describe-import-image-tasks`` per region;
- ``boto3 loop``: boto3's paginator over the regions, as a cron script;
- ``floor``: aiohttp and xml.etree, concurrent over the regions.

Then the state at 20,000 tasks (memory, scrapes), the cost curve over the
number of tasks, a profile of one large poll, and garbage-collector
settings. Tables are printed as they are made and written to RESULTS.md.
Figures are noisy, above all on a shared machine: compare ratios within one
run, not figures across runs.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from clients import ROOT, Clients, Result, median_result
from report import (
    MIB,
    RATIO_HEADER,
    GridPoint,
    factor,
    grid_point_text,
    load,
    machine,
    ratio_rows,
    seconds,
    table,
    target_lines,
)
from simproc import REGIONS, SimulatorProcess, tasks_for_active

from monitor.config import PollSettings

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

#: Text after this line in RESULTS.md is written by people and kept.
NOTES_MARKER = "<!-- Everything below this line is kept when the benchmark runs. -->"

TARGET = (16, 2000, 0.05)

_N = TypeVar("_N", int, float)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run measures, and how often."""

    name: str
    regions: tuple[int, ...]
    tasks: tuple[int, ...]
    latencies: tuple[float, ...]
    repeat: int
    #: Daemon polls per process, the first one included.
    polls: int
    curve: tuple[int, ...]
    #: Regions x active tasks of the large state: memory and scrapes.
    big: tuple[int, int]
    #: Regions x active tasks of the profile and the GC settings.
    experiment: tuple[int, int]
    gc_threshold: str


FULL = Plan(
    name="full",
    regions=(1, 16),
    tasks=(100, 2000),
    latencies=(0.0, 0.05),
    repeat=3,
    polls=4,
    curve=(100, 500, 1000, 2000, 4000),
    big=(10, 2000),
    experiment=(4, 2000),
    gc_threshold="50000,20,100",
)

QUICK = Plan(
    name="quick",
    regions=(1, 4),
    tasks=(100, 500),
    latencies=(0.0, 0.05),
    repeat=1,
    polls=2,
    curve=(100, 300, 600),
    big=(4, 500),
    experiment=(2, 500),
    gc_threshold="50000,20,100",
)


class Simulators:
    """Simulators by (active tasks, latency), started and warmed on demand."""

    def __init__(
        self, workdir: Path, counts: dict[int, int], monitor_path: Path
    ) -> None:
        self.workdir = workdir
        self.counts = counts
        self.monitor_path = monitor_path
        self.running: dict[tuple[int, float], SimulatorProcess] = {}

    def ensure(self, keys: list[tuple[int, float]], regions: int) -> None:
        """Start the missing ones, then warm them all at once.

        A region's tasks are built on its first request, which takes seconds
        at thousands of tasks; a first pass over every region keeps that out
        of the measurements. Warming runs in parallel, one simulator a core.
        """
        for key in keys:
            if key not in self.running:
                sim = SimulatorProcess(
                    self.counts[key[0]], key[1], self.workdir, self.monitor_path
                )
                sim.start()
                self.running[key] = sim

        def warm(sim: SimulatorProcess) -> None:
            page_size = PollSettings().page_size
            Clients(sim, self.workdir, page_size, 16, self.monitor_path).script(
                "floor.py", "warm-up", list(REGIONS[:regions])
            )

        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(warm, [self.running[key] for key in keys]))

    def get(self, key: tuple[int, float]) -> SimulatorProcess:
        return self.running[key]

    def stop(self, active: int | None = None) -> None:
        for key in list(self.running):
            if active is None or key[0] == active:
                self.running.pop(key).stop()


class Run:
    """One benchmark run: its plan, its simulators, and what it found."""

    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        only: set[str],
        monitor_path: Path,
    ) -> None:
        self.plan = plan
        self.only = only
        self.workdir = workdir
        self.monitor_path = monitor_path
        settings = PollSettings()
        self.page_size = settings.page_size
        self.concurrency = settings.concurrency
        wanted = {*plan.tasks, *plan.curve, plan.big[1], plan.experiment[1]}
        self.sims = Simulators(workdir, tasks_for_active(sorted(wanted)), monitor_path)
        self.sections: list[tuple[int, str]] = []
        self.points: list[GridPoint] = []

    def clients(self, sim: SimulatorProcess) -> Clients:
        return Clients(
            sim, self.workdir, self.page_size, self.concurrency, self.monitor_path
        )

    def say(self, text: str, order: int = 0) -> None:
        """Print a finished piece of the report and keep it for RESULTS.md.

        Pieces are printed as they are made; RESULTS.md has them by
        ``order``, so the grid's summary comes before the experiments that
        ran in the middle of the grid.
        """
        print(text + "\n", flush=True)
        self.sections.append((order, text))

    def text(self) -> str:
        ordered = sorted(self.sections, key=lambda section: section[0])
        return "\n\n".join(text for _, text in ordered)

    # The grid

    def grid(self, extras: Callable[[int], None]) -> None:
        plan = self.plan
        self.say(
            "## The grid\n\n"
            f"Page size {self.page_size} (the monitor's default) for every client; "
            f"the monitor and the floor poll {self.concurrency} regions at a time "
            "(the monitor's default concurrency). `requests` are counted in the "
            "simulator's request log. `simulator CPU s` is the server's share, "
            "spent on the other core. The last column divides each client's "
            "wall time by the monitor's (`once` in the first table, the steady "
            "poll in the second): above 1 the monitor is faster.",
            order=10,
        )
        for active in plan.tasks:
            keys = [(active, latency) for latency in plan.latencies]
            self.sims.ensure(keys, max(plan.regions))
            for latency in plan.latencies:
                clients = self.clients(self.sims.get((active, latency)))
                for regions in plan.regions:
                    point = self.grid_point(clients, regions, active, latency)
                    self.points.append(point)
                    self.say(grid_point_text(point), order=11)
            extras(active)
            self.sims.stop(active)

        self.say(
            "## Ratios\n\n"
            "`X/mon` is X's wall time over the monitor's: above 1 the monitor "
            "is faster. `mon/floor` is the monitor's over the floor's: 1 would "
            "be as fast as the work allows.\n\n"
            + table(RATIO_HEADER, ratio_rows(self.points)),
            order=20,
        )
        target = [p for p in self.points if (p.regions, p.active, p.latency) == TARGET]
        if target:
            self.say(
                f"## Targets at {target[0].title}\n\n"
                + "\n".join(target_lines(target[0])),
                order=21,
            )

    def grid_point(
        self, clients: Clients, regions: int, active: int, latency: float
    ) -> GridPoint:
        names = list(REGIONS[:regions])
        runs: dict[str, list[Result]] = {
            name: []
            for name in (
                "monitor once",
                "aws cli loop",
                "boto3 loop",
                "floor",
                "boto3 round",
                "floor round",
            )
        }
        # Repeats go round the clients, so a burst of noise hits them all.
        for _ in range(self.plan.repeat):
            runs["monitor once"].append(clients.once(names))
            runs["aws cli loop"].append(clients.cli_loop(names))
            for script, name in (
                ("boto3_loop.py", "boto3 loop"),
                ("floor.py", "floor"),
            ):
                process, listing = clients.script(script, name, names)
                runs[name].append(process)
                runs[listing.client].append(listing)
        medians = {name: median_result(name, results) for name, results in runs.items()}

        poll, output = clients.daemon(names, self.plan.polls, "--render-repeats", "1")
        first = output["polls"][0]
        discovery = replace(
            poll,
            client="monitor poll 1 (discovery)",
            wall=first["seconds"],
            cpu=first["cpu_seconds"],
            requests=first["requests"],
        )
        cold = [medians[name] for name in ("monitor once", "aws cli loop")]
        cold += [medians["boto3 loop"], medians["floor"]]
        steady = [poll, discovery, medians["aws cli loop"]]
        steady += [medians["boto3 round"], medians["floor round"]]
        return GridPoint(
            regions=regions,
            active=active,
            latency=latency,
            cold=cold,
            steady=steady,
            render_seconds=output["render"]["seconds"][0],
            render_gzip_seconds=output["render"]["with_gzip_seconds"][0],
            render_bytes=output["render"]["bytes"],
            render_series=output["render"]["series"],
        )

    # Experiments on the simulator of the grid's larger task count

    def experiments(self, active: int) -> None:
        """The sections that need many regions of ``active`` tasks, no latency."""
        wanted = {
            "big": active == self.plan.big[1],
            "profile": active == self.plan.experiment[1],
            "gc": active == self.plan.experiment[1],
        }
        if not any(wanted[name] for name in self.only & wanted.keys()):
            return
        regions = max(self.plan.big[0], self.plan.experiment[0])
        self.sims.ensure([(active, 0.0)], regions)
        clients = self.clients(self.sims.get((active, 0.0)))
        if "big" in self.only and wanted["big"]:
            self.big_state(clients)
        if "profile" in self.only and wanted["profile"]:
            self.profile(clients)
        if "gc" in self.only and wanted["gc"]:
            self.gc_settings(clients)

    def big_state(self, clients: Clients) -> None:
        regions, active = self.plan.big
        poll, output = clients.daemon(
            list(REGIONS[:regions]), max(self.plan.polls - 1, 2), "--serve"
        )
        scrape = output["scrape"]
        after = scrape["after_poll_seconds"]
        during = scrape["during_poll_seconds"] or [0.0]
        rss, peak = output["rss_mib"], poll.rss_mib
        rows = [
            ["tracked tasks", str(output["tasks"]), ""],
            ["steady poll, wall s", seconds(poll.wall), ""],
            ["steady poll, CPU s", seconds(poll.cpu), ""],
            ["resident memory after the polls, MiB", f"{rss:.0f}", _met(rss <= 150)],
            ["peak resident memory, MiB", f"{peak:.0f}", _met(peak <= 150)],
            [
                "scrape right after a poll, ms (median / max)",
                f"{statistics.median(after) * 1000:.0f} / {max(after) * 1000:.0f}",
                _met(max(after) <= 0.1),
            ],
            [
                "scrape during a poll, ms (median / max of "
                f"{len(scrape['during_poll_seconds'])})",
                f"{statistics.median(during) * 1000:.0f} / {max(during) * 1000:.0f}",
                "",
            ],
            [
                "/metrics size, MiB (as text / as sent gzipped)",
                f"{scrape['bytes'] / MIB:.1f} / {scrape['received_bytes'] / MIB:.1f}",
                "",
            ],
            [
                "/metrics render, s (text / with gzip)",
                f"{seconds(output['render']['seconds'][0])} / "
                f"{seconds(output['render']['with_gzip_seconds'][0])}",
                "",
            ],
        ]
        self.say(
            f"## {regions} regions x {active} active tasks: memory and scrapes\n\n"
            "The daemon's cycle with its HTTP server up; /metrics is scraped from "
            "another thread (accepting gzip, as Prometheus does) every 0.5 s "
            "during each poll and once right after it. Targets: resident "
            "memory at most 150 MiB, a scrape after the poll answered within "
            "100 ms.\n\n" + table(("measure", "value", "target"), rows),
            order=30,
        )

    def curve(self) -> None:
        rows = []
        points: list[tuple[int, float]] = []
        for active in self.plan.curve:
            self.sims.ensure([(active, 0.0)], 1)
            clients = self.clients(self.sims.get((active, 0.0)))
            poll, output = clients.daemon(
                [REGIONS[0]], self.plan.polls, "--render-repeats", "1"
            )
            _, floor = clients.script("floor.py", "floor", [REGIONS[0]])
            self.sims.stop(active)
            render = output["render"]["with_gzip_seconds"][0]
            points.append((poll.tasks, poll.cpu))
            rows.append(
                [
                    str(poll.tasks),
                    seconds(poll.wall),
                    seconds(poll.cpu),
                    f"{poll.cpu / max(poll.tasks, 1) * 1e6:.0f}",
                    seconds(render),
                    f"{render / max(poll.tasks, 1) * 1e6:.0f}",
                    f"{poll.rss_mib:.0f}",
                    seconds(floor.wall),
                ]
            )
        header = (
            "tasks",
            "poll wall s",
            "poll CPU s",
            "CPU us/task",
            "render+gzip s",
            "render us/task",
            "peak RSS MiB",
            "floor round s",
        )
        large = [point for point in points if point[0] >= 500]
        slope = _slope(large if len(large) >= 2 else points)
        self.say(
            "## Cost over the number of tasks (one region, no latency)\n\n"
            + table(header, rows)
            + "\n\nSlope of log(poll CPU) over log(tasks), from 500 tasks up "
            f"where there are two such points: {slope:.2f} "
            "(1 is linear, 2 quadratic).",
            order=40,
        )

    def profile(self, clients: Clients) -> None:
        regions, active = self.plan.experiment
        _, output = clients.daemon(
            list(REGIONS[:regions]), 3, "--profile", "--render-repeats", "1"
        )
        profile = output["profile"]
        total = profile["total_seconds"]
        rows = [
            [name, seconds(value), f"{value / total:.0%}"]
            for name, value in sorted(
                profile["categories"].items(), key=lambda item: -item[1]
            )
        ]
        top = [
            [
                entry["function"],
                str(entry["calls"]),
                seconds(entry["own_seconds"]),
                seconds(entry["cumulative_seconds"]),
            ]
            for entry in profile["top"]
        ]
        last = output["polls"][-1]
        store = last.get("store_seconds")
        self.say(
            f"## Where a poll's time goes ({regions} regions x {active} tasks)\n\n"
            f"cProfile over one steady poll of {seconds(total)} s wall "
            f"({seconds(last['cpu_seconds'])} s CPU, all threads, profiler "
            "overhead included). cProfile sees the event loop's thread only: "
            "the render and the state save run in worker threads and show as "
            "time waiting in epoll. Timed on their own: render "
            f"{seconds(output['render']['with_gzip_seconds'][0])} s (text and gzip)"
            + (f", state save {seconds(store)} s" if store is not None else "")
            + f"; garbage collection took {seconds(last['gc_seconds'])} s of "
            "the poll.\n\n"
            + table(("where (own time)", "seconds", "share of the poll"), rows)
            + "\n\nFunctions with the most own time:\n\n"
            + table(("function", "calls", "own s", "cumulative s"), top),
            order=50,
        )

    def gc_settings(self, clients: Clients) -> None:
        regions, active = self.plan.experiment
        threshold = self.plan.gc_threshold
        default = "700,10,10"
        variants = {
            "Python's defaults": ("--gc-threshold", default),
            "defaults, gc.freeze() after start-up": (
                "--gc-threshold",
                default,
                "--gc-freeze",
            ),
            f"gc.set_threshold({threshold})": ("--gc-threshold", threshold),
            f"gc.set_threshold({threshold}), gc.freeze()": (
                "--gc-threshold",
                threshold,
                "--gc-freeze",
            ),
            "as the monitor sets it up": (),
        }
        rows = []
        baseline: Result | None = None
        for name, flags in variants.items():
            poll, output = clients.daemon(
                list(REGIONS[:regions]),
                max(self.plan.polls - 1, 2),
                *flags,
                "--render-repeats",
                "1",
            )
            steady = output["polls"][1:] or output["polls"]
            baseline = baseline or poll
            rows.append(
                [
                    name,
                    str(tuple(output["gc"]["threshold"])),
                    seconds(poll.wall),
                    seconds(poll.cpu),
                    seconds(statistics.median(p["gc_seconds"] for p in steady)),
                    "/".join(
                        str(statistics.median(p["gc_collections"][g] for p in steady))
                        for g in range(3)
                    ),
                    f"{poll.rss_mib:.0f}",
                    factor(baseline.wall / poll.wall),
                ]
            )
        header = (
            "setting",
            "thresholds",
            "poll wall s",
            "poll CPU s",
            "GC s per poll",
            "collections gen0/1/2",
            "peak RSS MiB",
            "speed-up",
        )
        self.say(
            f"## Garbage collector settings ({regions} regions x {active} tasks)\n\n"
            "Median of the steady polls of one daemon process per setting; the "
            "speed-up is over Python's defaults. The last row is the process as "
            "`run` sets it up, which the driver mirrors when the monitor has "
            "`monitor.commands.tune_garbage_collector`.\n\n" + table(header, rows),
            order=60,
        )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(y) over log(x)."""
    usable = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(usable) < 2:
        return math.nan
    mean_x = statistics.fmean(x for x, _ in usable)
    mean_y = statistics.fmean(y for _, y in usable)
    spread = sum((x - mean_x) ** 2 for x, _ in usable)
    return sum((x - mean_x) * (y - mean_y) for x, y in usable) / spread


def header_text(plan: Plan, about: dict[str, str], started: str, ended: str) -> str:
    facts = "\n".join(f"- {name}: {value}" for name, value in about.items())
    return (
        "# Benchmark results\n\n"
        f"Written by `bench/run.py` ({plan.name} plan, {plan.repeat} repeat(s), "
        f"{plan.polls} polls per daemon process in the grid). "
        "See README.md for what each client does.\n\n"
        f"{facts}\n"
        f"- load average at the start: {started}; at the end: {ended} "
        "(other work on this machine adds noise)\n"
    )


def write_results(path: Path, text: str) -> None:
    """Write the report, keeping whatever people wrote below the marker."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            kept = old.split(NOTES_MARKER, 1)[1]
    path.write_text(text.rstrip() + "\n\n" + NOTES_MARKER + (kept or "\n"))


def snapshot(workdir: Path) -> Path:
    """A copy of monitor/ as it is now, which every process of the run imports.

    Other people change monitor/ while a run takes its half hour; without a
    copy, one grid point could measure another version than the next.
    """
    tree = workdir / "tree"
    shutil.copytree(
        ROOT / "monitor",
        tree / "monitor",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tree


def describe_snapshot() -> str:
    """The commit the copy of monitor/ was taken at, and whether it differed."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "monitor"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    state = "with uncommitted changes" if changed else "no uncommitted changes"
    return f"a copy of monitor/ taken at the start, commit {commit} ({state})"


def check_import(tree: Path, workdir: Path) -> None:
    """Fail unless a child process imports the monitor from ``tree``."""
    probe = subprocess.run(
        [sys.executable, "-c", "import monitor; print(monitor.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    found = Path(probe.stdout.strip()).resolve()
    if not found.is_relative_to(tree.resolve()):
        raise SystemExit(f"bench: children import {found}, not the tree in {tree}")


@contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ec2-import-bench-") as name:
        yield Path(name)


def _numbers(kind: Callable[[str], _N]) -> Callable[[str], tuple[_N, ...]]:
    def parse(text: str) -> tuple[_N, ...]:
        return tuple(kind(part) for part in text.split(","))

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small plan to check the benchmark itself (a few minutes)",
    )
    parser.add_argument("--repeat", type=int, help="repeats of each one-pass run")
    parser.add_argument(
        "--only",
        default="grid,big,curve,profile,gc",
        help="comma-separated sections: grid, big, curve, profile, gc",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where to write the results (default {RESULTS.name} for a full "
        "run; a quick run writes nothing unless asked)",
    )
    parser.add_argument(
        "--regions", type=_numbers(int), help="grid region counts, e.g. 16"
    )
    parser.add_argument(
        "--tasks", type=_numbers(int), help="grid active tasks per region, e.g. 2000"
    )
    parser.add_argument(
        "--latency", type=_numbers(float), help="grid latencies in seconds, e.g. 0.05"
    )
    parser.add_argument(
        "--monitor-path",
        type=Path,
        help="import the monitor from this directory instead (a candidate change)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeat is not None:
        plan = replace(plan, repeat=args.repeat)
    if args.regions is not None:
        plan = replace(plan, regions=args.regions)
    if args.tasks is not None:
        plan = replace(plan, tasks=args.tasks)
    if args.latency is not None:
        plan = replace(plan, latencies=args.latency)
    only = {part.strip() for part in args.only.split(",")}
    out = args.out if args.out is not None or args.quick else RESULTS

    began = time.monotonic()
    load_before = load()
    about = machine()
    with workspace() as workdir:
        if args.monitor_path is not None:
            tree = args.monitor_path
            about["monitor"] = f"imported from {tree} (--monitor-path)"
        else:
            tree = snapshot(workdir)
            about["monitor"] = describe_snapshot()
        check_import(tree, workdir)
        run = Run(plan, workdir, only, tree)
        try:
            if "grid" in only:
                run.grid(run.experiments)
            else:
                for active in sorted({plan.big[1], plan.experiment[1]}):
                    run.experiments(active)
                    run.sims.stop(active)
            if "curve" in only:
                run.curve()
        finally:
            run.sims.stop()

    minutes = (time.monotonic() - began) / 60
    run.say(f"The whole run took {minutes:.1f} minutes.", order=90)
    if out is not None:
        text = header_text(plan, about, load_before, load()) + "\n"
        write_results(out, text + run.text())
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
