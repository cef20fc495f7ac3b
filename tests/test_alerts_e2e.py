"""The shipped alert rules in a real Prometheus, fed by the real daemon.

Prometheus (Debian's 2.42) scrapes ``monitor run`` every second and
evaluates config/prometheus/ec2-import-alerts.yml exactly as shipped. Its
``for: 2m`` on Ec2ImportStalled is honoured, not shortened, so this module
takes about two and a half minutes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.simulator import DiskSpec, Simulator, TaskSpec, TimelineBuilder, serve
from tests.conftest import free_port, require_tool
from tests.service_helpers import (
    ACCOUNT,
    REPOSITORY,
    WAIT,
    Service,
    fetch,
    poll_until,
)

pytestmark = pytest.mark.promtool

RULES = REPOSITORY / "config" / "prometheus" / "ec2-import-alerts.yml"

#: The job name the shipped rules look for.
JOB = "ec2-import-monitor"

ALERT = "Ec2ImportStalled"
REGION = "us-east-1"
STALLED = "import-ami-0dead0dead0dead01"
STEADY = "import-ami-0beef0beef0beef02"

#: The stall threshold the daemon is given, in seconds, for every phase.
STALL_AFTER = 10.0

#: The rule's ``for: 2m``.
RULE_FOR = 120.0

#: Seconds from the daemon's start to a firing alert, with room to spare.
FIRING_WITHIN = STALL_AFTER + RULE_FOR + 60.0

#: When the stalled task moves again: far ahead, reached by a clock jump.
MOVES_AFTER = 3600.0

#: Seconds between steps of a task that is moving, well under STALL_AFTER.
STEP = 3.0

#: The steady task keeps moving for longer than this test runs.
STEADY_STEPS = 90


def stalled_timeline(start: float) -> TimelineBuilder:
    """Converting at 30 % until MOVES_AFTER, then moving until it completes."""
    builder = TimelineBuilder(TaskSpec(STALLED, disks=(DiskSpec(),))).phase(
        start, "converting", 30, disk_progress=[40]
    )
    moves = start + MOVES_AFTER
    # Once moving it keeps moving, so it cannot stall a second time.
    for step in range(20):
        builder.phase(
            moves + step * STEP, "converting", 31 + step, disk_progress=[42 + step]
        )
    return builder.completed(moves + 20 * STEP)


def steady_timeline(start: float) -> TimelineBuilder:
    """Converting one percent further every STEP seconds."""
    builder = TimelineBuilder(STEADY)
    for step in range(STEADY_STEPS):
        builder.phase(start + step * STEP, "converting", 5 + step, disk_progress=[step])
    return builder.completed(start + STEADY_STEPS * STEP)


def prometheus_config(target_port: int) -> str:
    """prometheus.yml, written as JSON, which YAML reads as it is."""
    config = {
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    return json.dumps(config, indent=2)


@asynccontextmanager
async def prometheus(
    binary: str, directory: Path, target_port: int
) -> AsyncIterator[str]:
    """A Prometheus scraping the daemon's port; yields its base URL once ready."""
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(prometheus_config(target_port))
    log_path = directory / "prometheus.log"
    url = f"http://127.0.0.1:{port}"

    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )

    async def ready() -> bool | None:
        if process.returncode is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}")
        try:
            status, _, _ = await fetch(url + "/-/ready")
        except aiohttp.ClientError:
            return None
        return True if status == 200 else None

    try:
        async with asyncio.timeout(WAIT):
            await poll_until(ready, every=0.2)
        yield url
    except BaseException as error:
        tail = log_path.read_text(errors="replace")[-3000:]
        error.add_note(f"prometheus log:\n{tail}")
        raise
    finally:
        if process.returncode is None:
            process.terminate()
            with suppress(TimeoutError):
                async with asyncio.timeout(WAIT):
                    await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stalled_alerts(url: str) -> list[dict[str, Any]]:
    """Every Ec2ImportStalled alert Prometheus has pending or firing."""
    status, _, body = await fetch(url + "/api/v1/alerts")
    assert status == 200, body
    alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"].get("alertname") == ALERT]


# The rule's two minutes, plus starting, resolving and stopping.
@pytest.mark.timeout(300)
async def test_a_stalled_import_fires_the_alert_until_it_moves_again(
    tmp_path: Path,
) -> None:
    """Ec2ImportStalled fires for the stuck task only, and resolves once it moves.

    One task holds at 30 % while converting; another moves every few
    seconds. The daemon calls the first stalled after 10 s, the shipped rule
    waits its two minutes and fires with the task's labels; when the task
    moves on, the daemon says it resumed and the alert goes away.
    """
    binary = require_tool("prometheus", "/usr/bin/prometheus")
    sim = Simulator(scenario="empty", speed=1.0)
    alerted: set[str] = set()

    async def firing(url: str) -> dict[str, Any] | None:
        alerts = await stalled_alerts(url)
        alerted.update(alert["labels"].get("task_id", "") for alert in alerts)
        return next((a for a in alerts if a["state"] == "firing"), None)

    async def gone(url: str) -> bool | None:
        alerts = await stalled_alerts(url)
        alerted.update(alert["labels"].get("task_id", "") for alert in alerts)
        return True if not alerts else None

    async with serve(sim) as endpoint:
        service = Service(sim, endpoint, tmp_path)
        start = sim.clock.now()
        sim.add_task(service.account_id, REGION, stalled_timeline(start))
        sim.add_task(service.account_id, REGION, steady_timeline(start))
        service.configure(
            regions=[REGION],
            stall={
                "after": f"{STALL_AFTER:g}s",
                "per_gib": "0s",
                "phases": {"converting": f"{STALL_AFTER:g}s"},
            },
        )

        async with (
            prometheus(binary, tmp_path, service.port) as url,
            service.run() as daemon,
        ):
            async with asyncio.timeout(FIRING_WITHIN):
                await daemon.wait_event("task_stalled", task_id=STALLED)
                alert = await poll_until(lambda: firing(url), every=1.0)

            moved = daemon.mark
            sim.clock.advance(start + MOVES_AFTER - sim.clock.now())
            async with asyncio.timeout(2 * WAIT):
                await daemon.wait_event("task_resumed", moved, task_id=STALLED)
                await poll_until(lambda: gone(url), every=1.0)

            async with asyncio.timeout(WAIT):
                code, _ = await daemon.stop()

    assert alert["labels"] == {
        "alertname": ALERT,
        "severity": "critical",
        "job": JOB,
        "account": ACCOUNT,
        "region": REGION,
        "task_id": STALLED,
        "phase": "converting",
    }
    annotations = alert["annotations"]
    assert (
        annotations["summary"] == f"EC2 import {STALLED} has stalled while converting"
    )
    assert annotations["description"].startswith(
        f"Import task {STALLED} in account {ACCOUNT}, region {REGION} has shown "
        "no change of progress, phase or disk for "
    )
    assert "while in phase converting" in annotations["description"]
    assert annotations["runbook_url"] == "docs/runbook.md#ec2importstalled"
    # The value is the time since the task last changed.
    assert float(alert["value"]) >= STALL_AFTER + RULE_FOR - 5
    assert alerted == {STALLED}

    stalls = daemon.named("task_stalled", task_id=STALLED)
    assert len(stalls) == 1
    assert (stalls[0]["phase"], stalls[0]["threshold_seconds"]) == ("converting", 10)
    assert len(daemon.named("task_resumed", task_id=STALLED)) == 1
    assert daemon.named("task_stalled", task_id=STEADY) == []
    assert daemon.named("task_progressed", task_id=STEADY), "the steady task moved"
    assert code == 0
