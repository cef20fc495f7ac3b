"""The daemon as a service: ``monitor run`` as a subprocess, as systemd runs it.

Each test starts ``python -m monitor run --config PATH`` against a simulator
served by the test's event loop, and judges the daemon only by what a
service manager and an operator see: its JSON events on stdout, its exit
code, its notify datagrams and its HTTP endpoints.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.config import EX_CONFIG
from monitor.daemon import STOP_GRACE_SECONDS
from monitor.simulator import Simulator, TimelineBuilder, serve
from tests.service_helpers import (
    STATUS_LINE,
    WAIT,
    NotifySocket,
    Service,
    fetch,
    notify_socket,
    poll_until,
    region_labels,
    scrape,
    task_labels,
)

EAST = "us-east-1"
WEST = "eu-west-1"
EAST_TASK = "import-ami-0e0e0e0e0e0e0e0e1"
WEST_TASK = "import-ami-0f0f0f0f0f0f0f0f2"

#: Seconds a healthy daemon may take to exit on SIGTERM.
PROMPT_EXIT = 5.0

#: Slack over STOP_GRACE_SECONDS for cancelling the poll and closing down.
STOP_MARGIN = 5.0

#: A first poll made this slow is still running when a test looks.
SLOW_FIRST_POLL = 3.0

#: WatchdogSec=2s, as systemd passes it: pings are due every second.
WATCHDOG_USEC = 2_000_000

#: The interval for tests that want exactly one poll to happen.
ONE_POLL = "60s"

#: Why the slow-poll stop test fails while Daemon.run stops as it does.
GRACE_NOT_GRANTED = (
    "SIGTERM cancelled the in-flight poll at once instead of granting it "
    "STOP_GRACE_SECONDS: AsyncIOScheduler.shutdown() cancels running jobs, and "
    "Daemon.run calls it before _finish()"
)

#: What to look at first when SIGHUP leaves the file's changes unapplied.
RELOAD_NEEDS_PATH = (
    "SIGHUP did not re-read the file given with --config: "
    "monitor/commands/run.py must pass config_path=args.config to serve()"
)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """A simulator on real time with one converting task in each of two regions."""
    sim = Simulator(scenario="empty", speed=1.0)
    service_tasks = ((EAST, EAST_TASK, 30), (WEST, WEST_TASK, 41))
    async with serve(sim) as endpoint:
        service = Service(sim, endpoint, tmp_path)
        start = sim.clock.now()
        # The default stall threshold for converting is hours: no stall here.
        for region, task_id, progress in service_tasks:
            sim.add_task(
                service.account_id,
                region,
                TimelineBuilder(task_id).phase(start, "converting", progress),
            )
        yield service


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    async with notify_socket(tmp_path / "notify") as listener:
        yield listener


class TestStop:
    async def test_sigterm_ends_the_daemon_promptly_with_exit_code_0(
        self, service: Service
    ) -> None:
        """SIGTERM between polls: exit 0 within seconds, monitor_stopped last."""
        service.configure(poll={"interval": ONE_POLL}, level="debug")
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await daemon.wait_event("poll_finished")

            async with asyncio.timeout(WAIT):
                code, seconds = await daemon.stop()

        assert code == 0
        assert seconds < PROMPT_EXIT
        assert daemon.names()[-2:] == ["monitor_stopping", "monitor_stopped"]
        assert not daemon.named("poll_cancelled")
        assert [e for e in daemon.events.items if e["level"] == "error"] == []

    async def test_sigterm_during_a_slow_poll_exits_after_the_grace_period(
        self, service: Service
    ) -> None:
        """A poll stuck on a slow endpoint gets the grace period, then is cancelled.

        The simulator answers after three grace periods, so the poll is
        still waiting when the grace period runs out.
        """
        service.sim.faults.latency = 3 * STOP_GRACE_SECONDS
        service.configure(poll={"interval": ONE_POLL})
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await daemon.wait_event("monitor_started")
            # The first poll starts as soon as the scheduler does; a moment
            # later it is waiting on the slow simulator.
            await asyncio.sleep(1.0)

            async with asyncio.timeout(STOP_GRACE_SECONDS + WAIT):
                code, seconds = await daemon.stop()

        errors = [e["event"] for e in daemon.events.items if e["level"] == "error"]
        assert code == 0
        assert seconds < STOP_GRACE_SECONDS + STOP_MARGIN
        assert errors == [], GRACE_NOT_GRANTED
        assert daemon.named("poll_cancelled"), GRACE_NOT_GRANTED
        assert daemon.names()[-1] == "monitor_stopped"


class TestSystemdNotify:
    async def test_ready_comes_once_after_metrics_answer_and_the_first_poll(
        self, service: Service, notify: NotifySocket
    ) -> None:
        """READY=1 is sent once, when /metrics answers and the first poll is done."""
        service.sim.faults.latency = SLOW_FIRST_POLL
        service.configure(poll={"interval": ONE_POLL})
        service.env.update(notify.environment())
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await daemon.wait_event("monitor_started")
                metrics_status, _, _ = await fetch(daemon.url + "/metrics")
                early = notify.having("READY")

                await notify.wait_for("READY", "1")
                ready_status, _, _ = await fetch(daemon.url + "/readyz")
                status = await notify.wait_for("STATUS")

            async with asyncio.timeout(WAIT):
                code, _ = await daemon.stop()

        assert metrics_status == 200
        assert early == [], "READY=1 came while the first poll was still running"
        assert ready_status == 200
        assert len(notify.having("READY")) == 1
        assert code == 0
        described = STATUS_LINE.search(status.fields["STATUS"])
        assert described is not None, status.fields
        assert (described["tasks"], described["regions"]) == ("1", "1")

    async def test_watchdog_pings_come_at_about_half_the_watchdog_interval(
        self, service: Service, notify: NotifySocket
    ) -> None:
        """With WATCHDOG_USEC=2 s, WATCHDOG=1 arrives about every second."""
        service.configure(poll={"interval": ONE_POLL})
        service.env.update(notify.environment(watchdog_usec=WATCHDOG_USEC))
        window = 5.0
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await notify.wait_for("READY", "1")
            start = notify.mark

            # An observation window, not a wait for an event: pings are
            # counted over it, and the bounds below are deliberately loose.
            await asyncio.sleep(window)
            pings = len(notify.having("WATCHDOG", "1", start))

            async with asyncio.timeout(WAIT):
                await daemon.stop()

        due = window * 1_000_000 / (WATCHDOG_USEC / 2)
        assert due - 2 <= pings <= 2 * due, f"{pings} pings in {window} s"

    async def test_stopping_is_sent_when_sigterm_arrives(
        self, service: Service, notify: NotifySocket
    ) -> None:
        """SIGTERM is answered with STOPPING=1 before the process exits."""
        service.configure(poll={"interval": ONE_POLL})
        service.env.update(notify.environment(watchdog_usec=WATCHDOG_USEC))
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await notify.wait_for("READY", "1")
            start = notify.mark

            async with asyncio.timeout(WAIT):
                code, _ = await daemon.stop()
                stopping = await notify.wait_for("STOPPING", "1", start)

        assert code == 0
        assert stopping.fields == {"STOPPING": "1"}
        assert len(notify.having("STOPPING")) == 1


class TestReload:
    async def test_sighup_applies_a_new_region_and_log_level(
        self, service: Service, notify: NotifySocket
    ) -> None:
        """SIGHUP re-reads the file: a new region is polled, debug logs start.

        The tasks already tracked stay tracked: nothing is discovered twice.
        """
        service.configure(regions=[EAST], level="info")
        service.env.update(notify.environment())
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await daemon.wait_event("task_discovered", task_id=EAST_TASK)
                await notify.wait_for("READY", "1")
            service.configure(regions=[EAST, WEST], level="debug")
            before, notified = daemon.mark, notify.mark

            daemon.send(signal.SIGHUP)
            async with asyncio.timeout(WAIT):
                outcome = await daemon.wait_any(
                    ("config_reloaded", "config_reload_failed"), before
                )
                reloaded = (outcome["event"], outcome.get("regions"))
                assert reloaded == ("config_reloaded", 2), RELOAD_NEEDS_PATH
                await notify.wait_for("RELOADING", "1", notified)
                await notify.wait_for("READY", "1", notified)
                await daemon.wait_event("task_discovered", before, task_id=WEST_TASK)
                # Two more full cycles, each with every region, at debug level.
                first = await daemon.wait_event("poll_finished", before, regions=2)
                later = daemon.events.items.index(first) + 1
                await daemon.wait_event("poll_finished", later, regions=2)
                metrics = await scrape(daemon)

        logged_before = daemon.events.items[:before]
        assert [e for e in logged_before if e["level"] == "debug"] == []
        assert metrics[("ec2_import_poll_success", region_labels(WEST))] == 1.0
        west = ("ec2_import_task_progress_ratio", task_labels(WEST, WEST_TASK))
        assert metrics[west] == 0.41
        assert len(daemon.named("task_discovered", task_id=EAST_TASK)) == 1

    async def test_sighup_with_a_broken_config_keeps_the_old_one(
        self, service: Service
    ) -> None:
        """A bad file on SIGHUP is reported by key; polling goes on as before."""
        service.configure(regions=[EAST], level="debug")
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await daemon.wait_event("poll_finished", regions=1)
            service.configure(
                regions=[EAST, WEST], poll={"interval": "2s", "intervall": "5s"}
            )
            before = daemon.mark

            daemon.send(signal.SIGHUP)
            async with asyncio.timeout(WAIT):
                outcome = await daemon.wait_any(
                    ("config_reloaded", "config_reload_failed"), before
                )
                assert outcome["event"] == "config_reload_failed", RELOAD_NEEDS_PATH
                after = daemon.events.items.index(outcome) + 1
                first = await daemon.wait_event("poll_finished", after, regions=1)
                later = daemon.events.items.index(first) + 1
                await daemon.wait_event("poll_finished", later, regions=1)
                ready, _, _ = await fetch(daemon.url + "/readyz")

        problems = outcome["problems"]
        assert len(problems) == 1, problems
        assert "poll.intervall: unknown key" in problems[0]
        assert ready == 200
        assert not daemon.named("task_discovered", before)


class TestOverlap:
    async def test_a_poll_longer_than_the_interval_skips_ticks_and_says_so(
        self, service: Service
    ) -> None:
        """Three slow regions polled one at a time outlast a 2 s interval.

        Each region gives up at its deadline (80 % of the interval), but with
        concurrency 1 they queue, so a cycle takes about three deadlines: the
        ticks that fall inside it are skipped, logged and counted.
        """
        # Past a region's deadline, and over soon after the test ends.
        service.sim.faults.latency = 4
        service.configure(
            regions=[EAST, WEST, "ap-southeast-2"],
            poll={"interval": "2s", "concurrency": 1},
        )
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                skipped = await daemon.wait_event("poll_skipped")

                async def skipped_total(floor: float) -> float | None:
                    metrics = await scrape(daemon)
                    value = metrics.get(("ec2_import_polls_skipped_total", ()), 0.0)
                    return value if value > floor else None

                first = await poll_until(lambda: skipped_total(0.0), every=0.5)
                second = await poll_until(lambda: skipped_total(first), every=0.5)

        assert skipped["reason"] == "previous poll still running"
        assert skipped["level"] == "warning"
        assert 0 < first < second


class TestHttp:
    async def test_health_readiness_and_landing_page(self, service: Service) -> None:
        """/healthz is 200 at once, /readyz 503 until the first poll, then 200."""
        service.sim.faults.latency = SLOW_FIRST_POLL
        service.configure(poll={"interval": ONE_POLL})
        async with service.run() as daemon:
            async with asyncio.timeout(WAIT):
                await daemon.wait_event("monitor_started")
                health, _, _ = await fetch(daemon.url + "/healthz")
                not_ready, _, _ = await fetch(daemon.url + "/readyz")

                await daemon.wait_event("task_discovered", task_id=EAST_TASK)
                ready, _, _ = await fetch(daemon.url + "/readyz")
                page, page_type, html = await fetch(daemon.url + "/")

        assert health == 200
        assert not_ready == 503
        assert ready == 200
        assert page == 200
        assert page_type == "text/html"
        assert 'href="/metrics"' in html
        assert EAST_TASK in html


class TestBadConfig:
    async def test_a_broken_config_exits_78_with_one_line_per_problem(
        self, service: Service
    ) -> None:
        """Three mistakes in the file: exit 78 and three lines on stderr."""
        service.config.write_text(
            "[poll]\n"
            'interval = "soon"\n'
            "\n[[targets]]\n"
            'name = "e2e"\n'
            'regions = ["moon-1"]\n'
            "\n[metricz]\n"
            'listen = "127.0.0.1:1"\n'
        )

        async with service.run() as daemon, asyncio.timeout(WAIT):
            code = await daemon.wait_exit()

        lines = daemon.stderr_lines()
        assert code == EX_CONFIG
        assert len(lines) == 3, lines
        assert all(
            line.startswith("ec2-import-monitor: config error: ") for line in lines
        )
        joined = "\n".join(lines)
        for key in ("poll.interval", "targets[0].regions[0]", "metricz"):
            assert key in joined
        assert daemon.events.items == []
