"""Load test: scrape /metrics hard while the daemon polls thousands of tasks.

Three processes on loopback: the simulator (``scale`` scenario) and the
daemon as subprocesses, and this script's own clients. Once the daemon is
ready and has polled a few times undisturbed, ``--clients`` concurrent
aiohttp clients fetch /metrics back to back for ``--seconds``. Meanwhile
the daemon's JSON log says when each poll ran and how long it took, so the
report shows whether polls kept their schedule under the load.

Run by hand, not by ``make test``; it stops by itself:

    .venv/bin/python scripts/load_test.py                 # 4 x 2000 tasks, 50 x 30 s
    .venv/bin/python scripts/load_test.py --seconds 120 --no-write

The results are printed and written into docs/reliability.md between the
markers that ``--section`` names (``load-test`` by default).
``scripts/soak.py`` reuses the process harness below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import structlog

log = structlog.get_logger("load_test")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"

#: Any access key works against the simulator; this one picks the account.
#: The simulator checks no signature, so the secret is a placeholder.
ACCESS_KEY = "AKIDLOADTEST000001"
SECRET_KEY = "not-checked-by-the-simulator"  # noqa: S105
ACCOUNT = "load"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1", "eu-central-1")

#: Headers in the manner of Prometheus's: it offers OpenMetrics and the
#: classic text format, and always accepts gzip.
SCRAPE_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}

#: Hard ceilings, so no wait in this file can hang.
STARTUP_SECONDS = 60.0
STOP_SECONDS = 20.0
REQUEST_SECONDS = 120.0

_URL = re.compile(r"EC2 import simulator on (http://\S+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# The machine


def machine() -> dict[str, str]:
    """What the numbers were measured on, for the report."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        memory = f"{int(first.split()[1]) / 1024**2:.0f} GiB"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load average at start": load,
    }


def commit() -> str:
    """HEAD's short hash; the tree may hold uncommitted work besides."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    done = subprocess.run(
        [git, "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return done.stdout.strip() or "unknown"


# One process, seen from /proc


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS), 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_files(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        text = Path(f"/proc/{pid}/stat").read_text()
        # The command name may hold spaces; the fields after it do not.
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return 0.0


# The daemon's log


class LogTail:
    """Reads the JSON lines a process appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as stream:
            stream.seek(self._offset)
            data = stream.read()
        # A line still being written waits for the next call.
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        entries = []
        for line in data[:complete].splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


@dataclass(frozen=True, slots=True)
class Poll:
    """One poll cycle as the daemon logged it (``poll_finished``)."""

    started: float
    seconds: float
    tasks: int
    events: int
    failed: int

    @property
    def ended(self) -> float:
        return self.started + self.seconds


def poll_of(entry: dict[str, Any]) -> Poll | None:
    if entry.get("event") != "poll_finished":
        return None
    ended = datetime.fromisoformat(str(entry["timestamp"])).timestamp()
    seconds = float(entry.get("seconds", 0.0))
    return Poll(
        started=ended - seconds,
        seconds=seconds,
        tasks=int(entry.get("tasks", 0)),
        events=int(entry.get("events", 0)),
        failed=int(entry.get("failed", 0)),
    )


# The exposition


def sample_lines(body: bytes) -> Iterator[bytes]:
    for line in body.splitlines():
        if line and not line.startswith(b"#"):
            yield line


def count_series(body: bytes) -> int:
    return sum(1 for _ in sample_lines(body))


def metric_values(body: bytes, name: str) -> list[float]:
    """Every sample value of one metric, whatever its labels."""
    prefix = name.encode()
    return [
        float(line.rsplit(b" ", 1)[1])
        for line in sample_lines(body)
        if line.startswith(prefix)
        and line[len(prefix) : len(prefix) + 1] in (b"{", b" ")
    ]


def metric_sum(body: bytes, name: str) -> float:
    return sum(metric_values(body, name))


def metric_max(body: bytes, name: str) -> float:
    return max(metric_values(body, name), default=0.0)


