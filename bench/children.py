"""Running one measured client as a child process.

Each client runs as its own process under GNU time, reaped with
``os.wait4``, which returns the resource usage of the child and of every
process it waited for: user plus system CPU, and the largest resident set
among them (so a shell loop reports its biggest ``aws`` run, not the sum).

The peak resident set comes from GNU time rather than from ``wait4``:
Linux carries the resident set of the process that forked over into the
child's peak, so a child of this (large) process would report at least our
own size. GNU time is small, so the peak it reports is the client's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from simproc import ACCESS_KEY, SECRET_KEY, SimulatorProcess

#: A client that takes longer than this is killed and the run fails.
CHILD_TIMEOUT = 600.0

GNU_TIME = Path("/usr/bin/time")


class ChildFailed(RuntimeError):
    """A measured client exited non-zero or ran past its timeout."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one client."""

    wall: float
    cpu: float
    max_rss_mib: float
    requests: int
    server_cpu: float
    stdout: bytes


def client_env(workdir: Path) -> dict[str, str]:
    """A clean environment: dummy keys, no profile, no shared files, no IMDS."""
    missing = workdir / "no-such-aws-file"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(workdir)),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": str(missing),
        "AWS_SHARED_CREDENTIALS_FILE": str(missing),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def run_child(
    argv: Sequence[str],
    env: Mapping[str, str],
    sim: SimulatorProcess,
    timeout: float = CHILD_TIMEOUT,
) -> Sample:
    """Run ``argv`` to the end and measure it; stdout is kept, stderr shown.

    The child runs in the simulator's work directory: ``python -m`` puts
    the working directory first on the import path, and the repository's
    own directory would shadow the monitor tree chosen with PYTHONPATH.
    """
    requests_before = sim.requests()
    server_before = sim.cpu_seconds()

    # stdout goes to a file, not a pipe, so a large JSON answer cannot block
    # the child while this process sits in wait4.
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(mode="r") as peak,
    ):
        command = list(argv)
        if GNU_TIME.exists():
            command[:0] = [str(GNU_TIME), "--format=%M", f"--output={peak.name}"]
        started = time.perf_counter()
        # A session of its own, so a timeout can end the client under GNU
        # time (and a shell loop's children) with the group, and nothing else.
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=sim.workdir,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        killer = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)

        out.seek(0)
        stdout = out.read()
        # GNU time writes the KiB last, after a line about a non-zero exit.
        lines = peak.read().split()
        peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else usage.ru_maxrss
        err.seek(0)
        stderr = err.read().decode(errors="replace")

    if process.returncode != 0:
        raise ChildFailed(
            f"{' '.join(argv[:4])} ... exited {process.returncode}:\n{stderr[-2000:]}"
        )
    return Sample(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mib=peak_kib / 1024,
        requests=sim.requests() - requests_before,
        server_cpu=sim.cpu_seconds() - server_before,
        stdout=stdout,
    )
