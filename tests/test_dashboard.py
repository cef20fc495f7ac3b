"""The Grafana dashboard: well formed, and every query works on real data.

The structural tests read the JSON alone. The Prometheus test runs the
monitor in-process against the simulator's mixed scenario, serves its
/metrics on loopback, lets a real Prometheus scrape it every second, then
runs every panel's query with the template variables expanded as Grafana
expands them when "All" is selected.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.daemon import Monitor
from monitor.metrics import MonitorCounters, View, render
from monitor.simulator import DiskSpec, Simulator, TaskSpec, TimelineBuilder
from monitor.simulator import serve as serve_simulator
from monitor.tracker import RegionKey, Rules, TrackerState
from monitor.web import bound_port, build_app, start_server
from tests.conftest import free_port, require_tool
from tests.e2e import ACCESS_KEY, REGIONS, settings_for, use_test_credentials

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "config" / "grafana" / "ec2-import-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

#: What Grafana puts in place of each variable: the variables' "All" value,
#: and a rate window that holds several samples of a 1 s scrape.
EXPANSIONS = {"account": ".*", "region": ".*", "__rate_interval": "30s"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
METRIC = re.compile(r"\bec2_import_\w+")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")
FALLBACK = re.compile(r"\s+or\s+vector\(0\)\s*$")

#: The third region starts refusing the monitor, for the poll health panels.
FAILING_REGION = "ap-southeast-2"
WATCHED_REGIONS = (*REGIONS, FAILING_REGION)

#: A hand-written import that freezes in conversion, for the stalled panels.
STALLED_ID = "import-ami-0aaaaaaaaaaaaaaa7"
#: The panel query whose value must be a share, not NaN, once rates exist.
THROTTLED_SHARE = "Throttled share of API requests [A]"

#: Simulated hours the monitor has watched before Prometheus starts.
HISTORY_SECONDS = 5 * 3600.0

#: Simulated seconds between the polls of the catch-up.
CATCH_UP_STEP = 600.0
#: Scrapes of the monitor to wait for, so that rate() has several samples.
SCRAPES = 4
#: Bounds on each wait; Prometheus starts and scrapes within seconds.
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 5.0


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title and refId, expr) for every query target."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", ())
    ]


def expand(expr: str) -> str:
    """The query as Grafana sends it; an unknown variable is a KeyError."""
    return VARIABLE.sub(lambda m: EXPANSIONS[m.group(1) or m.group(2)], expr)


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in dashboard["templating"]["list"]}


class TestStructure:
    def test_variables_choose_a_prometheus_and_filter_accounts_and_regions(
        self,
    ) -> None:
        """A datasource variable, and account/region from label_values."""
        dashboard = load()

        found = variables(dashboard)

        assert dashboard["schemaVersion"] >= 39
        assert found["datasource"]["type"] == "datasource"
        assert found["datasource"]["query"] == "prometheus"
        for name in ("account", "region"):
            assert found[name]["type"] == "query"
            assert found[name]["datasource"] == DATASOURCE
            assert LABEL_VALUES.match(found[name]["query"]), found[name]["query"]
            assert found[name]["includeAll"] is True
            assert found[name]["allValue"] == ".*"

    def test_every_panel_and_query_reads_the_datasource_variable(self) -> None:
        """No panel is pinned to one Prometheus instance."""
        dashboard = load()

        pinned = [
            panel["title"]
            for panel in panels(dashboard)
            if panel["type"] != "row"
            and (
                panel.get("datasource") != DATASOURCE
                or any(t.get("datasource") != DATASOURCE for t in panel["targets"])
            )
        ]

        assert pinned == []

    def test_every_query_filters_by_account_and_region(self) -> None:
        """Choosing an account or a region narrows every panel."""
        dashboard = load()

        unfiltered = [
            title
            for title, expr in queries(dashboard)
            if "$account" not in expr or "$region" not in expr
        ]

        assert unfiltered == []

    def test_every_query_names_only_metrics_the_monitor_exports(self) -> None:
        """A renamed metric fails here rather than as an empty panel."""
        rules = Rules(lambda phase, size: 1.0, max_age=1.0, keep_ended=1.0)
        counters = MonitorCounters([RegionKey("a", "r")], ["op"])
        exposition = render(View(TrackerState(), 0.0, rules), counters).decode()
        exported = set(re.findall(r"^# TYPE (\S+)", exposition, re.MULTILINE))

        named = {name for _, expr in queries(load()) for name in METRIC.findall(expr)}

        assert named, "no query names a metric"
        assert named - exported == set()

    def test_panels_have_unique_ids_and_do_not_overlap(self) -> None:
        """Grafana lays out by gridPos; overlapping panels hide each other."""
        dashboard = load()
        taken: dict[tuple[int, int], str] = {}
        ids = [panel["id"] for panel in panels(dashboard)]

        for panel in panels(dashboard):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in taken, (panel["title"], taken.get((x, y)))
                    taken[(x, y)] = panel["title"]

        assert len(ids) == len(set(ids))


@pytest.mark.promtool
class TestAgainstPrometheus:
    @pytest.mark.timeout(120)
    async def test_every_query_returns_series_from_a_scraped_monitor(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each panel query succeeds in Prometheus and finds at least one series.

        The mixed scenario supplies active, completed and failed imports, a
        hand-written import frozen in conversion a stalled one, a region
        that starts refusing the monitor a failing poll, and the polls that
        keep running while Prometheus scrapes the rates: the throttled share
        would be NaN, not a share, over a window without requests.
        """
        prometheus = require_tool("prometheus", "/usr/bin/prometheus")
        use_test_credentials(monkeypatch)
        dashboard = load()

        async with (
            watched_world(tmp_path) as target,
            scraping(prometheus, target, tmp_path) as api,
        ):
            results = {
                title: await api.query(expand(expr))
                for title, expr in queries(dashboard)
            }
            # "or vector(0)" keeps a stat at 0 rather than "No data"; without
            # it, a misspelt label would return nothing and fail here.
            bare = {
                title: await api.query(expand(FALLBACK.sub("", expr)))
                for title, expr in queries(dashboard)
            }
            choices = {
                name: await api.label_values(var["query"])
                for name, var in variables(dashboard).items()
                if var["type"] == "query"
            }

        assert [title for title, series in results.items() if not series] == []
        assert [title for title, series in bare.items() if not series] == []
        assert choices == {"account": ["e2e"], "region": sorted(WATCHED_REGIONS)}
        stalled = results["Stalled tasks [A]"]
        assert [s["metric"]["task_id"] for s in stalled] == [STALLED_ID]
        shares = [float(s["value"][1]) for s in results[THROTTLED_SHARE]]
        assert all(0.0 <= share <= 1.0 for share in shares), shares