# Starting and stopping the simulator and the daemon


def free_port() -> int:
    """A port free right now.

    Another process could take it before the daemon binds it; the daemon
    then exits and the rig reports that it did not start.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def daemon_config(
    endpoint: str,
    regions: Sequence[str],
    port: int,
    state: Path,
    interval: str,
    keep_ended: str = "24h",
) -> str:
    """A daemon config for the rig: debug level, so each poll is logged."""
    names = ", ".join(f'"{region}"' for region in regions)
    return f"""\
[poll]
interval = "{interval}"

[[targets]]
name = "{ACCOUNT}"
regions = [{names}]
endpoint_url = "{endpoint}"

[metrics]
listen = "127.0.0.1:{port}"

[state]
path = "{state}"
keep_ended = "{keep_ended}"

[log]
level = "debug"
format = "json"
"""


def clean_environment(workdir: Path) -> dict[str, str]:
    """The environment without the caller's AWS or monitor settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "EC2_IMPORT_MONITOR_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_CONFIG_FILE=str(workdir / "aws-config-unused"),
        AWS_SHARED_CREDENTIALS_FILE=str(workdir / "aws-credentials-unused"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@dataclass
class Rig:
    """The simulator and the daemon, each a subprocess logging into ``workdir``."""

    workdir: Path
    scenario: str
    tasks: int
    speed: float
    regions: Sequence[str]
    interval: str
    keep_ended: str = "24h"
    seed: int = 0
    simulator: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    endpoint: str = ""
    port: int = 0
    stop_seconds: float | None = None
    #: Seconds /readyz said 200 before /metrics served the first poll's tasks.
    ready_lead: float = 0.0
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def state_path(self) -> Path:
        return self.workdir / "state.db"

    @property
    def daemon_log(self) -> Path:
        return self.workdir / "daemon.log"

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start both processes; return once /metrics carries the first poll."""
        env = clean_environment(self.workdir)
        self.simulator = self._spawn(
            [
                "simulate",
                "--scenario",
                self.scenario,
                "--tasks",
                str(self.tasks),
                "--speed",
                f"{self.speed:g}",
                "--seed",
                str(self.seed),
                "--listen",
                "127.0.0.1:0",
            ],
            "simulator",
            env,
        )
        self.endpoint = await self._simulator_url()

        self.port = free_port()
        config = self.workdir / "config.toml"
        config.write_text(
            daemon_config(
                self.endpoint,
                self.regions,
                self.port,
                self.state_path,
                self.interval,
                self.keep_ended,
            )
        )
        self.daemon = self._spawn(["run", "--config", str(config)], "daemon", env)
        await self._ready(session)

    def _spawn(
        self, args: list[str], name: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        out = (self.workdir / f"{name}.log").open("wb")
        err = (self.workdir / f"{name}.err").open("wb")
        self._files += [out, err]
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )

    async def _simulator_url(self) -> str:
        assert self.simulator is not None
        output = self.workdir / "simulator.log"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            found = _URL.search(output.read_text(errors="replace"))
            if found:
                return found.group(1)
            if self.simulator.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the simulator did not start; see {output}")

    async def _ready(self, session: aiohttp.ClientSession) -> None:
        """Wait until /readyz is 200 and /metrics carries the first poll's tasks.

        /readyz turns 200 before the first poll's exposition is served; how
        much earlier is kept in :attr:`ready_lead`.
        """
        assert self.daemon is not None
        started = time.monotonic()
        deadline = started + STARTUP_SECONDS * 3
        ready_at: float | None = None
        exposed_at: float | None = None
        while time.monotonic() < deadline and (ready_at is None or exposed_at is None):
            if self.daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited; see {self.workdir}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                if ready_at is None and await self._answers(session, "/readyz"):
                    ready_at = time.time()
                if exposed_at is None and await self._answers(session, "/metrics"):
                    exposed_at = time.time()
            await asyncio.sleep(0.2)
        if ready_at is None or exposed_at is None:
            raise RuntimeError(f"the daemon was not ready in time; see {self.workdir}")
        self.ready_lead = exposed_at - ready_at
        log.info("daemon_ready", seconds=round(time.monotonic() - started, 1))

    async def _answers(self, session: aiohttp.ClientSession, path: str) -> bool:
        """/readyz says 200, or /metrics has a task in its first families."""
        async with session.get(
            f"http://127.0.0.1:{self.port}{path}",
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            if path != "/metrics":
                return response.status == 200
            # Per-task families come first, so a task shows in the first
            # 64 KiB if there is one; the rest of the body is not needed.
            head = await response.content.read(1 << 16)
            return response.status == 200 and b'task_id="' in head

    async def stop(self) -> None:
        """SIGTERM both; record how long the daemon took to exit."""
        if self.daemon is not None and self.daemon.poll() is None:
            began = time.monotonic()
            self.daemon.send_signal(signal.SIGTERM)
            if await _exited(self.daemon, STOP_SECONDS):
                self.stop_seconds = time.monotonic() - began
            else:
                self.daemon.kill()
                await _exited(self.daemon, STOP_SECONDS)
        if self.simulator is not None and self.simulator.poll() is None:
            self.simulator.send_signal(signal.SIGTERM)
            if not await _exited(self.simulator, STOP_SECONDS):
                self.simulator.kill()
                await _exited(self.simulator, STOP_SECONDS)
        for stream in self._files:
            stream.close()


async def _exited(process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        await asyncio.sleep(0.05)
    return process.poll() is not None


async def wait_for_polls(tail: LogTail, count: int, seconds: float) -> list[Poll]:
    """Collect ``count`` more finished polls, or what came within ``seconds``."""
    polls: list[Poll] = []
    deadline = time.monotonic() + seconds
    while len(polls) < count and time.monotonic() < deadline:
        polls += [p for p in map(poll_of, tail.read()) if p is not None]
        await asyncio.sleep(0.2)
    return polls


async def scrape(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(
        url,
        headers=SCRAPE_HEADERS,
        timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
    ) as response:
        response.raise_for_status()
        return await response.read()


# Statistics and the report


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def seconds_text(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def mib(value: float) -> str:
    return f"{value / 1024**2:.1f} MiB"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, readable as plain text too."""
    lines = [list(header), *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(lines[0]), rule, *map(render, lines[1:])])


