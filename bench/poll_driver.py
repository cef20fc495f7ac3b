"""The daemon's steady state: one Monitor, polled several times in a row.

This is the daemon's cycle without its scheduler: ``Monitor.poll_once`` as
``serve`` runs it, with events logged as JSON (to /dev/null here, so the
formatting is paid for but nothing is printed) and the exposition rendered
after each poll. Prints JSON: each poll's seconds, CPU seconds, events and
API requests, the render time and size, resident memory, garbage-collector
pauses, and optionally scrape latencies and a profile of the last poll.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402  (the clock above starts before the imports)
import asyncio  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from monitor import commands, metrics  # noqa: E402
from monitor.config import load_settings  # noqa: E402
from monitor.daemon import Monitor  # noqa: E402
from monitor.logs import configure_logging  # noqa: E402
from monitor.metrics import View, render  # noqa: E402
from monitor.web import bound_port, build_app, start_server  # noqa: E402

#: Where a profiled poll's own time goes, by the file (or built-in) it is in.
#: The first match wins, so the specific entries come before the general.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle: waiting in epoll (network, worker threads)", ("select.epoll",)),
    ("expat/etree: bytes to elements", ("xml.etree", "xml/etree", "pyexpat")),
    ("botocore parsers: elements to dicts", ("botocore/parsers.py",)),
    ("model: dicts to ImportTask", ("monitor/model.py",)),
    ("tracker: diff and judge", ("monitor/tracker.py", "monitor/events.py")),
    ("event logging", ("structlog", "monitor/logs.py", "logging/")),
    ("metrics render", ("prometheus_client", "monitor/metrics.py")),
    ("poller", ("monitor/ec2.py",)),
    (
        "botocore/aiobotocore other (signing, hooks, retries)",
        ("botocore/", "aiobotocore/", "aioboto3/", "hashlib", "hmac"),
    ),
    (
        "aiohttp, asyncio, sockets",
        ("aiohttp/", "asyncio/", "selectors", "socket", "multidict", "yarl"),
    ),
)


class GcTimer:
    """Counts collections per generation and the time spent in them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._began
        self.collections[info["generation"]] += 1

    def snapshot(self) -> tuple[float, list[int]]:
        return self.seconds, list(self.collections)


class Scraper:
    """Scrapes /metrics from a thread, as Prometheus would from outside."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.during: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape(self) -> tuple[float, int]:
        """(seconds, bytes) of one GET /metrics on a fresh connection.

        It accepts gzip, as Prometheus does; the bytes are those received.
        """
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            body = connection.getresponse().read()
        finally:
            connection.close()
        return time.perf_counter() - started, len(body)

    def start_background(self, every: float = 0.5) -> None:
        """Scrape every ``every`` seconds until :meth:`stop_background`."""
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(every):
                self.during.append(self.scrape()[0])

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def rss_mib() -> float:
    """The resident set now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def categorize(stats: pstats.Stats) -> dict[str, float]:
    """Own (not cumulative) seconds per category of :data:`CATEGORIES`."""
    totals: dict[str, float] = {name: 0.0 for name, _ in CATEGORIES}
    totals["other"] = 0.0
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, own, _, _) in raw.items():
        where = f"{filename} {function}"
        name = next(
            (name for name, marks in CATEGORIES if any(m in where for m in marks)),
            "other",
        )
        totals[name] += own
    return totals