@asynccontextmanager
async def watched_world(tmp_path: Path) -> AsyncIterator[str]:
    """The monitor polling a simulated world; yields its /metrics host:port.

    It first catches up on five simulated hours, every ten minutes, ending
    at the real time so that timestamps look like a live system's; then it
    polls once a real second so that counters move while Prometheus scrapes.
    """
    sim = Simulator(
        scenario="mixed",
        seed=5,
        tasks=10,
        speed=0.0,
        start=time.time() - HISTORY_SECONDS,
    )
    start = sim.start
    sim.add_task(
        sim.account_for(ACCESS_KEY),
        REGIONS[0],
        TimelineBuilder(TaskSpec(STALLED_ID, disks=(DiskSpec(size_bytes=2**30),)))
        .phase(start, "pending")
        .phase(start + 600, "converting", 33, disk_progress=[40])
        .stalled(start + 600, start + 10 * 3600),
    )

    async with serve_simulator(sim) as endpoint:
        settings = settings_for(endpoint.url, tmp_path / "state.db", WATCHED_REGIONS)
        monitor = Monitor(settings, clock=sim.clock.now)
        await monitor.start()
        for _ in range(int(HISTORY_SECONDS // CATCH_UP_STEP)):
            await monitor.poll_once(report=False)
            sim.clock.advance(CATCH_UP_STEP)
        await monitor.poll_once(report=False)

        # Throttling only now: during the catch-up its retry back-off would
        # cost seconds of real time for no gain.
        sim.faults.throttle_rate = 0.1
        sim.faults.for_region(FAILING_REGION).auth_failure = True

        runner = await start_server(build_app(monitor.web), "127.0.0.1", 0)
        ticker = asyncio.create_task(keep_polling(sim, monitor))
        try:
            yield f"127.0.0.1:{bound_port(runner)}"
        finally:
            ticker.cancel()
            with suppress(asyncio.CancelledError):
                await ticker
            await runner.cleanup()
            await monitor.close()


async def keep_polling(sim: Simulator, monitor: Monitor) -> None:
    """Poll once a second, simulated time keeping pace with real time."""
    while True:
        await asyncio.sleep(1.0)
        sim.clock.advance(1.0)
        await monitor.poll_once(report=False)


class PrometheusApi:
    """The few HTTP API calls the test makes, each with a timeout."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.base + path, params=params) as response:
            body = await response.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series; a failed query fails the test."""
        data = await self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        series: list[dict[str, Any]] = data["result"]
        return series

    async def label_values(self, variable_query: str) -> list[str]:
        """What Grafana's ``label_values(selector, label)`` lists."""
        match = LABEL_VALUES.match(expand(variable_query))
        assert match, variable_query
        selector, label = match.groups()
        values = await self.get(
            f"/api/v1/label/{label}/values", **{"match[]": selector}
        )
        return sorted(values)

    async def wait_for_scrapes(self, count: int) -> None:
        """Until the monitor has been scraped ``count`` times, all successfully."""
        expr = 'count_over_time(up{job="ec2-import-monitor"}[5m])'
        while True:
            with suppress(aiohttp.ClientError, AssertionError):
                scraped = await self.query(expr)
                healthy = await self.query('up{job="ec2-import-monitor"} == 1')
                if scraped and healthy and float(scraped[0]["value"][1]) >= count:
                    return
            await asyncio.sleep(0.5)


@asynccontextmanager
async def scraping(
    prometheus: str, target: str, tmp_path: Path
) -> AsyncIterator[PrometheusApi]:
    """A real Prometheus scraping ``target`` every second, once it has data."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ec2-import-monitor\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=log,
        )
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = PrometheusApi(session, f"http://127.0.0.1:{port}")
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await api.wait_for_scrapes(SCRAPES)
            except TimeoutError:
                pytest.fail(f"Prometheus never scraped: {log_path.read_text()[-3000:]}")
            yield api
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except TimeoutError:
            process.kill()
            await process.wait()