def replace_section(doc: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``<!-- name:begin/end -->`` markers of ``doc``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = doc.read_text() if doc.exists() else ""
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        tail = rest.split(end, 1)[1]
    else:
        head, tail = content.rstrip("\n") + "\n\n", "\n"
    doc.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


# The load


@dataclass
class LoadResult:
    """What the clients saw while they hammered /metrics."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    encodings: Counter[str] = field(default_factory=Counter)

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def hammer(
    url: str, clients: int, seconds: float, headers: Mapping[str, str]
) -> LoadResult:
    """``clients`` loops fetching ``url`` back to back until ``seconds`` pass.

    Bodies are counted as they come off the wire, not decompressed: what the
    daemon sends is the measure, and inflating 50 gzip streams would make
    this process the bottleneck.
    """
    result = LoadResult()
    timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
    began = time.monotonic()
    stop_at = began + seconds
    # A generous bound on requests per client, should the server turn
    # instant; the clock ends every loop long before it in practice.
    most = int(seconds * 10_000) + 1

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(most):
            if time.monotonic() >= stop_at:
                return
            sent = time.monotonic()
            try:
                async with session.get(
                    url, headers=headers, timeout=timeout
                ) as response:
                    first = time.monotonic() - sent
                    size = 0
                    # Read and drop: holding 50 bodies of tens of MiB would
                    # measure this process's memory, not the daemon.
                    async for chunk in response.content.iter_chunked(1 << 20):
                        size += len(chunk)
                    if response.status != 200:
                        result.errors[f"HTTP {response.status}"] += 1
                        continue
                    encoding = response.headers.get("Content-Encoding", "identity")
            except (aiohttp.ClientError, TimeoutError) as error:
                result.errors[type(error).__name__] += 1
                continue
            result.latencies.append(time.monotonic() - sent)
            result.first_bytes.append(first)
            result.sizes.append(size)
            result.encodings[encoding] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False
    ) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    result.seconds = time.monotonic() - began
    return result


@dataclass
class Usage:
    """Peak memory and CPU share of the daemon while something ran."""

    peak_rss: int = 0
    cpu_share: float = 0.0


async def watch_usage(pid: int, stop: asyncio.Event, limit: float) -> Usage:
    """Sample the daemon's RSS twice a second until ``stop`` or ``limit``."""
    usage = Usage()
    began, cpu_began = time.monotonic(), cpu_seconds(pid)
    deadline = began + limit
    while not stop.is_set() and time.monotonic() < deadline:
        usage.peak_rss = max(usage.peak_rss, rss_bytes(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    elapsed = time.monotonic() - began
    usage.cpu_share = (cpu_seconds(pid) - cpu_began) / elapsed if elapsed else 0.0
    return usage


@dataclass
class Report:
    """Everything the load test prints and commits."""

    args: argparse.Namespace
    machine: dict[str, str]
    commit: str
    tracked: int
    series: int
    size: int
    rss_before: int
    rss_after: int
    load: LoadResult
    usage: Usage
    client_cpu_share: float
    polls: list[Poll]
    load_began: float
    load_ended: float
    skipped_metric: float
    skipped_logged: int
    stop_seconds: float | None
    ready_lead: float

    def during(self) -> list[Poll]:
        return [
            p
            for p in self.polls
            if p.ended >= self.load_began and p.started <= self.load_ended
        ]

    def before(self) -> list[Poll]:
        return [p for p in self.polls if p.ended < self.load_began]

    def gaps(self) -> list[tuple[Poll, float]]:
        """Each poll with the time since the previous poll started."""
        return [
            (later, later.started - earlier.started)
            for earlier, later in zip(self.polls, self.polls[1:], strict=False)
        ]

    def gaps_under_load(self) -> list[float]:
        during = set(self.during())
        return [gap for poll, gap in self.gaps() if poll in during]

    def summary(self) -> list[tuple[str, str]]:
        load = self.load
        interval = self.args.interval_seconds
        before = [p.seconds for p in self.before()]
        during = [p.seconds for p in self.during()]
        gaps = self.gaps_under_load()
        drift = max((abs(gap - interval) for gap in gaps), default=0.0)
        return [
            ("clients x seconds", f"{self.args.clients} x {load.seconds:.1f} s"),
            ("requests completed", f"{len(load.latencies)}"),
            ("requests/s", f"{load.requests_per_second:.1f}"),
            ("latency p50", seconds_text(percentile(load.latencies, 0.50))),
            ("latency p90", seconds_text(percentile(load.latencies, 0.90))),
            ("latency p99", seconds_text(percentile(load.latencies, 0.99))),
            ("latency max", seconds_text(max(load.latencies, default=0.0))),
            ("first byte p50", seconds_text(percentile(load.first_bytes, 0.50))),
            ("first byte p99", seconds_text(percentile(load.first_bytes, 0.99))),
            ("errors", _errors(load.errors)),
            (
                "response size on the wire",
                f"{mib(statistics.fmean(load.sizes or [0]))} "
                f"({_counted(load.encodings)})",
            ),
            ("exposition uncompressed", mib(self.size)),
            (
                "bytes served/s",
                mib(sum(load.sizes) / load.seconds if load.seconds else 0.0),
            ),
            ("series per response", f"{self.series}"),
            ("tasks tracked", f"{self.tracked}"),
            ("daemon RSS before load", mib(self.rss_before)),
            ("daemon RSS peak under load", mib(self.usage.peak_rss)),
            ("daemon RSS after the next poll", mib(self.rss_after)),
            ("daemon CPU under load", f"{self.usage.cpu_share:.0%} of one core"),
            ("load client CPU", f"{self.client_cpu_share:.0%} of one core"),
            ("poll interval", f"{interval:g} s"),
            ("poll duration before load", _spread(before)),
            ("poll duration under load", _spread(during)),
            ("gaps between poll starts under load", _spread(gaps)),
            ("largest drift from the interval", f"{drift:.2f} s"),
            ("polls skipped under load (counter)", f"{self.skipped_metric:g}"),
            ("polls skipped in the whole run (log)", f"{self.skipped_logged}"),
            (
                "region polls failed under load",
                f"{sum(p.failed for p in self.during())} of "
                f"{len(self.during()) * len(self.args.regions)}",
            ),
            ("/readyz 200 before /metrics had tasks", f"{self.ready_lead:.2f} s"),
            (
                "daemon stop after SIGTERM",
                "killed" if self.stop_seconds is None else f"{self.stop_seconds:.2f} s",
            ),
        ]

    def poll_rows(self) -> list[tuple[str, ...]]:
        gap_of = {id(poll): gap for poll, gap in self.gaps()}
        rows: list[tuple[str, ...]] = []
        for poll in self.polls:
            gap = gap_of.get(id(poll))
            rows.append(
                (
                    f"{poll.started - self.load_began:+.1f} s",
                    f"{poll.seconds:.2f} s",
                    "-" if gap is None else f"{gap:.2f} s",
                    f"{poll.events}",
                    f"{poll.failed}",
                    "yes" if poll in self.during() else "",
                )
            )
        return rows

    def markdown(self) -> str:
        args = self.args
        described = ", ".join(f"{key} {value}" for key, value in self.machine.items())
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return "\n\n".join(
            [
                f"Measured {when} at commit {self.commit} on: {described}.",
                f"Command: `{' '.join(['python', 'scripts/load_test.py', *args.argv])}`"
                f" ({len(args.regions)} regions x {args.tasks} tasks, scenario "
                f"`scale`, simulator at {args.speed:g}x, poll interval "
                f"{args.interval}).",
                table(("measure", "value"), self.summary()),
                "Every poll of the run (start relative to the start of the load):",
                table(
                    (
                        "start",
                        "took",
                        "since previous start",
                        "events",
                        "regions failed",
                        "under load",
                    ),
                    self.poll_rows(),
                ),
            ]
        )


def _errors(errors: Counter[str]) -> str:
    if not errors:
        return "0"
    return ", ".join(f"{count} {kind}" for kind, count in errors.most_common())


def _counted(encodings: Counter[str]) -> str:
    return ", ".join(f"{kind} x {count}" for kind, count in encodings.most_common())


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"{min(values):.2f} / {statistics.fmean(values):.2f} / {max(values):.2f} s"
        f" (min / mean / max of {len(values)})"
    )


# The run


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    rig = Rig(
        workdir=workdir,
        scenario="scale",
        tasks=args.tasks,
        speed=args.speed,
        regions=args.regions,
        interval=args.interval,
    )
    # Before the rig starts, so the load average is other work's, not ours.
    host = machine()
    async with aiohttp.ClientSession() as session:
        try:
            log.info("starting", workdir=str(workdir), regions=len(args.regions))
            await rig.start(session)
            assert rig.daemon is not None
            pid = rig.daemon.pid
            tail = LogTail(rig.daemon_log)
            polls = [p for p in map(poll_of, tail.read()) if p is not None]

            # Baseline: a few polls with nobody scraping.
            wait = args.interval_seconds * (args.baseline_polls + 2) + 60
            polls += await wait_for_polls(tail, args.baseline_polls, wait)
            body = await scrape(session, rig.metrics_url)
            skipped_before = metric_sum(body, "ec2_import_polls_skipped_total")
            rss_before = rss_bytes(pid)
            log.info("baseline_done", polls=len(polls), series=count_series(body))

            # The load, with the daemon's memory and CPU watched meanwhile.
            stop = asyncio.Event()
            watcher = asyncio.create_task(
                watch_usage(pid, stop, args.seconds + REQUEST_SECONDS)
            )
            client_cpu = time.process_time()
            load_began = time.time()
            headers = {**SCRAPE_HEADERS}
            if args.identity:
                headers["Accept-Encoding"] = "identity"
            load = await hammer(rig.metrics_url, args.clients, args.seconds, headers)
            load_ended = time.time()
            client_cpu = (time.process_time() - client_cpu) / (load.seconds or 1.0)
            stop.set()
            usage = await watcher
            log.info(
                "load_done",
                requests=len(load.latencies),
                errors=sum(load.errors.values()),
            )

            # The poll running when the load ended has to finish to be judged.
            polls += await wait_for_polls(tail, 1, args.interval_seconds * 3 + 60)
            after = await scrape(session, rig.metrics_url)
            skipped = metric_sum(after, "ec2_import_polls_skipped_total")
            rss_after = rss_bytes(pid)
            polls += [p for p in map(poll_of, tail.read()) if p is not None]
        finally:
            await rig.stop()

    logged = sum(
        1
        for entry in LogTail(rig.daemon_log).read()
        if entry.get("event") == "poll_skipped"
    )
    return Report(
        args=args,
        machine=host,
        commit=commit(),
        tracked=int(metric_sum(body, "ec2_import_tasks")),
        series=count_series(body),
        size=len(body),
        rss_before=rss_before,
        rss_after=rss_after,
        load=load,
        usage=usage,
        client_cpu_share=client_cpu,
        polls=polls,
        load_began=load_began,
        load_ended=load_ended,
        skipped_metric=skipped - skipped_before,
        skipped_logged=logged,
        stop_seconds=rig.stop_seconds,
        ready_lead=rig.ready_lead,
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="default 50")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="length of the load (default 30)"
    )
    parser.add_argument(
        "--regions", type=int, default=4, help=f"1..{len(REGIONS)} (default 4)"
    )
    parser.add_argument("--tasks", type=int, default=2000, help="per region")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second (default 1: real imports' pace)",
    )
    parser.add_argument("--interval", default="15s", help="poll interval (default 15s)")
    parser.add_argument(
        "--baseline-polls", type=int, default=2, help="polls before the load"
    )
    parser.add_argument(
        "--identity",
        action="store_true",
        help="ask for the body uncompressed, as curl does without --compressed",
    )
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not update {DOC.name}"
    )
    parser.add_argument(
        "--section",
        default="load-test",
        help=f"the marker name in {DOC.name} to write between (default load-test)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs and state in a temp dir"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.regions <= len(REGIONS):
        parser.error(f"--regions is 1..{len(REGIONS)}")
    if args.clients < 1 or args.seconds <= 0 or args.seconds > 3600:
        parser.error("--clients is at least 1 and --seconds 0..3600")
    if args.tasks < 1:
        parser.error("--tasks is at least 1: readiness waits for a task in /metrics")
    if not re.fullmatch(r"\d+s", args.interval):
        parser.error("--interval is whole seconds, like 15s")
    args.argv = list(argv)
    args.regions = REGIONS[: args.regions]
    args.interval_seconds = float(args.interval[:-1])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Fifty sockets plus the rig's files stay far under any soft limit, but
    # a low one (256 on some hosts) fails late and confusingly.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))

    workdir = Path(tempfile.mkdtemp(prefix="ec2-import-load-"))
    try:
        report = asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            log.info("kept", workdir=str(workdir))
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(("measure", "value"), report.summary()))
    print()
    header = ("start", "took", "since prev", "events", "failed", "load")
    print(table(header, report.poll_rows()))
    if not args.no_write:
        replace_section(DOC, args.section, report.markdown())
        log.info("written", doc=str(DOC.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
