"""Helpers for tests that run the monitor against the simulator over HTTP."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Settings
from monitor.daemon import Monitor
from monitor.events import Event
from monitor.simulator import Simulator, serve

ACCESS_KEY = "AKIAE2ETESTKEY000001"
T0 = 1_800_000_000.0
REGIONS = ("us-east-1", "eu-west-1")


def use_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, and nothing from the machine's own AWS set-up."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e2e-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def settings_for(
    url: str, state: Path, regions: Iterable[str] = REGIONS, **poll: Any
) -> Settings:
    return Settings.model_validate(
        {
            "poll": {"interval": "60s", "max_attempts": 2, **poll},
            "targets": [{"name": "e2e", "regions": list(regions), "endpoint_url": url}],
            "state": {"path": str(state)},
        }
    )


@dataclass
class Run:
    """A monitor driven cycle by cycle on the simulator's manual clock."""

    sim: Simulator
    monitor: Monitor
    events: list[Event] = field(default_factory=list)

    @property
    def account_id(self) -> str:
        return self.sim.account_for(ACCESS_KEY)

    async def poll_at(self, offset: float) -> list[Event]:
        """Move the simulated clock to T0 + offset and poll once."""
        self.sim.clock.advance(T0 + offset - self.sim.clock.now())
        events = await self.monitor.poll_once(report=False)
        self.events.extend(events)
        return events

    async def poll_every(self, step: float, until: float) -> None:
        offset = 0.0
        while offset <= until:
            await self.poll_at(offset)
            offset += step

    def by_task(self) -> dict[str | None, list[Event]]:
        grouped: dict[str | None, list[Event]] = defaultdict(list)
        for event in self.events:
            grouped[event.task_id].append(event)
        return grouped


@asynccontextmanager
async def monitor_run(
    scenario: str = "empty",
    tasks: int | None = None,
    seed: int = 3,
    regions: Iterable[str] = REGIONS,
    **poll: Any,
) -> AsyncIterator[Run]:
    sim = Simulator(scenario=scenario, seed=seed, tasks=tasks, speed=0.0, start=T0)
    with tempfile.TemporaryDirectory(prefix="ec2-import-monitor-test-") as tmp:
        async with serve(sim) as endpoint:
            state = Path(tmp) / "state.db"
            settings = settings_for(endpoint.url, state, regions, **poll)
            monitor = Monitor(settings, clock=sim.clock.now)
            await monitor.start()
            try:
                yield Run(sim, monitor)
            finally:
                await monitor.close()