def top_functions(stats: pstats.Stats, count: int = 15) -> list[dict[str, Any]]:
    """The functions with the most own time."""
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)
    return [
        {
            "function": f"{_short(filename)}:{line}({function})",
            "calls": calls,
            "own_seconds": own,
            "cumulative_seconds": cumulative,
        }
        for (filename, line, function), (_, calls, own, cumulative, _) in ranked[:count]
    ]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/tree/", "/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(args.config)
    # The process set-up `run` does before the daemon starts, where the
    # monitor has one; the --gc-* flags below then override it.
    tune = getattr(commands, "tune_garbage_collector", None)
    if callable(tune):
        tune()
    if args.gc_threshold is not None:
        gc.set_threshold(*args.gc_threshold)
    monitor = Monitor(settings)
    await monitor.start()

    runner = None
    scraper = None
    if args.serve:
        runner = await start_server(build_app(monitor.web), "127.0.0.1", 0)
        scraper = Scraper(bound_port(runner))

    if args.gc_freeze:
        # Everything imported and set up so far is moved out of the
        # collector's sight, so later collections do not traverse it.
        gc.collect()
        gc.freeze()
    timer = GcTimer()
    gc.callbacks.append(timer)
    started_up = time.perf_counter() - STARTED

    polls: list[dict[str, Any]] = []
    scrapes_after: list[float] = []
    received = 0
    profile_stats: pstats.Stats | None = None
    for number in range(args.polls):
        profiler = None
        if args.profile and number == args.polls - 1:
            profiler = cProfile.Profile()
        if scraper is not None:
            scraper.start_background()
        requests_before = sum(monitor.counters.requests.values())
        gc_before = timer.snapshot()
        started, cpu_started = time.perf_counter(), time.process_time()

        if profiler is not None:
            profiler.enable()
        events = await monitor.poll_once()
        if profiler is not None:
            profiler.disable()

        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        gc_after = timer.snapshot()
        if scraper is not None:
            # Joined from a worker thread: the event loop must stay free to
            # answer the scrape that thread may have in flight.
            await asyncio.to_thread(scraper.stop_background)
            # A scrape right after the poll, as Prometheus would send one
            # at any moment: the answer is the exposition just rendered.
            took, received = await asyncio.to_thread(scraper.scrape)
            scrapes_after.append(took)
        if profiler is not None:
            profile_stats = pstats.Stats(profiler)
        saved = getattr(getattr(monitor, "store", None), "last_save", None)
        polls.append(
            {
                "seconds": seconds,
                "store_seconds": getattr(saved, "seconds", None),
                "cpu_seconds": cpu,
                "events": len(events),
                "requests": sum(monitor.counters.requests.values()) - requests_before,
                "gc_seconds": gc_after[0] - gc_before[0],
                "gc_collections": [
                    after - before
                    for before, after in zip(gc_before[1], gc_after[1], strict=True)
                ],
            }
        )

    # Render once more on its own, on this thread, to time it alone.
    # The text alone, then everything the daemon renders per poll (the text
    # and, where the monitor has it, its gzipped copy).
    render_seconds = []
    both_seconds = []
    exposition = b""
    render_both = getattr(metrics, "render_both", None)
    for _ in range(args.render_repeats):
        view = View(monitor.state, time.time(), monitor.rules)
        started = time.perf_counter()
        exposition = render(view, monitor.counters)
        render_seconds.append(time.perf_counter() - started)
        if render_both is not None:
            started = time.perf_counter()
            render_both(view, monitor.counters)
            both_seconds.append(time.perf_counter() - started)
    series = (
        exposition.count(b"\n") - exposition.count(b"\n#") - exposition.startswith(b"#")
    )

    result: dict[str, Any] = {
        "tasks": len(monitor.state.tasks),
        "regions": len(monitor.state.regions),
        "failed_regions": sum(not h.ok for h in monitor.state.regions.values()),
        "startup_seconds": started_up,
        "polls": polls,
        "render": {
            "seconds": render_seconds,
            "with_gzip_seconds": both_seconds or render_seconds,
            "bytes": len(exposition),
            "series": series,
        },
        "rss_mib": rss_mib(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gc": {
            "freeze": args.gc_freeze,
            "threshold": list(gc.get_threshold()),
            "frozen_objects": gc.get_freeze_count(),
        },
    }
    if scraper is not None:
        result["scrape"] = {
            "after_poll_seconds": scrapes_after,
            "during_poll_seconds": scraper.during,
            "bytes": len(monitor.web.exposition),
            "received_bytes": received,
        }
    if profile_stats is not None:
        result["profile"] = {
            "total_seconds": polls[-1]["seconds"],
            "categories": categorize(profile_stats),
            "top": top_functions(profile_stats),
        }

    if runner is not None:
        await runner.cleanup()
    await monitor.close()
    return result


def _threshold(text: str) -> tuple[int, int, int]:
    first, second, third = (int(part) for part in text.split(","))
    return first, second, third


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--polls", type=int, default=4)
    parser.add_argument("--serve", action="store_true", help="measure scrapes")
    parser.add_argument("--profile", action="store_true", help="profile last poll")
    parser.add_argument("--gc-freeze", action="store_true")
    parser.add_argument("--gc-threshold", type=_threshold, metavar="G0,G1,G2")
    parser.add_argument("--render-repeats", type=int, default=3)
    args = parser.parse_args()

    # The daemon logs events as JSON lines; writing them to /dev/null keeps
    # the formatting cost in the measurement and the output clean.
    with open(os.devnull, "w") as sink:
        configure_logging("info", "json", stream=sink)
        result = asyncio.run(drive(args))
    result["median_steady_seconds"] = statistics.median(
        poll["seconds"] for poll in result["polls"][1:] or result["polls"]
    )
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
