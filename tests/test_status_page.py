"""The status page: what it shows, how it flags trouble, and that it escapes.

The unit tests render a tracker state built from hand-written snapshots. The
browser test serves the daemon's web app on loopback with a state made by the
monitor polling the simulator, loads it in headless Chromium, reads the DOM
Chromium built, and saves a screenshot under test-artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from monitor.model import ImportTask
from monitor.simulator import DiskSpec, Simulator, TaskSpec, TimelineBuilder
from monitor.status_page import MAX_ENDED_ROWS, render_status_page
from monitor.tracker import RegionPoll, Rules, TrackerState, observe
from monitor.web import bound_port, build_app, start_server
from tests.conftest import require_tool
from tests.e2e import T0, monitor_run, use_test_credentials

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
GIB = 2.0**30
RULES = Rules(
    stall_threshold=lambda phase, size: 1800.0, max_age=43200.0, keep_ended=86400.0
)

ACTIVE_ID = "import-ami-0aaaaaaaaaaaaaaa1"
STALLED_ID = "import-ami-0bbbbbbbbbbbbbbb2"
FAILED_ID = "import-ami-0ccccccccccccccc3"
COMPLETED_ID = 'import-ami-<i>"odd"&id</i>'
SIM_ACTIVE_ID, SIM_STALLED_ID, SIM_FAILED_ID, SIM_COMPLETED_ID = (
    f"import-ami-0{digit * 15}{n}" for n, digit in enumerate("cdef", 1)
)
HOSTILE_DESCRIPTION = 'web-01 <img src=x onerror="alert(1)"> & "friends"'
HOSTILE_MESSAGE = 'ClientError: <script>alert("pwned")</script> & more'
HOSTILE_ACCOUNT = "team<b>&co"
HOSTILE_ERROR = "AuthFailure: <denied> & retried"

#: Chromium starts, loads one loopback page and exits in a few seconds.
CHROMIUM_TIMEOUT_SECONDS = 60


def api(
    task_id: str,
    status: str = "active",
    message: str | None = "converting",
    progress: str | None = None,
    disks: Sequence[tuple[str, str | None, float]] = (),
    **extra: Any,
) -> ImportTask:
    """A parsed task from the fields the API would send; disks as tuples."""
    item: dict[str, Any] = {"ImportTaskId": task_id, "Status": status, **extra}
    if message is not None:
        item["StatusMessage"] = message
    if progress is not None:
        item["Progress"] = progress
    item["SnapshotDetails"] = [
        {"Status": disk_status, "DiskImageSize": size}
        | ({} if disk_progress is None else {"Progress": disk_progress})
        for disk_status, disk_progress, size in disks
    ]
    parsed = ImportTask.from_api(item)
    assert parsed is not None
    return parsed


def four_tasks() -> TrackerState:
    """One task of each kind after three polls, and one failing region.

    At T0 all four are converting. Ten minutes later one has failed and one
    completed. At T0 + 40 min the stalled one has not changed for longer
    than the 30-minute threshold, while the active one kept moving.
    """
    ended = {FAILED_ID, COMPLETED_ID}
    polls = [
        (
            T0,
            [
                api(
                    ACTIVE_ID,
                    progress="28",
                    disks=[("active", "40", 20 * GIB), ("active", None, 5 * GIB)],
                    Description=HOSTILE_DESCRIPTION,
                ),
                api(STALLED_ID, progress="39", disks=[("active", "50", GIB)]),
                api(FAILED_ID, progress="30", disks=[("active", "20", GIB)]),
                api(COMPLETED_ID, message="booting", progress="73"),
            ],
            [],
        ),
        (
            T0 + 600,
            [
                api(
                    ACTIVE_ID,
                    progress="45",
                    disks=[("active", "80", 20 * GIB), ("active", "10", 5 * GIB)],
                    Description=HOSTILE_DESCRIPTION,
                ),
                api(STALLED_ID, progress="39", disks=[("active", "50", GIB)]),
            ],
            [
                api(
                    FAILED_ID,
                    "deleted",
                    HOSTILE_MESSAGE,
                    disks=[("deleted", None, GIB)],
                ),
                api(COMPLETED_ID, "completed", None, ImageId="ami-0123456789abcdef0"),
            ],
        ),
        (
            T0 + 2400,
            [
                api(
                    ACTIVE_ID,
                    progress="50",
                    disks=[("completed", None, 20 * GIB), ("active", "20", 5 * GIB)],
                    Description=HOSTILE_DESCRIPTION,
                ),
                api(STALLED_ID, progress="39", disks=[("active", "50", GIB)]),
            ],
            [],
        ),
    ]

    state = TrackerState()
    for now, active, resolved in polls:
        regions = [
            RegionPoll(
                "prod",
                "eu-west-1",
                ok=True,
                active=tuple(active),
                resolved=tuple(resolved),
                looked_up=frozenset(ended & state.open_task_ids("prod", "eu-west-1")),
            ),
            RegionPoll(
                HOSTILE_ACCOUNT,
                "us-west-2",
                ok=now == T0,
                error=None if now == T0 else HOSTILE_ERROR,
            ),
        ]
        state, _ = observe(state, regions, now, RULES)
    return state


@dataclass
class Row:
    """One task row as a reader meets it: its classes, text and bar widths."""

    classes: set[str]
    text: str = ""
    widths: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """Task rows, summary cards and a count of every element, from HTML."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[Row] = []
        self.cards: dict[str, tuple[str, bool]] = {}
        self.elements: dict[str, int] = {}
        self.text: list[str] = []
        self._row: Row | None = None
        self._card: tuple[str, bool] | None = None
        self._count_next = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements[tag] = self.elements.get(tag, 0) + 1
        values = dict(attrs)
        classes = set((values.get("class") or "").split())

        if tag == "tr" and "task" in classes:
            self._row = Row(classes)
        elif "fill" in classes and self._row is not None:
            self._row.widths.append(values.get("style") or "")
        elif "card" in classes:
            kind = sorted(classes - {"card", "lit"})[0]
            self._card = (kind, "lit" in classes)
        elif "n" in classes and self._card is not None:
            self._count_next = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self._row.text += data + " "
        if self._count_next and self._card is not None:
            kind, lit = self._card
            self.cards[kind] = (data, lit)
            self._count_next = False
            self._card = None

    def row(self, task_id: str) -> Row:
        found = [row for row in self.rows if task_id in row.text]
        assert len(found) == 1, f"{task_id}: {len(found)} rows"
        return found[0]


