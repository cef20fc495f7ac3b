"""The state store keeps the tracker's state and the event history on disk."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from monitor import events as ev
from monitor.events import Event
from monitor.model import ImportTask, SnapshotDisk
from monitor.store import (
    SCHEMA_VERSION,
    THREAD_NAME,
    AsyncStore,
    Store,
    StoreError,
)
from monitor.tracker import (
    RegionHealth,
    RegionKey,
    TaskKey,
    TrackedTask,
    TrackerState,
)
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0


def disk(
    index: int, progress: float | None = 0.4, size: float = 705638400.0
) -> SnapshotDisk:
    return SnapshotDisk(
        device=f"disk{index}",
        status="active",
        status_message="downloading/converting",
        progress=progress,
        size_bytes=size,
        format="VMDK",
        s3_bucket="imports",
        s3_key=f"vm/disk{index}.vmdk",
    )


def tracked(
    task_id: str,
    *,
    region: str = "eu-west-1",
    status: str = "active",
    phase: str | None = "converting",
    message: str | None = None,
    progress: float | None = 0.28,
    image_id: str | None = None,
    disks: tuple[SnapshotDisk, ...] = (),
    stalled: bool = False,
    overdue: bool = False,
    ended_at: float | None = None,
    history: tuple[tuple[float, float], ...] = ((T0, 0.05), (T0 + 600.5, 0.28)),
) -> TrackedTask:
    task = ImportTask(
        task_id=task_id,
        status=status,
        phase=phase,
        status_message=message or phase,
        progress=progress,
        image_id=image_id,
        description="web server \x1b[31m image",
        architecture="x86_64",
        platform="Linux",
        license_type="BYOL",
        encrypted=False,
        tags=(("team", "ops"), ("ticket", "OPS-1")),
        disks=disks,
    )
    return TrackedTask(
        account="prod",
        region=region,
        task=task,
        first_seen=T0,
        last_change=T0 + 600.5,
        stalled=stalled,
        overdue=overdue,
        ended_at=ended_at,
        progress_history=history,
    )


def realistic_state() -> TrackerState:
    """Tasks in every situation the tracker produces, two regions' health."""
    tasks = [
        tracked("import-ami-0000000000000001", disks=(disk(0), disk(1, 0.1, 0.0))),
        tracked("import-ami-0000000000000002", stalled=True, overdue=True),
        tracked(
            "import-ami-0000000000000003", phase="pending", progress=None, history=()
        ),
        tracked(
            "import-ami-0000000000000004",
            status="completed",
            phase=None,
            progress=None,
            image_id="ami-0123456789abcdef0",
            ended_at=T0 + 3600.0,
        ),
        tracked(
            "import-ami-0000000000000005",
            region="us-east-1",
            status="deleted",
            phase=None,
            message="ClientError: Unsupported kernel version",
            progress=None,
            ended_at=T0 + 90.25,
        ),
    ]
    regions = [
        RegionHealth("prod", "eu-west-1", ok=True, last_attempt=T0, last_success=T0),
        RegionHealth(
            "prod",
            "us-east-1",
            ok=False,
            last_attempt=T0,
            last_success=T0 - 120.0,
            failing_since=T0 - 60.0,
            duration=1.5,
            error="RequestLimitExceeded: Request limit exceeded.",
        ),
    ]
    return TrackerState(
        tasks={t.key: t for t in tasks},
        regions={RegionKey(h.account, h.region): h for h in regions},
    )


def fresh_copy(state: TrackerState) -> TrackerState:
    """Equal objects that are not the same ones, as every poll builds them."""
    return TrackerState(
        tasks={
            key: replace(value, task=ImportTask.from_dict(value.task.to_dict()))
            for key, value in state.tasks.items()
        },
        regions={key: replace(value) for key, value in state.regions.items()},
    )


def event(name: str, task_id: str | None, at: float, **fields: object) -> Event:
    return Event(name, "prod", "eu-west-1", at, task_id, fields)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    return Store.open(db_path)


