"""``wait``: as a pipeline runs it, a subprocess against the simulator over HTTP.

The simulator runs in the test's event loop at 600 simulated seconds per
real second, so an import of an hour's simulated time ends in six seconds.
The bookkeeping that decides the outcome is also tested directly, fed
region polls by hand, where timing would make a subprocess test flaky.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from monitor.commands.wait import (
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNKNOWN,
    BarReporter,
    LineReporter,
    Waiter,
)
from monitor.model import ImportTask
from monitor.simulator import Simulator, TaskSpec, TimelineBuilder, serve
from monitor.tracker import RegionKey, RegionPoll
from tests.e2e import ACCESS_KEY

REPOSITORY = Path(__file__).resolve().parent.parent

#: Simulated seconds per real second.
SPEED = 600.0

#: The bound on one run of the command; every test's own wait is far shorter.
RUN_LIMIT = 40.0

ACCOUNT = "e2e"
EAST, WEST = "us-east-1", "eu-west-1"
FIRST = "import-ami-0aaaaaaaaaaaaaaa1"
SECOND = "import-ami-0bbbbbbbbbbbbbbb2"
MISSING = "import-ami-0ccccccccccccccc3"


@dataclass
class World:
    """A served simulator and a config file that points at it."""

    sim: Simulator
    config: Path

    @property
    def start(self) -> float:
        return self.sim.start

    def add(self, region: str, timeline: TimelineBuilder) -> None:
        self.sim.add_task(self.sim.account_for(ACCESS_KEY), region, timeline)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def environment() -> dict[str, str]:
    """Dummy credentials, and nothing of this machine's AWS or monitor set-up."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "EC2_IMPORT_MONITOR_"))
    }
    return {
        **inherited,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": "wait-test-secret",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def write_config(directory: Path, url: str) -> Path:
    # One attempt per request: a throttled poll fails at once instead of
    # backing off past the next interval.
    config = directory / "config.toml"
    config.write_text(
        f"""
[poll]
interval = "5s"
deadline = "5s"
max_attempts = 1

[[targets]]
name = "{ACCOUNT}"
regions = ["{EAST}", "{WEST}"]
endpoint_url = "{url}"

[state]
path = "{directory / "state.db"}"

[log]
format = "json"
"""
    )
    return config


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    sim = Simulator(scenario="empty", speed=SPEED, start=time.time())
    async with serve(sim) as endpoint:
        yield World(sim, write_config(tmp_path, endpoint.url))


async def start_wait(world: World, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "wait",
        "--config",
        str(world.config),
        "--interval",
        "1s",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),
        cwd=REPOSITORY,
    )


async def run_wait(world: World, *args: str) -> Result:
    process = await start_wait(world, *args)
    try:
        async with asyncio.timeout(RUN_LIMIT):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def importing(task_id: str, start: float, description: str = "") -> TimelineBuilder:
    """A task that is pending at ``start`` and converting five minutes later."""
    return (
        TimelineBuilder(TaskSpec(task_id, description=description or None))
        .phase(start, "pending", 2)
        .phase(start + 300, "converting", 25)
        .phase(start + 1200, "converting", 40)
    )


