"""The composition root: poller, tracker, events, store, metrics and HTTP.

:class:`Monitor` is one poll cycle's wiring and nothing else, so tests can
drive it cycle by cycle. :func:`serve` adds the schedule, the HTTP server
and signal handling around it: the long-running daemon.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor import __version__
from monitor.config import ConfigError, Settings, load_settings
from monitor.ec2 import OPERATION, Poller
from monitor.events import Event, emit
from monitor.logs import configure_logging
from monitor.metrics import MonitorCounters, View, render_both
from monitor.notify import SystemdNotifier
from monitor.store import AsyncStore, StoreError
from monitor.tracker import Rules, TrackerState, observe
from monitor.web import WebState, bound_port, build_app, start_server

log = structlog.get_logger(__name__)

#: How long SIGTERM waits for an in-flight poll before cancelling it.
STOP_GRACE_SECONDS = 5.0

POLL_JOB = "poll"

#: How often the event history is pruned to ``state.keep_history``.
PRUNE_EVERY_SECONDS = 3600.0

Clock = Callable[[], float]


def rules_from(settings: Settings) -> Rules:
    return Rules(
        stall_threshold=settings.stall.threshold,
        max_age=settings.stall.max_age,
        keep_ended=settings.state.keep_ended,
    )


class Monitor:
    """Polls every region once per :meth:`poll_once` and reports the changes."""

    def __init__(
        self, settings: Settings, clock: Clock = time.time, persist: bool = True
    ) -> None:
        self.settings = settings
        self.persist = persist
        self.store: AsyncStore | None = None
        self._pruned_at = 0.0
        self.rules = rules_from(settings)
        self.clock = clock
        self.state = TrackerState()
        self.counters = MonitorCounters((), ())
        self.web = WebState(ready=self.ready)
        self.poller = Poller(
            settings.targets, settings.poll, self.counters.record_request
        )
        self.polls = 0

    async def start(self) -> None:
        """Open the store and load the state before anything is polled.

        Loading first is what keeps a restart quiet: known tasks are not
        discovered again, stall clocks keep running, and a task that ended
        while the monitor was down is found by the first poll's lookup.
        """
        if self.persist:
            self.store = await AsyncStore.open(self.settings.state.path)
            self.state = await self.store.load()
            log.info(
                "state_loaded",
                path=str(self.settings.state.path),
                tasks=len(self.state.tasks),
                regions=len(self.state.regions),
            )
        await self.poller.open()
        self.counters.add_regions(self.poller.regions, (OPERATION,))
        await self._refresh_exposition()

    async def close(self) -> None:
        await self.poller.close()
        if self.store is not None:
            await self.store.close()
            self.store = None

    def ready(self) -> bool:
        """True once every configured region has been polled at least once."""
        polled = self.state.regions.keys()
        return self.polls > 0 and all(key in polled for key in self.poller.regions)

    async def poll_once(self, report: bool = True) -> list[Event]:
        """Poll, diff, report and expose: one full cycle.

        ``report=False`` (the ``once`` command) still returns the events but
        does not log them: a one-off look is not a change to announce.
        """
        started = time.perf_counter()

        # Fetch: every region at once, bounded, each with its own deadline.
        open_ids = {
            key: self.state.open_task_ids(key.account, key.region)
            for key in self.poller.regions
        }
        polls = await self.poller.poll(open_ids)
        # Discovered regions come and go; their counters start at zero.
        self.counters.add_regions(self.poller.regions, (OPERATION,))

        # Track: pure, with the clock read once for the whole cycle.
        now = self.clock()
        self.state, events = observe(self.state, polls, now, self.rules)

        # Save, expose, then report. Saving first means a crash loses log
        # lines (the history table has them) rather than announcing a change
        # twice on restart; exposing before reporting means whoever reacts to
        # an event finds it in /metrics already.
        await self._save(events, now)
        self.counters.record_events(events)
        await self._refresh_exposition(now)
        # Only now is the poll visible everywhere, so only now does it count
        # for /readyz: a scraper that waits for readiness finds the tasks.
        self.polls += 1
        if report:
            emit(events)

        failed = sum(not poll.ok for poll in polls)
        log.debug(
            "poll_finished",
            regions=len(polls),
            failed=failed,
            tasks=len(self.state.tasks),
            events=len(events),
            seconds=round(time.perf_counter() - started, 3),
        )
        return events

    async def _save(self, events: list[Event], now: float) -> None:
        if self.store is None:
            return
        try:
            await self.store.save(self.state, events)
            if now - self._pruned_at >= PRUNE_EVERY_SECONDS:
                self._pruned_at = now
                pruned = await self.store.prune_history(
                    now - self.settings.state.keep_history
                )
                log.debug("history_pruned", rows=pruned)
        except StoreError as error:
            # The store keeps what it could not write and retries next cycle;
            # the monitor keeps watching meanwhile.
            log.error("state_save_failed", error=str(error))

    async def reconfigure(self, settings: Settings) -> None:
        """Apply a reloaded config; tracked state survives it.

        New clients are opened before the old ones close, so a reload with a
        target that cannot be set up leaves the monitor as it was.
        """
        poller = Poller(settings.targets, settings.poll, self.counters.record_request)
        await poller.open()
        old, self.poller = self.poller, poller
        await old.close()

        # Regions no longer configured take their tasks with them.
        kept = set(poller.regions)
        self.state = TrackerState(
            tasks={k: t for k, t in self.state.tasks.items() if k[:2] in kept},
            regions={k: h for k, h in self.state.regions.items() if k in kept},
        )
        self.settings = settings
        self.rules = rules_from(settings)
        self.counters.add_regions(poller.regions, (OPERATION,))
        await self._refresh_exposition()

    def describe(self) -> str:
        """One line for systemd's STATUS=."""
        regions = self.state.regions.values()
        failing = sum(not health.ok for health in regions)
        active = sum(1 for t in self.state.tasks.values() if t.ended_at is None)
        seconds = max((health.duration for health in regions), default=0.0)
        line = (
            f"tracking {active} active task(s) in {len(self.poller.regions)} "
            f"region(s); last poll took {seconds:.1f} s"
        )
        return line + (f"; {failing} region(s) failing" if failing else "")

    async def _refresh_exposition(self, now: float | None = None) -> None:
        view = View(self.state, self.clock() if now is None else now, self.rules)
        # Rendering tens of thousands of series takes long enough to delay
        # scrapes and timers, so it runs in a worker thread.
        text, gzipped = await asyncio.to_thread(render_both, view, self.counters)
        self.web.exposition, self.web.exposition_gzip = text, gzipped
        self.web.tracker = view.state
        self.web.now = view.now


