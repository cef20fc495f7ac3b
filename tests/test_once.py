"""`once`: one poll of every target, a table or JSON, for people and scripts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from monitor.config import load_settings
from monitor.daemon import Monitor
from monitor.simulator import DiskSpec, Simulator, TaskSpec, TimelineBuilder, serve
from tests.e2e import ACCESS_KEY, use_test_credentials

TASK = "import-ami-0ccccccccccccccc3"
GIB = 2.0**30


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_credentials(monkeypatch)


def simulator_two_hours_in() -> Simulator:
    """A task converting for two hours, ending two hours from the real now."""
    start = time.time() - 7200
    sim = Simulator(scenario="empty", speed=0.0, start=start)
    sim.add_task(
        sim.account_for(ACCESS_KEY),
        "us-east-1",
        TimelineBuilder(TaskSpec(TASK, disks=(DiskSpec(size_bytes=40 * GIB),)))
        .phase(start, "converting", 20, disk_progress=[10])
        .phase(start + 3600, "converting", 35, disk_progress=[40])
        .phase(start + 7000, "converting", 50, disk_progress=[70])
        .completed(start + 14400),
    )
    return sim


def write_config(path: Path, url: str, state: Path) -> Path:
    path.write_text(
        f'[[targets]]\nname = "ops"\nregions = ["us-east-1", "eu-west-1"]\n'
        f'endpoint_url = "{url}"\n\n[state]\npath = "{state}"\n'
    )
    return path


async def once(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "once",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_table_lists_each_task_with_phase_progress_and_disks(
    tmp_path: Path,
) -> None:
    sim = simulator_two_hours_in()
    sim.clock.advance(7000)
    async with serve(sim) as endpoint:
        config = write_config(tmp_path / "c.toml", endpoint.url, tmp_path / "s.db")

        code, out, err = await once("--config", str(config))

    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:6] == [
        "TASK",
        "ACCOUNT",
        "REGION",
        "STATUS",
        "PHASE",
        "PROGRESS",
    ]
    assert row.split()[:6] == [TASK, "ops", "us-east-1", "active", "converting", "50%"]
    assert "disk0:70%" in row
    assert not (tmp_path / "s.db").exists(), "once must not write the daemon's state"


async def test_json_carries_an_eta_from_the_daemons_saved_history(
    tmp_path: Path,
) -> None:
    sim = simulator_two_hours_in()
    state = tmp_path / "state.db"
    async with serve(sim) as endpoint:
        config = write_config(tmp_path / "c.toml", endpoint.url, state)
        daemon = Monitor(load_settings(config), clock=sim.clock.now)
        await daemon.start()
        for _ in range(3):
            await daemon.poll_once(report=False)
            sim.clock.advance(3500)
        await daemon.close()

        code, out, err = await once("--config", str(config), "--json")

    assert code == 0, err
    result = json.loads(out)
    (task,) = result["tasks"]
    assert task["task_id"] == TASK
    assert task["progress"] == 0.5
    # 30 % gained in 7000 s: 50 % left is about 11,700 s from the last change.
    assert 9000 < task["eta_seconds"] < 14000
    assert {(r["region"], r["ok"]) for r in result["regions"]} == {
        ("us-east-1", True),
        ("eu-west-1", True),
    }


async def test_a_failing_region_is_reported_and_exits_1(tmp_path: Path) -> None:
    sim = simulator_two_hours_in()
    sim.faults.for_region("eu-west-1").auth_failure = True
    async with serve(sim) as endpoint:
        config = write_config(tmp_path / "c.toml", endpoint.url, tmp_path / "s.db")

        code, out, err = await once("--config", str(config))

    assert code == 1
    assert TASK in out
    assert "ops/eu-west-1: poll failed: AuthFailure" in err