class TestExitStatus:
    async def test_every_task_completing_exits_0_with_each_ami_in_the_json(
        self, world: World
    ) -> None:
        """Tasks in two regions are found and followed until both complete."""
        world.add(EAST, importing(FIRST, world.start).completed(world.start + 2400))
        world.add(
            WEST,
            importing(SECOND, world.start).completed(
                world.start + 3000, image_id="ami-0123456789abcdef0"
            ),
        )

        result = await run_wait(world, FIRST, SECOND, "--json")

        assert result.code == EXIT_COMPLETED, result.stderr
        output = result.json()
        assert output["outcome"] == "completed"
        assert output["exit_status"] == EXIT_COMPLETED
        by_id = {task["task_id"]: task for task in output["tasks"]}
        assert by_id[FIRST]["region"] == EAST
        assert by_id[SECOND]["region"] == WEST
        assert by_id[SECOND]["image_id"] == "ami-0123456789abcdef0"
        assert by_id[FIRST]["image_id"].startswith("ami-")
        for task in by_id.values():
            assert task["account"] == ACCOUNT
            assert task["status"] == "completed"
            assert task["result"] == "completed"
            assert task["status_message"] is None
        # Progress went to stderr, a line per change, naming task and region.
        assert f"{FIRST} {ACCOUNT}/{EAST} " in result.stderr

    async def test_a_failed_import_exits_1_and_prints_its_status_message(
        self, world: World
    ) -> None:
        """A task ending deleted is a failure, and says why on both streams."""
        message = "ClientError: Unsupported kernel version 5.19.0-1025-aws"
        world.add(
            EAST, importing(FIRST, world.start).failed(world.start + 1500, message)
        )

        result = await run_wait(world, FIRST)

        assert result.code == EXIT_FAILED, result.stderr
        assert f"{FIRST} failed: {message}" in result.stderr
        assert result.stdout == f"{FIRST} failed {ACCOUNT}/{EAST} {message}\n"

    async def test_a_cancelled_import_among_completed_ones_exits_1(
        self, world: World
    ) -> None:
        """One cancelled task fails the wait, however the others end."""
        world.add(EAST, importing(FIRST, world.start).completed(world.start + 1500))
        world.add(EAST, importing(SECOND, world.start).cancelled(world.start + 1500))

        result = await run_wait(world, FIRST, SECOND, "--json")

        assert result.code == EXIT_FAILED, result.stderr
        output = result.json()
        assert output["outcome"] == "failed"
        results = {t["task_id"]: t["result"] for t in output["tasks"]}
        assert results == {FIRST: "completed", SECOND: "failed"}
        assert f"{SECOND} failed: User cancelled" in result.stderr

    async def test_the_timeout_exits_2_with_the_last_known_state(
        self, world: World
    ) -> None:
        """A task still converting when the timeout passes is reported as is."""
        world.add(EAST, importing(FIRST, world.start))

        started = time.monotonic()
        result = await run_wait(world, FIRST, "--timeout", "3s", "--json")

        assert result.code == EXIT_TIMEOUT, result.stderr
        assert time.monotonic() - started < 3.0 + 10.0
        output = result.json()
        assert output["outcome"] == "timeout"
        (task,) = output["tasks"]
        assert task["result"] == "running"
        assert task["status"] == "active"
        assert task["phase"] == "converting"
        assert task["region"] == EAST
        assert f"{FIRST}: still active converting after 3s" in result.stderr

    async def test_an_id_no_region_has_exits_3_after_asking_every_region(
        self, world: World
    ) -> None:
        """Not found by ID in any configured region: unknown, on the first poll."""
        world.add(EAST, importing(FIRST, world.start))

        result = await run_wait(world, FIRST, MISSING)

        assert result.code == EXIT_UNKNOWN, result.stderr
        assert f"{MISSING}: not found in any configured region" in result.stderr
        asked = {
            record.region
            for record in world.sim.requests
            if record.params.get("ImportTaskId.1") == MISSING
            or record.params.get("ImportTaskId.2") == MISSING
        }
        assert asked == {EAST, WEST}

    async def test_a_malformed_id_exits_3_without_asking_aws(
        self, world: World
    ) -> None:
        """A typo is reported as such, before any request is made."""
        result = await run_wait(world, "ami-0123456789abcdef0")

        assert result.code == EXIT_UNKNOWN
        assert "ami-0123456789abcdef0: not an import task ID" in result.stderr
        assert world.sim.requests == []


class TestFailingRegions:
    async def test_a_region_throttled_mid_wait_does_not_fail_its_task(
        self, world: World
    ) -> None:
        """The task's region fails and recovers; the wait still ends with 0."""
        world.add(EAST, importing(FIRST, world.start).completed(world.start + 4200))
        process = await start_wait(world, FIRST, "--json")
        stderr = process.stderr
        assert stderr is not None
        lines: list[str] = []

        async def line_with(text: str) -> str:
            while True:
                raw = await stderr.readline()
                if not raw:
                    raise AssertionError(f"no line with {text!r} in {lines}")
                lines.append(raw.decode())
                if text in lines[-1]:
                    return lines[-1]

        try:
            async with asyncio.timeout(RUN_LIMIT):
                await line_with(f"{FIRST} {ACCOUNT}/{EAST}")
                world.sim.faults.for_region(EAST).throttle_rate = 1.0
                failed = await line_with("poll failed")
                world.sim.faults.clear()
                await line_with("poll recovered")
                stdout, rest = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

        assert process.returncode == EXIT_COMPLETED, "".join(lines) + rest.decode()
        assert f"{ACCOUNT}/{EAST}: poll failed" in failed
        assert "RequestLimitExceeded" in failed
        (task,) = json.loads(stdout)["tasks"]
        assert task["result"] == "completed"


def poll(
    region: str,
    ok: bool = True,
    active: Sequence[ImportTask] = (),
    resolved: Sequence[ImportTask] = (),
    looked_up: Sequence[str] = (),
) -> RegionPoll:
    return RegionPoll(
        ACCOUNT,
        region,
        ok=ok,
        active=tuple(active),
        resolved=tuple(resolved),
        looked_up=frozenset(looked_up),
        error=None if ok else "RequestLimitExceeded: Request limit exceeded.",
    )


