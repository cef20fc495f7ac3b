"""Restarts lose nothing and repeat nothing.

The daemon runs as users run it, a subprocess of `run`, against a simulator
whose clock only the test moves: the test steps simulated time between the
daemon's polls, so two runs that see the same steps must report the same
changes, whether or not the daemon was stopped or killed in between.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.simulator import Simulator, serve
from monitor.store import Store
from tests.conftest import free_port
from tests.e2e import ACCESS_KEY, T0

#: A poll every 15 simulated minutes: three hours of the mixed scenario.
STEPS = [T0 + 900.0 * n for n in range(13)]

#: Fields that depend on the daemon's own wall clock, which differs per run.
CLOCK_FIELDS = {
    "timestamp",
    "level",
    "observed_at",
    "eta_seconds",
    "tracked_for_seconds",
    "failed_for_seconds",
}


def write_config(directory: Path, endpoint: str) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[poll]
interval = "1s"
max_attempts = 1

[[targets]]
name = "restart"
regions = ["us-east-1", "eu-west-1"]
endpoint_url = "{endpoint}"

[stall]
# Stalls and age use the daemon's wall clock, not simulated time; keep them
# out of this comparison.
after = "30d"
phases = {{ converting = "30d", pending = "30d" }}
max_age = "60d"

[metrics]
listen = "127.0.0.1:{free_port()}"

[state]
path = "{directory / "state.db"}"

[log]
level = "debug"
format = "json"
"""
    )
    return path


def environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "EC2_IMPORT_MONITOR_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY="restart-secret",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@dataclass
class Daemon:
    """One `ec2-import-monitor run` process and what it has said."""

    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, config: Path) -> Daemon:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            env=environment(),
        )
        return cls(process)

    async def next_poll(self) -> None:
        """Read events until the daemon says a poll has finished."""
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            while True:
                line = await self.process.stdout.readline()
                assert line, "the daemon exited"
                record = json.loads(line)
                if record["event"] == "poll_finished":
                    assert record["failed"] == 0, record
                    return
                if record["event"].startswith(("task_", "snapshot_")):
                    self.events.append(
                        {k: v for k, v in record.items() if k not in CLOCK_FIELDS}
                    )

    async def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        async with asyncio.timeout(20):
            return await self.process.wait()


async def drive(
    tmp: Path, stop_after: Sequence[int] = (), kill_during: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Poll once per step; SIGTERM after, or SIGKILL during, the given steps."""
    sim = Simulator(scenario="mixed", seed=11, tasks=8, speed=0.0, start=T0)
    events: list[dict[str, Any]] = []

    async with serve(sim) as endpoint:
        config = write_config(tmp, endpoint.url)
        daemon = await Daemon.start(config)
        try:
            for step, at in enumerate(STEPS):
                sim.clock.advance(at - sim.clock.now())

                if step in kill_during:
                    # Hold the poll inside a request, then kill -9 the daemon.
                    sim.faults.latency = 5.0
                    async with asyncio.timeout(30):
                        # A counter is all the simulator offers to wait on.
                        while sim.in_flight == 0:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                    assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
                    events += daemon.events
                    sim.faults.latency = 0.0
                    daemon = await Daemon.start(config)

                await daemon.next_poll()

                if step in stop_after:
                    assert await daemon.stop(signal.SIGTERM) == 0
                    events += daemon.events
                    # The new daemon polls at once, so the next step's time
                    # is set before it starts, as the loop would have.
                    sim.clock.advance(STEPS[step + 1] - sim.clock.now())
                    daemon = await Daemon.start(config)
        finally:
            if daemon.process.returncode is None:
                await daemon.stop(signal.SIGTERM)
        events += daemon.events

    return events


async def test_a_clean_stop_and_a_kill_during_a_poll_lose_and_repeat_nothing(
    tmp_path: Path,
) -> None:
    straight = tmp_path / "straight"
    restarted = tmp_path / "restarted"
    straight.mkdir()
    restarted.mkdir()

    expected = await drive(straight)
    actual = await drive(restarted, stop_after=[4], kill_during=[8])

    assert actual == expected
    names = {event["event"] for event in expected}
    assert {"task_discovered", "task_completed", "task_failed"} <= names


async def test_history_holds_the_whole_timeline_across_restarts(
    tmp_path: Path,
) -> None:
    events = await drive(tmp_path, stop_after=[3], kill_during=[7])
    completed = next(e for e in events if e["event"] == "task_completed")

    store = Store.open(tmp_path / "state.db", read_only=True)
    try:
        timeline = [row["event"] for row in store.history(completed["task_id"])]
    finally:
        store.close()

    told = [e["event"] for e in events if e["task_id"] == completed["task_id"]]
    assert timeline == told
    assert timeline[0] == "task_discovered"
    assert timeline[-1] == "task_completed"