class TestRoundTrip:
    def test_a_loaded_state_equals_the_saved_one(self, db_path: Path) -> None:
        """Tasks, disks, stall flags, end times and region health all survive."""
        state = realistic_state()
        writer = Store.open(db_path)
        writer.save(state, [])
        writer.close()

        loaded = Store.open(db_path).load()

        assert loaded == state
        assert (
            loaded.tasks[TaskKey("prod", "eu-west-1", "import-ami-0000000000000001")]
            .task.disks[1]
            .size_bytes
            == 0.0
        )

    def test_a_new_file_holds_an_empty_state(self, store: Store) -> None:
        """A first start finds nothing and says so with an empty state."""
        loaded = store.load()

        assert loaded == TrackerState()

    def test_tasks_lists_every_task_in_key_order(self, store: Store) -> None:
        """``tasks()`` is what ``status`` prints: sorted by account, region, ID."""
        state = realistic_state()
        store.save(state, [])

        listed = store.tasks()

        assert listed == [state.tasks[key] for key in sorted(state.tasks)]


class TestIncrementalSave:
    def test_an_unchanged_state_writes_no_row(self, store: Store) -> None:
        """Equal tasks, even as new objects, cost no write at all."""
        state = realistic_state()
        store.save(state, [])

        store.save(fresh_copy(state), [])

        assert store.last_save is not None
        assert store.last_save.rows_changed == 0

    def test_only_changed_and_forgotten_tasks_are_written(
        self, store: Store, db_path: Path
    ) -> None:
        """One task moved on, one was forgotten: two rows change, no others."""
        state = realistic_state()
        store.save(state, [])
        keys = sorted(state.tasks)
        tasks = dict(fresh_copy(state).tasks)
        tasks[keys[0]] = replace(tasks[keys[0]], last_change=T0 + 700.0)
        del tasks[keys[1]]
        changed = replace(state, tasks=tasks)

        store.save(changed, [])

        assert store.last_save is not None
        assert store.last_save.rows_changed == 2
        assert (store.last_save.tasks_written, store.last_save.tasks_deleted) == (1, 1)
        assert Store.open(db_path, read_only=True).load() == changed

    def test_region_health_is_written_when_it_changes(self, store: Store) -> None:
        """A region's new poll time is one row; its unchanged neighbour none."""
        state = realistic_state()
        store.save(state, [])
        key = RegionKey("prod", "eu-west-1")
        regions = dict(state.regions)
        regions[key] = replace(regions[key], last_attempt=T0 + 60.0)

        store.save(replace(state, regions=regions), [])

        assert store.last_save is not None
        assert store.last_save.rows_changed == 1
        assert store.load().regions[key].last_attempt == T0 + 60.0

    def test_a_save_without_a_load_still_removes_forgotten_tasks(
        self, db_path: Path
    ) -> None:
        """The file, not an empty memory, is what a first save compares with."""
        state = realistic_state()
        first = Store.open(db_path)
        first.save(state, [])
        first.close()
        kept = next(iter(state.tasks))
        smaller = replace(state, tasks={kept: state.tasks[kept]})

        second = Store.open(db_path)
        second.save(smaller, [])

        assert Store.open(db_path).load() == smaller

    def test_a_failed_save_is_written_by_the_next(self, db_path: Path) -> None:
        """Locked out once, the store writes that cycle's events and rows later."""
        store = Store.open(db_path, busy_timeout=0.05)
        state = realistic_state()
        found = event(ev.TASK_DISCOVERED, "import-ami-0000000000000001", T0)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")

        with pytest.raises(StoreError, match="locked by another process"):
            store.save(state, [found])
        blocker.rollback()
        store.save(state, [])

        assert store.load() == state
        assert store.history("import-ami-0000000000000001") == [found.as_record()]


