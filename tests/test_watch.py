"""``watch``: the live view, on a terminal and off one, against the simulator.

The simulator's clock is frozen at the real time the test starts, so what
``watch`` shows does not move under the test. The rich view is checked twice:
rendered in-process into a recording console from a real monitor's state,
and drawn by the command itself on a pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import signal
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from monitor.commands.watch import LineView, region_health, visible
from monitor.model import ImportTask
from monitor.simulator import DiskSpec, Simulator, TaskSpec, TimelineBuilder, serve
from monitor.store import Store, read_saved_state
from monitor.terminal import STALLED, duration, tasks_table
from monitor.tracker import (
    RegionKey,
    TaskKey,
    TrackedTask,
    TrackerState,
    estimate_eta,
)
from tests.e2e import ACCESS_KEY, T0, monitor_run, use_test_credentials

REPOSITORY = Path(__file__).resolve().parent.parent

#: The bound on any one wait for the command's output or exit.
WAIT = 30.0

GIB = 2.0**30
ACCOUNT = "e2e"
EAST, WEST = "us-east-1", "eu-west-1"
STUCK = "import-ami-0aaaaaaaaaaaaaaa1"
MOVING = "import-ami-0bbbbbbbbbbbbbbb2"

#: What a hostile description can carry through the API's XML: markup, a C1
#: control (CSI to an 8-bit terminal), a bidi override and a line break.
HOSTILE = "[red]x[/]\x9b1m\u202eab\nz"
HOSTILE_SHOWN = "[red]x[/]\\x9b1m\\u202eab\\nz"
RAW_BYTES = ("\x9b", "\u202e")


@dataclass
class World:
    sim: Simulator
    config: Path
    state: Path

    def add(self, region: str, timeline: TimelineBuilder) -> None:
        self.sim.add_task(self.sim.account_for(ACCESS_KEY), region, timeline)


def environment(**extra: str) -> dict[str, str]:
    """Dummy credentials, and nothing of this machine's AWS or monitor set-up."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "EC2_IMPORT_MONITOR_"))
    }
    return {
        **inherited,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": "watch-test-secret",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def default_sigint() -> None:
    # A test run from a shell's background job inherits SIGINT ignored, and
    # so would the command; Ctrl-C is what is being tested, so restore it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    sim = Simulator(scenario="empty", speed=0.0, start=time.time())
    async with serve(sim) as endpoint:
        state = tmp_path / "state.db"
        config = tmp_path / "config.toml"
        config.write_text(
            f"""
[poll]
interval = "5s"
deadline = "5s"
max_attempts = 1

[[targets]]
name = "{ACCOUNT}"
regions = ["{EAST}", "{WEST}"]
endpoint_url = "{endpoint.url}"

[state]
path = "{state}"

[log]
format = "json"
"""
        )
        yield World(sim, config, state)


def converting(task_id: str, start: float, description: str = "") -> TimelineBuilder:
    """A two-disk task converting from ``start`` on, and never ending."""
    spec = TaskSpec(
        task_id,
        disks=(DiskSpec(8 * GIB), DiskSpec(20 * GIB)),
        description=description or None,
    )
    return (
        TimelineBuilder(spec)
        .phase(start - 600, "pending", 2)
        .phase(start - 300, "converting", 30, disk_progress=[100, 10])
    )


async def start_watch(
    world: World, stdout: int, **env: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "watch",
        "--config",
        str(world.config),
        "--interval",
        "1s",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=environment(**env),
        cwd=REPOSITORY,
        preexec_fn=default_sigint,
    )


async def stop(process: asyncio.subprocess.Process) -> tuple[int, bytes]:
    """Ctrl-C, then the exit status and stderr; killed if it does not exit."""
    process.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(WAIT):
            assert process.stderr is not None
            stderr = await process.stderr.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return code, stderr


async def first_line_with(process: asyncio.subprocess.Process, text: str) -> str:
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(WAIT):
        while raw := await process.stdout.readline():
            seen.append(raw.decode())
            if text in seen[-1]:
                return seen[-1]
    raise AssertionError(f"no line with {text!r} in {seen}")


class TestOffATerminal:
    async def test_each_poll_prints_a_plain_line_per_task_and_ctrl_c_exits_0(
        self, world: World
    ) -> None:
        """Piped output: one escaped line per task, no terminal codes at all."""
        world.add(EAST, converting(STUCK, world.sim.start, HOSTILE))
        process = await start_watch(world, asyncio.subprocess.PIPE)

        first = await first_line_with(process, STUCK)
        again = await first_line_with(process, STUCK)
        code, stderr = await stop(process)

        assert code == 0, stderr.decode()
        assert f" {ACCOUNT}/{EAST} active converting 30% " in first
        assert "disks=disk0:100% disk1:10%" in first
        assert f'description="{HOSTILE_SHOWN}"' in first
        assert first.count("\n") == 1
        for line in (first, again):
            assert "\x1b" not in line
            assert not any(raw in line for raw in RAW_BYTES)

    async def test_ages_count_from_the_daemons_state_which_is_left_untouched(
        self, world: World
    ) -> None:
        """The daemon's store is read for first-seen times and never written."""
        world.add(EAST, converting(STUCK, world.sim.start))
        task = ImportTask(STUCK, "active", phase="pending", progress=0.02)
        key = TaskKey(ACCOUNT, EAST, STUCK)
        two_hours_ago = time.time() - 2 * 3600
        saved = TrackedTask(ACCOUNT, EAST, task, two_hours_ago, two_hours_ago)
        store = Store.open(world.state)
        store.save(TrackerState(tasks={key: saved}))
        store.close()
        process = await start_watch(world, asyncio.subprocess.PIPE)

        line = await first_line_with(process, STUCK)
        code, stderr = await stop(process)

        assert code == 0, stderr.decode()
        assert re.search(r" age=2h0[01]m\b", line), line
        assert "active converting 30%" in line
        assert read_saved_state(world.state).tasks[key] == saved


class Screen:
    """What a program writes to a pseudo-terminal, read as it arrives."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.closed = False
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            chunk = b""
        if chunk:
            self.data += chunk
        else:
            self.closed = True
            self._loop.remove_reader(self.fd)
        self._changed.set()

    async def wait_for(self, *texts: str) -> None:
        wanted = [text.encode() for text in texts]
        while not all(text in self.data for text in wanted):
            if self.closed:
                raise AssertionError(f"the screen closed without {texts}")
            self._changed.clear()
            await self._changed.wait()

    async def wait_closed(self) -> None:
        while not self.closed:
            self._changed.clear()
            await self._changed.wait()


class TestOnATerminal:
    async def test_the_live_view_draws_bars_and_ctrl_c_restores_the_cursor(
        self, world: World
    ) -> None:
        """On a pty: a table with bars per task and disk; Ctrl-C exits 0."""
        world.add(EAST, converting(STUCK, world.sim.start, HOSTILE))
        leader, follower = pty.openpty()
        size = struct.pack("HHHH", 40, 120, 0, 0)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, size)
        try:
            process = await start_watch(world, follower, TERM="xterm-256color")
        finally:
            os.close(follower)
        screen = Screen(leader)

        try:
            async with asyncio.timeout(WAIT):
                await screen.wait_for(STUCK, "converting", "disk1", "━", "30%")
            code, stderr = await stop(process)
            async with asyncio.timeout(WAIT):
                await screen.wait_closed()
        finally:
            os.close(leader)

        drawn = screen.data.decode(errors="replace")
        assert code == 0, stderr.decode()
        assert "\x1b[?25l" in drawn  # the cursor was hidden while drawing...
        assert drawn.rstrip().endswith("\x1b[?25h")  # ... and shown at the end
        assert HOSTILE_SHOWN[:20] in drawn
        assert not any(raw in drawn for raw in RAW_BYTES)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_credentials(monkeypatch)


@pytest.mark.usefixtures("credentials")
class TestTheView:
    async def test_it_shows_bars_phases_disks_eta_and_the_stalled_marker(
        self,
    ) -> None:
        """A monitor's real state, rendered as watch draws it, 120 columns wide."""
        async with monitor_run(regions=[EAST]) as run:
            run.sim.add_task(run.account_id, EAST, converting(STUCK, T0 + 600, HOSTILE))
            run.sim.add_task(
                run.account_id,
                EAST,
                TimelineBuilder(MOVING)
                .phase(T0, "pending", 2)
                .phase(T0 + 600, "converting", 25)
                .phase(T0 + 4 * 3600, "converting", 45),
            )
            for offset in (0, 700, 5 * 3600):
                await run.poll_at(offset)
            regions = run.monitor.poller.regions
            state = run.monitor.state
        console = Console(record=True, width=120, force_terminal=True)

        now = T0 + 5 * 3600

        console.print(
            tasks_table(
                visible(state, regions, since=0.0),
                region_health(state, regions),
                now,
                60.0,
            )
        )

        text = console.export_text(clear=False)
        styled = console.export_text(styles=True)
        stuck_row = next(line for line in text.splitlines() if STUCK in line)
        moving_row = next(line for line in text.splitlines() if MOVING in line)
        assert "active converting" in stuck_row
        assert "30%" in stuck_row
        assert "━" in stuck_row
        assert "45%" in moving_row
        assert STALLED in text
        assert text.count(STALLED) == 1
        assert "disk0" in text
        assert "disk1" in text
        assert "8.0 GiB" in text
        eta = estimate_eta(state.tasks[TaskKey(ACCOUNT, EAST, MOVING)], now)
        assert eta is not None
        assert re.search(rf"5h00m +{duration(eta)}$", moving_row.rstrip())  # age, ETA
        assert HOSTILE_SHOWN[:20] in text
        assert not any(raw in styled for raw in RAW_BYTES)
        assert max(len(line) for line in text.splitlines()) <= 120

    def test_escape_sequences_in_task_text_are_shown_never_sent(self) -> None:
        """ESC, BEL and OSC in a description or message arrive as visible text."""
        hostile = "\x1b]0;pwned\x07\x1b[2J"
        task = ImportTask(STUCK, "deleted", status_message=hostile, description=hostile)
        tracked = TrackedTask(ACCOUNT, EAST, task, 0.0, 0.0, ended_at=60.0)
        console = Console(record=True, width=120, force_terminal=True)

        console.print(tasks_table([tracked], [], 60.0, 60.0))

        styled = console.export_text(styles=True, clear=False)
        assert "\x1b]" not in styled
        assert "\x07" not in styled
        assert "\x1b[2J" not in styled
        assert "\\x1b]0;pwned" in console.export_text()

    def test_off_a_terminal_a_finished_task_is_printed_once_more_only(
        self,
    ) -> None:
        """The poll in which a task ends prints it; later polls leave it out."""
        stream = io.StringIO()
        view = LineView(stream)
        regions = {RegionKey(ACCOUNT, EAST)}
        running = ImportTask(MOVING, "active", phase="converting", progress=0.4)
        done = ImportTask(STUCK, "completed", image_id="ami-0123456789abcdef0")

        view.polling(1)
        view.show(state_of(running, done, ended_at=view.since), regions)
        first = stream.getvalue()
        view.polling(1)
        view.show(state_of(running, done, ended_at=view.since - 1.0), regions)
        second = stream.getvalue().removeprefix(first)

        assert MOVING in first
        assert f"{STUCK} {ACCOUNT}/{EAST} completed ami-0123456789abcdef0" in first
        assert MOVING in second
        assert STUCK not in second


def state_of(running: ImportTask, done: ImportTask, ended_at: float) -> TrackerState:
    tracked = (
        TrackedTask(ACCOUNT, EAST, running, 0.0, 0.0),
        TrackedTask(ACCOUNT, EAST, done, 0.0, 0.0, ended_at=ended_at),
    )
    return TrackerState(tasks={t.key: t for t in tracked})