class Daemon:
    """The long-running process: schedule, HTTP, signals, systemd, reload."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        clock: Clock = time.time,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.monitor = Monitor(settings, clock)
        self.notifier = notifier or SystemdNotifier()
        self.stop = asyncio.Event()
        self._cycle_lock = asyncio.Lock()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[object]] = set()
        self._announced_ready = False
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    async def run(self, on_listening: Callable[[int], None] | None = None) -> int:
        """Run until :attr:`stop` is set or SIGTERM/SIGINT arrives; exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)

        await self.monitor.start()
        runner = await start_server(
            build_app(self.monitor.web),
            self.settings.metrics.host,
            self.settings.metrics.port,
            self.settings.metrics.web_config,
        )
        port = bound_port(runner)
        log.info(
            "monitor_started",
            version=__version__,
            listen=f"{self.settings.metrics.host}:{port}",
            regions=len(self.monitor.poller.regions),
            interval_seconds=self.settings.poll.interval,
        )
        if on_listening is not None:
            on_listening(port)

        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.add_job(
            self._poll_job,
            "interval",
            seconds=self.settings.poll.interval,
            id=POLL_JOB,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )
        self._scheduler.start()
        self._start_watchdog()

        try:
            await self.stop.wait()
        finally:
            log.info("monitor_stopping")
            self.notifier.stopping()
            # The asyncio executor cancels running jobs on shutdown: stop new
            # ticks first and give the poll in flight its grace period.
            self._scheduler.pause()
            await _finish(self._in_flight)
            self._scheduler.shutdown(wait=False)
            for task in self._background:
                task.cancel()
            await runner.cleanup()
            await self.monitor.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.notifier.close()
            log.info("monitor_stopped")
        return 0

    async def _poll_job(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            async with self._cycle_lock:
                await self.monitor.poll_once()
        except asyncio.CancelledError:
            # Only shutdown cancels a poll, once its grace period is over and
            # it has said so; APScheduler would log it again as a crash.
            return
        except Exception:
            # A bug in one cycle must not end the daemon: the next tick retries.
            log.exception("poll_crashed")
        finally:
            self._in_flight.discard(task)

        # READY=1 means "serving and the first poll has been attempted".
        if not self._announced_ready:
            self._announced_ready = True
            self.notifier.ready()
        self.notifier.status(self.monitor.describe())

    def _on_skipped(self, _: JobExecutionEvent) -> None:
        self.monitor.counters.polls_skipped += 1
        log.warning("poll_skipped", reason="previous poll still running")

    def _start_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return

        async def ping() -> None:
            # Pinging from the event loop itself is the point: a loop that
            # hangs stops the pings and systemd restarts the service.
            while True:
                self.notifier.watchdog()
                await asyncio.sleep(interval)

        self._spawn(ping())

    def _spawn_reload(self) -> None:
        self._spawn(self.reload())

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> bool:
        """Re-read the config (SIGHUP); keep the old one if the new is bad."""
        self.notifier.reloading()
        try:
            settings = load_settings(self.config_path)
        except ConfigError as error:
            log.error("config_reload_failed", problems=error.problems)
            self.notifier.ready()
            return False

        configure_logging(settings.log.level, settings.log.format)
        # Swap between cycles, never under a running poll.
        async with self._cycle_lock:
            await self.monitor.reconfigure(settings)
        if settings.poll.interval != self.settings.poll.interval:
            self._scheduler.reschedule_job(
                POLL_JOB, trigger="interval", seconds=settings.poll.interval
            )
        self.settings = settings
        log.info(
            "config_reloaded",
            regions=len(self.monitor.poller.regions),
            interval_seconds=settings.poll.interval,
        )
        self.notifier.ready()
        return True


async def serve(
    settings: Settings,
    clock: Clock = time.time,
    on_listening: Callable[[int], None] | None = None,
    config_path: Path | None = None,
) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    return await Daemon(settings, config_path, clock).run(on_listening)


async def _finish(in_flight: set[asyncio.Task[None]]) -> None:
    """Let an in-flight poll finish within the grace period, else cancel it."""
    if not in_flight:
        return
    _, pending = await asyncio.wait(set(in_flight), timeout=STOP_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    if pending:
        log.warning("poll_cancelled", reason="shutdown grace period over")
        await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