class TestHistory:
    def test_events_come_back_per_task_in_time_order(self, store: Store) -> None:
        """A task's timeline holds its own events, oldest first, as recorded."""
        task_id = "import-ami-0000000000000001"
        found = event(ev.TASK_DISCOVERED, task_id, T0, status="active")
        moved = event(ev.TASK_PROGRESSED, task_id, T0 + 60, before=0.1, after=0.2)
        other = event(ev.TASK_DISCOVERED, "import-ami-0000000000000009", T0)
        failed = event(ev.POLL_FAILED, None, T0 + 30, error="throttled")
        store.save(realistic_state(), [found, other, failed])
        store.save(realistic_state(), [moved])

        timeline = store.history(task_id)

        assert timeline == [found.as_record(), moved.as_record()]

    def test_an_unknown_task_has_an_empty_history(self, store: Store) -> None:
        """No rows means an empty list, which ``history`` turns into exit 3."""
        timeline = store.history("import-ami-ffffffffffffffff")

        assert timeline == []

    def test_prune_forgets_only_older_events(self, store: Store) -> None:
        """Pruning removes events observed before the cut and counts them."""
        task_id = "import-ami-0000000000000001"
        old = [
            event(ev.TASK_PROGRESSED, task_id, T0 + i, after=i / 10) for i in range(3)
        ]
        new = event(ev.TASK_COMPLETED, task_id, T0 + 100)
        store.save(realistic_state(), [*old, new])

        removed = store.prune_history(before=T0 + 100)

        assert removed == 3
        assert store.history(task_id) == [new.as_record()]


V1_SCHEMA = (
    "CREATE TABLE tasks (account TEXT NOT NULL, region TEXT NOT NULL,"
    " task_id TEXT NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (account, region, task_id))",
    "CREATE TABLE regions (account TEXT NOT NULL, region TEXT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (account, region))",
    "CREATE TABLE history (id INTEGER PRIMARY KEY, account TEXT NOT NULL,"
    " region TEXT NOT NULL, task_id TEXT, event TEXT NOT NULL,"
    " record TEXT NOT NULL)",
    "CREATE INDEX history_task ON history (task_id)",
)

V1_TASK = """{"task": {"task_id": "import-ami-0000000000000042", "status": "active",
 "phase": "converting", "status_message": "converting", "progress": 0.39,
 "image_id": null, "description": "db server", "architecture": "x86_64",
 "platform": "Linux", "license_type": "BYOL", "hypervisor": null,
 "boot_mode": null, "encrypted": null, "kms_key_id": null,
 "usage_operation": null, "tags": [["team", "db"]],
 "disks": [{"device": "disk0", "status": "active",
   "status_message": "converting", "progress": 0.39, "size_bytes": 705638400.0,
   "format": "VMDK", "snapshot_id": null, "url": null, "s3_bucket": "imports",
   "s3_key": "db.vmdk", "description": null}]},
 "first_seen": 1800000000.0, "last_change": 1800000900.0, "stalled": true,
 "overdue": false, "ended_at": null,
 "progress_history": [[1800000000.0, 0.1], [1800000900.0, 0.39]]}"""


class TestMigration:
    def test_a_version_1_file_is_migrated_with_its_data(self, db_path: Path) -> None:
        """v1 had no time column: v2 adds it from each record, keeping rows."""
        v1 = sqlite3.connect(db_path)
        for statement in V1_SCHEMA:
            v1.execute(statement)
        v1.execute(
            "INSERT INTO tasks VALUES ('prod', 'eu-west-1', ?, ?)",
            ("import-ami-0000000000000042", V1_TASK),
        )
        v1.execute(
            "INSERT INTO regions VALUES ('prod', 'eu-west-1', ?)",
            ('{"ok": true, "last_attempt": 1800000900.0}',),
        )
        # Inserted out of time order: v2 orders by time, v1 only had row order.
        for observed_at, name in (
            ("2027-01-15T08:15:00+00:00", "task_progressed"),
            ("2027-01-15T08:00:00+00:00", "task_discovered"),
        ):
            v1.execute(
                "INSERT INTO history (account, region, task_id, event, record)"
                " VALUES ('prod', 'eu-west-1', 'import-ami-0000000000000042', ?, ?)",
                (
                    name,
                    f'{{"event": "{name}", "observed_at": "{observed_at}"}}',
                ),
            )
        v1.execute("PRAGMA user_version = 1")
        v1.commit()
        v1.close()

        store = Store.open(db_path)

        state = store.load()
        task = state.tasks[TaskKey("prod", "eu-west-1", "import-ami-0000000000000042")]
        assert task.stalled
        assert task.task.disks[0].s3_key == "db.vmdk"
        assert task.progress_history == ((T0, 0.1), (T0 + 900.0, 0.39))
        assert state.regions[RegionKey("prod", "eu-west-1")].ok
        timeline = store.history("import-ami-0000000000000042")
        assert [r["event"] for r in timeline] == ["task_discovered", "task_progressed"]
        check = sqlite3.connect(db_path)
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert (
            check.execute("SELECT min(observed_at) FROM history").fetchone()[0]
            == 1800000000.0
        )
        indexes = {
            row[0]
            for row in check.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'index'"
            )
        }
        assert {"history_task", "history_time"} <= indexes

    def test_a_new_file_is_created_at_the_current_version(self, db_path: Path) -> None:
        """Creation runs every migration, so the v1 -> v2 step runs every time."""
        Store.open(db_path).close()

        version = sqlite3.connect(db_path).execute("PRAGMA user_version").fetchone()[0]

        assert version == SCHEMA_VERSION