def task(task_id: str, status: str = "active", **fields: str) -> ImportTask:
    parsed = ImportTask.from_api({"ImportTaskId": task_id, "Status": status, **fields})
    assert parsed is not None
    return parsed


def waiter(*task_ids: str) -> tuple[Waiter, io.StringIO]:
    stream = io.StringIO()
    waiting = Waiter(task_ids, LineReporter(stream, 60.0))
    waiting.regions = (RegionKey(ACCOUNT, EAST), RegionKey(ACCOUNT, WEST))
    return waiting, stream


class TestWaiter:
    def test_a_task_is_not_unknown_while_a_region_has_not_answered(self) -> None:
        """A region that is down may hold the task: keep waiting for it."""
        waiting, _ = waiter(FIRST)

        waiting.apply([poll(EAST), poll(WEST, ok=False)])
        first = waiting.outcome()
        waiting.apply([poll(EAST), poll(WEST, active=[task(FIRST)])])
        second = waiting.outcome()

        assert first is None
        assert second is None
        assert waiting.tasks[FIRST].region == WEST

    def test_a_task_is_unknown_once_every_region_answered_without_it(self) -> None:
        """Every region answered and none listed the task: exit 3."""
        waiting, _ = waiter(FIRST, SECOND)

        waiting.apply([poll(EAST, active=[task(FIRST)]), poll(WEST)])
        outcome = waiting.outcome()

        assert outcome is not None
        assert outcome.code == EXIT_UNKNOWN

    def test_a_failed_poll_changes_nothing_and_is_reported_once(self) -> None:
        """Rule 1: the task keeps its state through failures; one line says so."""
        waiting, stream = waiter(FIRST)
        waiting.apply([poll(EAST, active=[task(FIRST)]), poll(WEST)])

        for _ in range(3):
            waiting.apply([poll(EAST, ok=False), poll(WEST)])
        outcome = waiting.outcome()
        waiting.apply([poll(EAST, active=[task(FIRST)]), poll(WEST)])

        assert outcome is None
        assert waiting.tasks[FIRST].result == "running"
        assert waiting.lookups()[RegionKey(ACCOUNT, EAST)] == {FIRST}
        assert waiting.lookups()[RegionKey(ACCOUNT, WEST)] == set()
        text = stream.getvalue()
        assert text.count("poll failed") == 1
        assert text.count("poll recovered") == 1

    def test_a_found_task_that_a_lookup_no_longer_finds_has_vanished(self) -> None:
        """Rule 2: only a lookup that asked for it can say it is gone: exit 1."""
        waiting, _ = waiter(FIRST)
        waiting.apply([poll(EAST, active=[task(FIRST)]), poll(WEST)])

        waiting.apply([poll(EAST), poll(WEST)])
        not_asked = waiting.outcome()
        waiting.apply([poll(EAST, looked_up=[FIRST]), poll(WEST)])
        asked = waiting.outcome()

        assert not_asked is None
        assert asked is not None
        assert asked.code == EXIT_FAILED
        assert waiting.tasks[FIRST].result == "vanished"

    def test_an_ended_task_is_not_asked_for_again(self) -> None:
        """Once a task has its final state, no region's poll looks it up."""
        waiting, _ = waiter(FIRST, SECOND)

        waiting.apply(
            [
                poll(EAST, resolved=[task(FIRST, "completed", ImageId="ami-1")]),
                poll(WEST, active=[task(SECOND)]),
            ]
        )

        assert waiting.lookups() == {
            RegionKey(ACCOUNT, EAST): set(),
            RegionKey(ACCOUNT, WEST): {SECOND},
        }
        assert waiting.tasks[FIRST].result == "completed"


class TestBars:
    def test_on_a_terminal_each_task_has_a_bar_with_its_place_and_phase(
        self,
    ) -> None:
        """The rich view: a bar per task, moved by each change, text escaped."""
        console = Console(record=True, width=120, force_terminal=True)
        progress = Progress(*BarReporter.columns(), console=console, auto_refresh=False)
        waiting = Waiter([FIRST, SECOND], BarReporter(progress, [FIRST, SECOND]))
        waiting.regions = (RegionKey(ACCOUNT, EAST),)
        hostile = task(FIRST, StatusMessage="converting", Progress="45")
        hostile = replace(hostile, phase="converting\x1b[2J[red]x[/]")

        waiting.apply([poll(EAST, active=[hostile])])
        console.print(progress.get_renderable())

        text = console.export_text(clear=False)
        styled = console.export_text(styles=True)
        first = next(line for line in text.splitlines() if FIRST in line)
        second = next(line for line in text.splitlines() if SECOND in line)
        assert "45%" in first
        assert "━" in first
        assert f"{ACCOUNT}/{EAST} active converting\\x1b[2J[red]x[/]" in first
        assert "looking for it" in second
        assert "\x1b[2J" not in styled