class TestRendering:
    def test_user_text_is_escaped_and_shown_as_text(self) -> None:
        """Descriptions, messages, task IDs and account names cannot inject."""
        state = four_tasks()

        html = render_status_page(state, T0 + 2400)

        for raw in ("<script", "<img", "<i>", "<b>", "<denied>", "& more", "&co"):
            assert raw not in html
        assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; more" in (
            html
        )
        page = Page(html)
        assert "script" not in page.elements
        assert "img" not in page.elements
        assert HOSTILE_MESSAGE in page.row(FAILED_ID).text
        assert HOSTILE_DESCRIPTION in page.row(ACTIVE_ID).text
        assert COMPLETED_ID in page.row(COMPLETED_ID).text
        assert HOSTILE_ACCOUNT in "".join(page.text)
        assert HOSTILE_ERROR in "".join(page.text)

    def test_each_row_is_classed_by_what_it_needs(self) -> None:
        """Stalled and failed rows are marked, and stalled ones come first."""
        state = four_tasks()

        page = Page(render_status_page(state, T0 + 2400))

        assert page.row(STALLED_ID).classes == {"task", "stalled"}
        assert page.row(FAILED_ID).classes == {"task", "failed"}
        assert page.row(COMPLETED_ID).classes == {"task", "completed"}
        assert page.row(ACTIVE_ID).classes == {"task", "active"}
        assert "Stalled" in page.row(STALLED_ID).text
        assert "Failed" in page.row(FAILED_ID).text
        order = [row.text.split()[0] for row in page.rows]
        assert order[:2] == [STALLED_ID, ACTIVE_ID], "in progress, stalled first"

    def test_bars_are_as_wide_as_task_and_disk_progress(self) -> None:
        """One bar per task and per disk; ended tasks show where they stopped."""
        state = four_tasks()

        page = Page(render_status_page(state, T0 + 2400))

        # The first disk has completed, which the API says without Progress.
        assert page.row(ACTIVE_ID).widths == ["width:50%", "width:100%", "width:20%"]
        assert page.row(STALLED_ID).widths == ["width:39%", "width:50%"]
        # The API drops Progress on failure; the bar keeps the last value seen.
        assert page.row(FAILED_ID).widths == ["width:30%"]
        assert page.row(COMPLETED_ID).widths == ["width:100%"]

    def test_age_last_change_and_eta_are_human_durations(self) -> None:
        """Age since first seen, time since the last change, and the ETA."""
        state = four_tasks()

        row = Page(render_status_page(state, T0 + 2400)).row(ACTIVE_ID).text

        # 22 points in 40 minutes, 50 to go: 5,455 s, in whole minutes 1h 30m.
        assert "40m" in row
        assert "0s ago" in row
        assert "1h 30m" in row
        assert "converting" in row
        assert "20.0 GiB" in row
        assert "5.0 GiB" in row

    def test_summary_counts_tasks_and_failing_regions(self) -> None:
        """Active includes stalled; failing regions are named in an alert."""
        state = four_tasks()

        html = render_status_page(state, T0 + 2400)
        page = Page(html)

        assert page.cards == {
            "active": ("2", False),
            "stalled": ("1", True),
            "failed": ("1", True),
            "completed": ("1", False),
            "regions": ("1", True),
        }
        assert 'role="alert"' in html
        assert "Polls are failing in 1 region(s)." in "".join(page.text)
        assert "<title>2 active, 1 stalled, 1 region(s) failing · " in html
        assert 'href="/metrics"' in html
        assert '<meta http-equiv="refresh" content="30">' in html

    def test_deleting_counts_as_failed_and_overdue_is_badged(self) -> None:
        """A task on its way to deleted is red already; an old one is overdue."""
        rules = Rules(lambda phase, size: 7200.0, max_age=3600.0, keep_ended=86400.0)
        first = (
            api(ACTIVE_ID, progress="20"),
            api(FAILED_ID, progress="30"),
        )
        later = (
            api(ACTIVE_ID, progress="35"),
            api(FAILED_ID, "deleting", "User cancelled"),
        )
        state = TrackerState()
        for now, tasks in ((T0, first), (T0 + 3600, later)):
            poll = RegionPoll("prod", "eu-west-1", ok=True, active=tasks)
            state, _ = observe(state, [poll], now, rules)

        page = Page(render_status_page(state, T0 + 3600))

        deleting = page.row(FAILED_ID)
        assert deleting.classes == {"task", "failed"}
        assert "Deleting" in deleting.text
        assert "User cancelled" in deleting.text
        assert "Overdue" in page.row(ACTIVE_ID).text
        assert page.cards["failed"] == ("1", True)

    def test_a_page_before_the_first_poll_says_so(self) -> None:
        """No state and no poll time yet: a page that says it is waiting."""
        html = render_status_page(TrackerState(), 0.0)

        page = Page(html)

        assert "waiting for the first poll" in html
        assert page.rows == []
        assert "No import is in progress." in "".join(page.text)
        assert 'role="alert"' not in html

    def test_only_the_newest_ended_tasks_are_listed(self) -> None:
        """Past the cap, older ended tasks are counted and left to /metrics."""
        count = MAX_ENDED_ROWS + 5
        done = [
            api(f"import-ami-{n:017x}", "completed", None, ImageId=f"ami-{n:017x}")
            for n in range(count)
        ]
        state = TrackerState()
        for n, task in enumerate(done):
            poll = RegionPoll("prod", "eu-west-1", ok=True, active=(task,))
            state, _ = observe(state, [poll], T0 + n, RULES)

        page = Page(render_status_page(state, T0 + count))

        assert len(page.rows) == MAX_ENDED_ROWS
        assert page.rows[0].text.split()[0] == f"import-ami-{count - 1:017x}"
        assert "5 older ended task(s) not listed" in "".join(page.text)