def unprivileged_open(path: Path) -> subprocess.CompletedProcess[str]:
    """Open the store in a child process that file modes apply to.

    Tests run as root, and root writes through any file mode
    (CAP_DAC_OVERRIDE). The child drops that capability, so it is held to
    the owner bits like the service user is; a non-root run needs no help.
    """
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from monitor.store import Store, StoreError\n"
        "try:\n"
        "    Store.open(Path(sys.argv[1])).close()\n"
        "except StoreError as error:\n"
        "    print(error)\n"
        "    sys.exit(2)\n"
    )
    command = [sys.executable, "-c", script, str(path)]
    if os.geteuid() == 0:
        command = [
            require_tool("setpriv"),
            "--bounding-set=-dac_override,-dac_read_search",
            *command,
        ]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )


class TestErrors:
    def test_garbage_is_reported_corrupt_and_left_alone(self, db_path: Path) -> None:
        """Not a database: one line naming the file and the way out; no write."""
        garbage = bytes(range(256)) * 20
        db_path.write_bytes(garbage)

        with pytest.raises(StoreError) as caught:
            Store.open(db_path)

        message = str(caught.value)
        assert "corrupt" in message
        assert (
            f"move it aside and start fresh: mv {db_path} {db_path}.corrupt" in message
        )
        assert "\n" not in message
        assert db_path.read_bytes() == garbage
        assert sorted(p.name for p in db_path.parent.iterdir()) == ["state.db"]

    def test_a_malformed_database_is_reported_corrupt(self, db_path: Path) -> None:
        """A valid header over damaged pages is caught at open, not mid-poll."""
        store = Store.open(db_path)
        store.save(realistic_state(), [])
        store.close()
        damaged = bytearray(db_path.read_bytes())
        page = 4096
        damaged[page : 3 * page] = b"\xa5" * (2 * page)
        db_path.write_bytes(bytes(damaged))

        with pytest.raises(StoreError, match=r"corrupt.*mv "):
            Store.open(db_path)

        assert db_path.read_bytes() == bytes(damaged)

    def test_a_newer_schema_is_refused_untouched(self, db_path: Path) -> None:
        """A downgrade must not rewrite what a newer version wrote."""
        newer = sqlite3.connect(db_path)
        newer.execute("PRAGMA user_version = 3")
        newer.close()
        before = db_path.read_bytes()

        with pytest.raises(StoreError) as caught:
            Store.open(db_path)

        assert "written by a newer ec2-import-monitor (schema 3 > 2)" in str(
            caught.value
        )
        assert str(db_path) in str(caught.value)
        assert db_path.read_bytes() == before

    def test_a_read_only_file_is_refused_at_open(self, db_path: Path) -> None:
        """A file the service cannot write fails at start, not at a later save."""
        store = Store.open(db_path)
        store.save(realistic_state(), [])
        store.close()
        db_path.chmod(0o444)
        before = db_path.read_bytes()

        result = unprivileged_open(db_path)

        assert result.returncode == 2, result.stderr
        assert f"state database {db_path} is read-only" in result.stdout
        assert "write access" in result.stdout
        assert db_path.read_bytes() == before

    def test_a_read_only_directory_is_refused_at_open(self, tmp_path: Path) -> None:
        """No file yet and a directory it cannot create one in: a clear error."""
        directory = tmp_path / "state"
        directory.mkdir(mode=0o555)

        result = unprivileged_open(directory / "state.db")

        assert result.returncode == 2, result.stderr
        assert f"state database {directory / 'state.db'}" in result.stdout
        assert "write access" in result.stdout
        assert list(directory.iterdir()) == []

    def test_a_directory_in_place_of_the_file_is_refused(self, tmp_path: Path) -> None:
        """A path that is a directory is named as such."""
        with pytest.raises(StoreError, match="is a directory"):
            Store.open(tmp_path)

    def test_a_missing_parent_directory_is_not_created(self, tmp_path: Path) -> None:
        """The parent is systemd's to create; a wrong path must not be hidden."""
        path = tmp_path / "missing" / "state.db"

        with pytest.raises(StoreError, match="does not exist"):
            Store.open(path)

        assert not path.parent.exists()

    def test_read_only_mode_needs_an_existing_file(self, db_path: Path) -> None:
        """``status`` on a path with no database says so and creates nothing."""
        with pytest.raises(StoreError, match="does not exist"):
            Store.open(db_path, read_only=True)

        assert not db_path.exists()

    def test_a_read_only_store_refuses_to_save(self, db_path: Path) -> None:
        """The commands' read-only handle cannot write by mistake."""
        Store.open(db_path).close()
        reader = Store.open(db_path, read_only=True)

        with pytest.raises(StoreError, match="read-only"):
            reader.save(realistic_state(), [])

        assert Store.open(db_path).load() == TrackerState()


