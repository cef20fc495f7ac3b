"""The clients being compared, each run as a child against one simulator.

Every client does the same work: list the active import tasks of the same
regions, page by page, with the same page size. Each method returns a
:class:`Result` in the same units, so the report can put them side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from children import Sample, client_env, run_child
from simproc import SimulatorProcess

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
AWS_CLI = ROOT / ".venv-awscli" / "bin" / "aws"

#: Shell loop over the regions, as people write it; one ``aws`` run each.
CLI_LOOP = """\
for region in $BENCH_REGIONS; do
    "$BENCH_AWS" ec2 describe-import-image-tasks \\
        --filters Name=task-state,Values=active \\
        --region "$region" --endpoint-url "$BENCH_URL" \\
        --page-size "$BENCH_PAGE_SIZE" --output json \\
        > "$BENCH_OUT/$region.json" || exit 1
done
"""


@dataclass(frozen=True, slots=True)
class Result:
    """One client's figures at one grid point (medians when repeated)."""

    client: str
    wall: float
    cpu: float
    rss_mib: float
    requests: float
    tasks: int
    server_cpu: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def median_result(client: str, results: list[Result]) -> Result:
    """Each figure's median over repeated runs; tasks must agree."""
    tasks = {result.tasks for result in results}
    return Result(
        client=client,
        wall=statistics.median(r.wall for r in results),
        cpu=statistics.median(r.cpu for r in results),
        rss_mib=statistics.median(r.rss_mib for r in results),
        requests=statistics.median(r.requests for r in results),
        tasks=tasks.pop() if len(tasks) == 1 else -1,
        server_cpu=statistics.median(r.server_cpu for r in results),
        extra={"walls": [r.wall for r in results]},
    )


class Clients:
    """Runs each client against ``sim`` with the monitor's page size."""

    def __init__(
        self,
        sim: SimulatorProcess,
        workdir: Path,
        page_size: int,
        concurrency: int,
        monitor_path: Path | None = None,
    ) -> None:
        self.sim = sim
        self.workdir = workdir
        self.page_size = page_size
        self.concurrency = concurrency
        self.env = client_env(workdir)
        self._runs = 0
        # A candidate change to the monitor can be measured from another
        # tree: it goes first on the import path of the monitor's children.
        self.monitor_env = dict(self.env)
        if monitor_path is not None:
            self.monitor_env["PYTHONPATH"] = str(monitor_path)

    def config(self, regions: list[str], concurrency: int | None = None) -> Path:
        """A monitor config for ``regions`` of the simulator, else defaults."""
        # A fresh state file for every run: a saved state would turn the
        # first poll's discoveries into no news, and `once` reads it.
        self._runs += 1
        path = self.workdir / f"monitor-{self._runs}.toml"
        state = self.workdir / f"state-{self._runs}" / "state.db"
        state.parent.mkdir()
        lines = [
            "[poll]",
            f"page_size = {self.page_size}",
            f"concurrency = {concurrency or self.concurrency}",
            "[[targets]]",
            'name = "bench"',
            f"regions = {json.dumps(regions)}",
            f'endpoint_url = "{self.sim.url}"',
            "[state]",
            f'path = "{state}"',
            "[log]",
            'format = "json"',
            'level = "warning"',
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _forget(self, argv: list[str]) -> None:
        """Delete the config and state of a finished monitor run."""
        config = Path(argv[argv.index("--config") + 1])
        shutil.rmtree(self.workdir / config.stem.replace("monitor", "state"), True)
        config.unlink(missing_ok=True)

    def _python(self, script: str, *args: str) -> list[str]:
        return [sys.executable, str(BENCH / script), *args]

    def _result(self, client: str, sample: Sample, tasks: int) -> Result:
        return Result(
            client=client,
            wall=sample.wall,
            cpu=sample.cpu,
            rss_mib=sample.max_rss_mib,
            requests=sample.requests,
            tasks=tasks,
            server_cpu=sample.server_cpu,
        )

    def once(self, regions: list[str]) -> Result:
        """``python -m monitor once --json``: one whole process, start to end."""
        argv = [sys.executable, "-m", "monitor", "once"]
        argv += ["--config", str(self.config(regions)), "--json"]
        try:
            sample = run_child(argv, self.monitor_env, self.sim)
        finally:
            self._forget(argv)
        tasks = len(json.loads(sample.stdout)["tasks"])
        return self._result("monitor once", sample, tasks)

    def cli_loop(self, regions: list[str]) -> Result:
        """The AWS CLI in a shell loop, one process per region."""
        out = self.workdir / "cli"
        out.mkdir(exist_ok=True)
        env = dict(self.env)
        env.update(
            BENCH_REGIONS=" ".join(regions),
            BENCH_AWS=str(AWS_CLI),
            BENCH_URL=self.sim.url,
            BENCH_PAGE_SIZE=str(self.page_size),
            BENCH_OUT=str(out),
        )
        sample = run_child(["sh", "-c", CLI_LOOP], env, self.sim)
        tasks = 0
        for region in regions:
            document = json.loads((out / f"{region}.json").read_text())
            tasks += len(document["ImportImageTasks"])
            os.unlink(out / f"{region}.json")
        return self._result("aws cli loop", sample, tasks)

    def script(
        self, script: str, client: str, regions: list[str]
    ) -> tuple[Result, Result]:
        """One process, one round: (the whole process, the round in it).

        The process is what a cron run costs, start-up included; the round
        is the listing alone, the script's steady state.
        """
        args = ["--endpoint-url", self.sim.url, "--page-size", str(self.page_size)]
        if script == "floor.py":
            args += ["--concurrency", str(self.concurrency)]
        sample = run_child(self._python(script, *args, *regions), self.env, self.sim)
        output = json.loads(sample.stdout)
        process = self._result(client, sample, output["tasks"])
        (first,) = output["rounds"]
        listing = replace(
            process,
            client=client.replace(" loop", "") + " round",
            wall=first["seconds"],
            cpu=first["cpu_seconds"],
        )
        return process, listing

    def daemon(
        self,
        regions: list[str],
        polls: int,
        *flags: str,
        concurrency: int | None = None,
    ) -> tuple[Result, dict[str, Any]]:
        """The daemon's steady poll: the median of every poll after the first."""
        config = str(self.config(regions, concurrency))
        argv = self._python("poll_driver.py", "--config", config)
        argv += ["--polls", str(polls), *flags]
        try:
            sample = run_child(argv, self.monitor_env, self.sim)
        finally:
            self._forget(argv)
        output: dict[str, Any] = json.loads(sample.stdout)
        steady = output["polls"][1:] or output["polls"]
        result = Result(
            client="monitor poll",
            wall=statistics.median(p["seconds"] for p in steady),
            cpu=statistics.median(p["cpu_seconds"] for p in steady),
            rss_mib=sample.max_rss_mib,
            requests=statistics.median(p["requests"] for p in steady),
            tasks=output["tasks"],
            server_cpu=sample.server_cpu / polls,
            extra={"walls": [p["seconds"] for p in steady]},
        )
        return result, output