class TestInBrowser:
    @pytest.mark.timeout(180)
    async def test_chromium_shows_the_tasks_flagged_and_escaped(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real browser renders the daemon's page from a real poll cycle.

        The monitor polls the simulator for three simulated hours: one task
        converts steadily, one freezes past its stall threshold, one fails
        with a message full of markup, one completes; then eu-west-1 starts
        refusing. Chromium's DOM must show four task rows with the stalled
        and failed ones marked, the markup as text and no injected element.
        """
        chromium = require_tool("chromium", "/usr/bin/chromium")
        use_test_credentials(monkeypatch)
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "status-page.png"
        screenshot.unlink(missing_ok=True)

        async with monitor_run() as run, serving(run.monitor.web) as url:
            script_tasks(run.sim, run.account_id)
            await run.poll_every(300, until=3 * 3600)
            run.sim.faults.for_region("eu-west-1").auth_failure = True
            await run.poll_at(3 * 3600 + 300)

            dom = await browse(chromium, tmp_path / "dom", "--dump-dom", url)
            await browse(
                chromium,
                tmp_path / "screenshot",
                f"--screenshot={screenshot}",
                "--window-size=1280,900",
                "--hide-scrollbars",
                url,
            )

        page = Page(dom)
        assert len(page.rows) == 4
        assert "stalled" in page.row(SIM_STALLED_ID).classes
        assert "failed" in page.row(SIM_FAILED_ID).classes
        assert "completed" in page.row(SIM_COMPLETED_ID).classes
        active = page.row(SIM_ACTIVE_ID)
        assert "active" in active.classes
        assert HOSTILE_DESCRIPTION in active.text
        assert HOSTILE_MESSAGE in page.row(SIM_FAILED_ID).text
        assert "script" not in page.elements
        assert page.elements.get("img", 0) == 0
        assert page.cards["regions"] == ("1", True)
        assert png_size(screenshot) == (1280, 900)


def script_tasks(sim: Simulator, account: str) -> None:
    """Four imports whose histories give one row of each kind."""
    small = (DiskSpec(size_bytes=GIB),)
    start = sim.clock.now()
    sim.add_task(
        account,
        "us-east-1",
        TimelineBuilder(
            TaskSpec(
                SIM_ACTIVE_ID,
                disks=(DiskSpec(size_bytes=40 * GIB), DiskSpec(size_bytes=8 * GIB)),
                description=HOSTILE_DESCRIPTION,
            )
        )
        .phase(start, "pending")
        .phase(start + 900, "converting", 20, disk_progress=[5, 10])
        .phase(start + 5400, "converting", 31, disk_progress=[30, 60])
        .phase(start + 9000, "converting", 44, disk_progress=[65, 100]),
    )
    sim.add_task(
        account,
        "us-east-1",
        TimelineBuilder(TaskSpec(SIM_STALLED_ID, disks=small, description="db-02"))
        .phase(start, "pending")
        .phase(start + 600, "converting", 33, disk_progress=[40])
        .stalled(start + 600, start + 8 * 3600),
    )
    sim.add_task(
        account,
        "eu-west-1",
        TimelineBuilder(TaskSpec(SIM_FAILED_ID, disks=small, description="erp-07"))
        .phase(start, "validating")
        .phase(start + 900, "converting", 27, disk_progress=[35])
        .failed(start + 2400, HOSTILE_MESSAGE),
    )
    sim.add_task(
        account,
        "us-east-1",
        TimelineBuilder(TaskSpec(SIM_COMPLETED_ID, disks=small, description="mail-3"))
        .phase(start, "converting", 40, disk_progress=[50])
        .phase(start + 1800, "booting")
        .completed(start + 3600),
    )


@asynccontextmanager
async def serving(web_state: Any) -> AsyncIterator[str]:
    """The daemon's own app on a free loopback port; yields its URL."""
    runner = await start_server(build_app(web_state), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}/"
    finally:
        await runner.cleanup()


async def browse(chromium: str, profile: Path, *args: str) -> str:
    """Run headless Chromium once with a new profile directory; its stdout.

    It runs as a child process while this event loop keeps serving the page
    it asks for, so the wait must not block the loop.
    """
    process = await asyncio.create_subprocess_exec(
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(), CHROMIUM_TIMEOUT_SECONDS
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