def many_tasks(count: int) -> TrackerState:
    template = tracked("import-ami-x", disks=(disk(0), disk(1), disk(2)))
    tasks = [
        replace(template, task=replace(template.task, task_id=f"import-ami-{i:017x}"))
        for i in range(count)
    ]
    return TrackerState(tasks={t.key: t for t in tasks})


def store_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)}


class TestAsyncStore:
    async def test_every_call_runs_on_one_worker_thread(self, db_path: Path) -> None:
        """One thread, not the loop's, serves open, load, save, history, close."""
        before = store_threads()
        store = await asyncio.wait_for(AsyncStore.open(db_path), timeout=30)
        state = realistic_state()
        found = event(ev.TASK_DISCOVERED, "import-ami-0000000000000001", T0)

        await asyncio.wait_for(store.save(state, [found]), timeout=30)
        loaded = await asyncio.wait_for(store.load(), timeout=30)
        timeline = await asyncio.wait_for(
            store.history("import-ami-0000000000000001"), timeout=30
        )
        workers = store_threads() - before
        await asyncio.wait_for(store.close(), timeout=30)

        assert loaded == state
        assert timeline == [found.as_record()]
        assert len(workers) == 1
        assert threading.current_thread() not in workers

    async def test_a_large_save_does_not_block_the_loop(self, db_path: Path) -> None:
        """A ticker keeps ticking while thousands of tasks are written."""
        store = await asyncio.wait_for(AsyncStore.open(db_path), timeout=30)
        state = many_tasks(10_000)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        await asyncio.wait_for(store.save(state, []), timeout=120)
        took = time.perf_counter() - started
        ticking.cancel()
        await asyncio.wait_for(store.close(), timeout=30)

        during = [t for t in ticks if t >= started]
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert took > 0.2, "the save is too small to show anything"
        assert len(during) >= 10
        assert max(gaps) < took / 2

    async def test_open_errors_reach_the_caller(self, tmp_path: Path) -> None:
        """A store that cannot open raises the same StoreError, awaited."""
        with pytest.raises(StoreError, match="does not exist"):
            await asyncio.wait_for(
                AsyncStore.open(tmp_path / "missing" / "state.db"), timeout=30
            )
