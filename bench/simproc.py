"""The simulator in a process of its own, and what it served.

The simulator runs as ``python -m monitor simulate`` so that its CPU is never
counted against the client being measured. Its clock is frozen (``--speed
0``), so every client sees exactly the same tasks. Requests are counted from
its own request log: the ``simulate`` command leaves structlog unconfigured,
and structlog's default logger prints every ``request_served`` debug event
to stdout, which goes to a file here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

#: Any access key works; this one picks the simulated account for everybody.
ACCESS_KEY = "AKIDBENCHMARK0001"
# The simulator checks no signature, so this protects nothing.
SECRET_KEY = "bench-secret-not-checked"  # noqa: S105

#: Sixteen real region names, so region validation everywhere accepts them.
REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "sa-east-1",
)

SCENARIO = "scale"
SEED = 0
STARTUP_SECONDS = 60.0

_URL = re.compile(r"EC2 import simulator on (http://\S+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tasks_for_active(wanted: list[int], region: str = REGIONS[0]) -> dict[int, int]:
    """The ``--tasks`` value that gives each wanted number of active tasks.

    The scale scenario draws its tasks one after another from one seeded
    generator, so the first k tasks of a large region are the tasks of a
    region of k. One large region therefore answers every count at once.
    Counts differ a little between regions, since each has its own seed;
    this is exact for ``region`` only, and the report shows what was seen.
    """
    from monitor.simulator.protocol import derived_account
    from monitor.simulator.scenarios import generate

    # About four in five scale tasks are active at the start; build enough.
    start = 1_800_000_000.0
    total = int(max(wanted) * 1.5) + 50
    timelines = generate(
        SCENARIO, SEED, derived_account(ACCESS_KEY), region, start, total
    )

    found: dict[int, int] = {}
    active = 0
    for count, timeline in enumerate(timelines, start=1):
        step = timeline.step_at(start)
        active += step is not None and step.status == "active"
        if active in wanted and active not in found:
            found[active] = count
    missing = [n for n in wanted if n not in found]
    if missing:
        raise RuntimeError(f"no task count gives {missing} active tasks")
    return found


class SimulatorProcess:
    """``python -m monitor simulate`` with the scale scenario, frozen in time."""

    def __init__(
        self,
        tasks: int,
        latency: float,
        workdir: Path,
        monitor_path: Path | None = None,
    ) -> None:
        self.tasks = tasks
        self.latency = latency
        self.workdir = workdir
        self.monitor_path = monitor_path
        self.log_path = workdir / f"simulator-{tasks}-{latency:g}.log"
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the simulator is not running")
        return self._process.pid

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "monitor",
            "simulate",
            "--scenario",
            SCENARIO,
            "--seed",
            str(SEED),
            "--tasks",
            str(self.tasks),
            "--latency",
            f"{self.latency:g}",
            "--speed",
            "0",
            "--listen",
            "127.0.0.1:0",
        ]
        env = dict(os.environ)
        if self.monitor_path is not None:
            env["PYTHONPATH"] = str(self.monitor_path)
        with self.log_path.open("wb") as log_file:
            # Run from the work directory, so that `-m monitor` imports the
            # tree on PYTHONPATH rather than the one in the current directory.
            self._process = subprocess.Popen(
                argv,
                env=env,
                cwd=self.workdir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

        # The command prints its URL once it listens; port 0 picks a free one.
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            match = _URL.search(self.log_path.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the simulator did not start; its output is in {self.log_path}"
        )

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def requests(self) -> int:
        """Requests served so far, whatever their outcome."""
        with self.log_path.open("rb") as log_file:
            return sum(b"request_served" in line for line in log_file)

    def cpu_seconds(self) -> float:
        """User plus system CPU the simulator has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); the split above
        # starts at field 3 (state).
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
