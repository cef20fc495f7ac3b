"""State that survives restarts: one SQLite file, written once per poll cycle.

Without it a restarted monitor would announce every task again, restart every
stall clock and could miss a completion that happened while it was down.

The file (``[state] path``) is SQLite in WAL mode, so ``status`` and
``history`` can read it while the daemon writes. Its schema version is
``PRAGMA user_version``; :data:`MIGRATIONS` takes any older file to
:data:`SCHEMA_VERSION` in one transaction at open. Version 2 holds:

``tasks (account, region, task_id, data)``
    One row per tracked task. ``data`` is a JSON object::

        {"task": ImportTask.to_dict(),
         "first_seen": 1700000000.0, "last_change": 1700000600.0,
         "stalled": false, "overdue": false, "ended_at": null,
         "progress_history": [[1700000000.0, 0.05], [1700000600.0, 0.28]]}

    Times are Unix seconds and progress is a 0..1 ratio, as in the tracker.

``regions (account, region, data)``
    One row per polled account and region; ``data`` is the JSON object of
    the :class:`~monitor.tracker.RegionHealth` fields other than the key.

``history (id, observed_at, account, region, task_id, event, record)``
    Append-only, one row per event: ``observed_at`` in Unix seconds,
    ``task_id`` null for poll events, ``record`` the JSON of
    :meth:`Event.as_record <monitor.events.Event.as_record>`. Version 1 had
    no ``observed_at`` column; its rows get theirs from the record's own
    ``observed_at``, which is whole seconds.

A file this code cannot use stops it at open with a :class:`StoreError` of
one line naming the file. Nothing here ever deletes, moves or overwrites a
file: a corrupt one is for a person to move aside.

A read-only reader of a cleanly closed file leaves empty ``-wal`` and
``-shm`` files beside it; SQLite gives them the database file's owner even
when the reader is root, so the daemon can still open them.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from monitor.events import Event
from monitor.model import ImportTask
from monitor.tracker import RegionHealth, RegionKey, TaskKey, TrackedTask, TrackerState

log = structlog.get_logger("monitor.store")

_T = TypeVar("_T")

#: Schema steps, one tuple of SQL statements per version: ``MIGRATIONS[n]``
#: takes a file from version ``n`` to ``n + 1``. Append; never edit a step.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the first schema.
    (
        """CREATE TABLE tasks (
            account TEXT NOT NULL,
            region TEXT NOT NULL,
            task_id TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (account, region, task_id)
        )""",
        """CREATE TABLE regions (
            account TEXT NOT NULL,
            region TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (account, region)
        )""",
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            region TEXT NOT NULL,
            task_id TEXT,
            event TEXT NOT NULL,
            record TEXT NOT NULL
        )""",
        "CREATE INDEX history_task ON history (task_id)",
    ),
    # 1 -> 2: a time column, so pruning and a task's timeline use an index
    # instead of parsing every record's JSON.
    (
        "ALTER TABLE history ADD COLUMN observed_at REAL NOT NULL DEFAULT 0",
        """UPDATE history SET observed_at = coalesce(
            CASE WHEN json_valid(record)
                THEN unixepoch(json_extract(record, '$.observed_at')) END,
            0
        )""",
        "DROP INDEX history_task",
        "CREATE INDEX history_task ON history (task_id, observed_at)",
        "CREATE INDEX history_time ON history (observed_at)",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)

#: Seconds a statement waits for another writer's lock before failing.
BUSY_TIMEOUT: Final = 5.0

#: The name (prefix) of :class:`AsyncStore`'s worker thread.
THREAD_NAME: Final = "ec2-import-monitor-store"

#: Events kept for the next save when a save fails; older ones are dropped.
MAX_PENDING_EVENTS: Final = 10_000

_CORRUPT = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


class StoreError(Exception):
    """The state database cannot be used; the message is one line naming it."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SaveReport:
    """What the last :meth:`Store.save` wrote, for logs and tests."""

    tasks_written: int
    tasks_deleted: int
    regions_written: int
    events_written: int
    #: Rows sqlite itself counted as inserted, updated or deleted.
    rows_changed: int
    seconds: float


class Store:
    """The state database, used from one thread (sqlite's own check holds)."""

    def __init__(
        self, path: Path, connection: sqlite3.Connection, *, read_only: bool
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.last_save: SaveReport | None = None
        self._db = connection
        # What the file holds, as of the last load or save: the baseline that
        # makes a save write only what changed. None until first needed.
        self._saved_tasks: dict[TaskKey, TrackedTask] | None = None
        self._saved_regions: dict[RegionKey, RegionHealth] = {}
        self._pending_events: list[Event] = []

    @classmethod
    def open(
        cls, path: Path, *, read_only: bool = False, busy_timeout: float = BUSY_TIMEOUT
    ) -> Store:
        """Open (or create) the database and migrate it to this version.

        ``read_only`` opens an existing file without writing anything, not
        even a migration: what ``status`` and ``history`` use beside a
        running daemon. ``busy_timeout`` is how long to wait for another
        process's write lock.
        """
        path = Path(path)
        _check_path(path, read_only)

        try:
            connection = _connect(path, read_only, busy_timeout)
        except sqlite3.Error as error:
            raise _explain(path, error) from None

        try:
            migrated_from = _prepare(path, connection, read_only)
        except BaseException:
            connection.close()
            raise

        if migrated_from is not None:
            log.info(
                "state_store_migrated",
                path=str(path),
                from_version=migrated_from,
                to_version=SCHEMA_VERSION,
            )
        log.debug("state_store_opened", path=str(path), read_only=read_only)
        return cls(path, connection, read_only=read_only)

    def load(self) -> TrackerState:
        """The tasks and region health exactly as last saved."""
        with self._errors():
            tasks = self._read_tasks()
            regions = self._read_regions()

        if not self.read_only:
            self._saved_tasks = dict(tasks)
            self._saved_regions = dict(regions)
        return TrackerState(tasks=tasks, regions=regions)

    def save(self, state: TrackerState, events: Sequence[Event] = ()) -> None:
        """Write one poll cycle in one transaction: changed rows and events.

        A task row is written only when its :class:`TrackedTask` differs
        from the one last saved, so a cycle costs what changed, not what is
        tracked. If the transaction fails nothing is written, the next save
        writes the same differences again, and this cycle's events are kept
        for it (up to :data:`MAX_PENDING_EVENTS`).
        """
        if self.read_only:
            raise StoreError(
                self.path, f"state database {self.path} was opened read-only"
            )
        started = time.perf_counter()

        with self._errors():
            saved_tasks = self._baseline()
        tasks_changed = _changed(saved_tasks, state.tasks)
        tasks_gone = [key for key in saved_tasks if key not in state.tasks]
        regions_changed = _changed(self._saved_regions, state.regions)
        regions_gone = [key for key in self._saved_regions if key not in state.regions]
        pending = [*self._pending_events, *events][-MAX_PENDING_EVENTS:]

        before = self._db.total_changes
        try:
            with self._errors(), self._transaction():
                self._write(
                    tasks_changed, tasks_gone, regions_changed, regions_gone, pending
                )
        except StoreError:
            self._pending_events = pending
            raise

        self._pending_events = []
        self._saved_tasks = dict(state.tasks)
        self._saved_regions = dict(state.regions)
        self.last_save = SaveReport(
            tasks_written=len(tasks_changed),
            tasks_deleted=len(tasks_gone),
            regions_written=len(regions_changed),
            events_written=len(pending),
            rows_changed=self._db.total_changes - before,
            seconds=time.perf_counter() - started,
        )
        log.debug("state_saved", **asdict(self.last_save))

    def history(self, task_id: str) -> list[dict[str, Any]]:
        """One task's event records, oldest first."""
        with self._errors():
            rows = self._db.execute(
                "SELECT record FROM history WHERE task_id = ? ORDER BY observed_at, id",
                (task_id,),
            ).fetchall()
        return [json.loads(record) for (record,) in rows]

    def tasks(self, task_id: str | None = None) -> list[TrackedTask]:
        """The tracked tasks (or those with one ID), by account, region, ID."""
        with self._errors():
            tasks = self._read_tasks(task_id)
        return [tasks[key] for key in sorted(tasks)]

    def prune_history(self, before: float) -> int:
        """Forget events observed before ``before`` (Unix seconds); how many."""
        if self.read_only:
            raise StoreError(
                self.path, f"state database {self.path} was opened read-only"
            )
        with self._errors(), self._transaction():
            cursor = self._db.execute(
                "DELETE FROM history WHERE observed_at < ?", (before,)
            )
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()

    # Internals

    def _baseline(self) -> dict[TaskKey, TrackedTask]:
        if self._saved_tasks is None:
            # Saving without a load first: compare against the file itself,
            # or rows of tasks the state no longer has would never be deleted.
            self.load()
        assert self._saved_tasks is not None
        return self._saved_tasks

    def _read_tasks(self, only: str | None = None) -> dict[TaskKey, TrackedTask]:
        query = "SELECT account, region, task_id, data FROM tasks"
        rows = (
            self._db.execute(query)
            if only is None
            else self._db.execute(f"{query} WHERE task_id = ?", (only,))
        )
        tasks = {}
        for account, region, task_id, data in rows:
            key = TaskKey(account, region, task_id)
            try:
                tasks[key] = _task_from_json(account, region, data)
            except (ValueError, TypeError, KeyError) as error:
                raise StoreError(
                    self.path,
                    f"state database {self.path}: task {task_id} in {account}/"
                    f"{region} cannot be read ({error}); {_move_aside(self.path)}",
                ) from None
        return tasks

    def _read_regions(self) -> dict[RegionKey, RegionHealth]:
        regions = {}
        for account, region, data in self._db.execute(
            "SELECT account, region, data FROM regions"
        ):
            try:
                regions[RegionKey(account, region)] = _region_from_json(
                    account, region, data
                )
            except (ValueError, TypeError) as error:
                raise StoreError(
                    self.path,
                    f"state database {self.path}: region {account}/{region} "
                    f"cannot be read ({error}); {_move_aside(self.path)}",
                ) from None
        return regions

    def _write(
        self,
        tasks: Sequence[TrackedTask],
        tasks_gone: Sequence[TaskKey],
        regions: Sequence[RegionHealth],
        regions_gone: Sequence[RegionKey],
        events: Sequence[Event],
    ) -> None:
        self._db.executemany(
            "INSERT INTO tasks (account, region, task_id, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (account, region, task_id)"
            " DO UPDATE SET data = excluded.data",
            (
                (
                    tracked.account,
                    tracked.region,
                    tracked.task.task_id,
                    _task_json(tracked),
                )
                for tracked in tasks
            ),
        )
        self._db.executemany(
            "DELETE FROM tasks WHERE account = ? AND region = ? AND task_id = ?",
            tasks_gone,
        )
        self._db.executemany(
            "INSERT INTO regions (account, region, data) VALUES (?, ?, ?)"
            " ON CONFLICT (account, region) DO UPDATE SET data = excluded.data",
            (
                (health.account, health.region, _region_json(health))
                for health in regions
            ),
        )
        self._db.executemany(
            "DELETE FROM regions WHERE account = ? AND region = ?", regions_gone
        )
        self._db.executemany(
            "INSERT INTO history"
            " (observed_at, account, region, task_id, event, record)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    event.time,
                    event.account,
                    event.region,
                    event.task_id,
                    event.name,
                    json.dumps(event.as_record(), default=str),
                )
                for event in events
            ),
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a second writer waits
        # for it (busy timeout) instead of failing halfway through.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.commit()
        except BaseException:
            # A failed COMMIT leaves the transaction open; the next BEGIN
            # would fail on it forever.
            if self._db.in_transaction:
                self._db.rollback()
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise _explain(self.path, error) from None


def read_saved_state(path: Path) -> TrackerState:
    """The daemon's last saved state, read-only; empty when it cannot be read.

    For commands that look (``once``, ``watch``): the history in it is what
    ages and ETAs are estimated from, and a missing or busy file is no
    reason to refuse a look.
    """
    if not path.is_file():
        return TrackerState()
    try:
        store = Store.open(path, read_only=True)
    except StoreError:
        return TrackerState()
    try:
        return store.load()
    except StoreError:
        return TrackerState()
    finally:
        store.close()


class AsyncStore:
    """A :class:`Store` whose every call runs on one dedicated worker thread.

    Disk I/O never blocks the event loop, and the sqlite connection is only
    ever touched by the thread that opened it.
    """

    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor

    @classmethod
    async def open(
        cls, path: Path, *, read_only: bool = False, busy_timeout: float = BUSY_TIMEOUT
    ) -> AsyncStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        try:
            store = await _on(
                executor,
                lambda: Store.open(
                    path, read_only=read_only, busy_timeout=busy_timeout
                ),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def last_save(self) -> SaveReport | None:
        return self._store.last_save

    async def load(self) -> TrackerState:
        return await _on(self._executor, self._store.load)

    async def save(self, state: TrackerState, events: Sequence[Event] = ()) -> None:
        """:meth:`Store.save`; the state's mappings must not change meanwhile.

        The tracker builds new mappings every cycle, so handing over its
        state as is satisfies that.
        """
        await _on(self._executor, lambda: self._store.save(state, events))

    async def history(self, task_id: str) -> list[dict[str, Any]]:
        return await _on(self._executor, lambda: self._store.history(task_id))

    async def tasks(self, task_id: str | None = None) -> list[TrackedTask]:
        return await _on(self._executor, lambda: self._store.tasks(task_id))

    async def prune_history(self, before: float) -> int:
        return await _on(self._executor, lambda: self._store.prune_history(before))

    async def close(self) -> None:
        # Calls already queued (a last save) finish first: one worker, FIFO.
        try:
            await _on(self._executor, self._store.close)
        finally:
            self._executor.shutdown(wait=False)


async def _on(executor: ThreadPoolExecutor, call: Callable[[], _T]) -> _T:
    return await asyncio.get_running_loop().run_in_executor(executor, call)


# Opening


def _check_path(path: Path, read_only: bool) -> None:
    if path.is_dir():
        raise StoreError(path, f"state database {path} is a directory, not a file")
    if read_only and not path.exists():
        raise StoreError(
            path,
            f"state database {path} does not exist (the daemon creates it when "
            "it starts; is this the daemon's config?)",
        )
    if not path.parent.is_dir():
        # The parent is systemd's StateDirectory=; creating it here would
        # hide a unit or config that points somewhere else.
        raise StoreError(
            path,
            f"state database {path}: directory {path.parent} does not exist",
        )


def _connect(path: Path, read_only: bool, busy_timeout: float) -> sqlite3.Connection:
    # Autocommit at the driver level: transactions are explicit, and the
    # migration's DDL is inside them (sqlite's DDL is transactional).
    if read_only:
        uri = f"{path.absolute().as_uri()}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None)
    else:
        connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
    return connection


def _prepare(path: Path, db: sqlite3.Connection, read_only: bool) -> int | None:
    """Check the file and migrate it; the version migrated from, if any."""
    try:
        # The first read of the header: a file that is not a database fails
        # here, before anything below could write to it.
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                path,
                f"state database {path} was written by a newer "
                f"ec2-import-monitor (schema {version} > {SCHEMA_VERSION}); "
                "run that version, or set [state] path to another file",
            )

        if read_only:
            if 0 < version < SCHEMA_VERSION:
                raise StoreError(
                    path,
                    f"state database {path} has schema {version}, older than "
                    f"{SCHEMA_VERSION}; start the daemon once to migrate it",
                )
            if version == 0:
                raise StoreError(
                    path, f"state database {path} is empty (no schema yet)"
                )
            return None

        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise StoreError(path, _corrupt(path, problem))

        db.execute("PRAGMA journal_mode = WAL")
        # FULL syncs the log at each commit, once a cycle: a power cut then
        # loses no cycle, so no change is reported twice after it.
        db.execute("PRAGMA synchronous = FULL")

        db.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have
            # migrated the file since the first look.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            # Written even when unchanged: it is the probe that proves the
            # file writable now, not at the first save a minute later.
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.rollback()
            raise
        db.commit()
    except sqlite3.Error as error:
        raise _explain(path, error) from None

    return version if 0 < version < SCHEMA_VERSION else None


def _explain(path: Path, error: sqlite3.Error) -> StoreError:
    name = getattr(error, "sqlite_errorname", "") or ""
    detail = str(error)
    if name in _CORRUPT or name.startswith("SQLITE_CORRUPT"):
        return StoreError(path, _corrupt(path, detail))
    if name.startswith("SQLITE_READONLY") or name in ("SQLITE_PERM", "SQLITE_AUTH"):
        return StoreError(
            path,
            f"state database {path} is read-only ({detail}); the service user "
            "needs write access to the file and its directory",
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(
            path,
            f"state database {path} cannot be opened or created ({detail}); "
            "the service user needs write access to the file and its directory",
        )
    if name in _BUSY or name.startswith("SQLITE_BUSY"):
        return StoreError(
            path,
            f"state database {path} is locked by another process ({detail}); "
            "is a second monitor using the same [state] path?",
        )
    return StoreError(path, f"state database {path}: {detail}")


def _corrupt(path: Path, detail: str) -> str:
    return f"state database {path} is corrupt ({detail}); {_move_aside(path)}"


def _move_aside(path: Path) -> str:
    quoted = shlex.quote(str(path))
    advice = f"move it aside and start fresh: mv {quoted} {quoted}.corrupt"
    # A write-ahead log left beside a fresh file would be replayed into it.
    wal = Path(f"{path}-wal")
    if wal.exists():
        quoted_wal = shlex.quote(str(wal))
        advice += f" && mv {quoted_wal} {quoted_wal}.corrupt"
    return advice


# Rows


def _changed(saved: Mapping[Any, _T], current: Mapping[Any, _T]) -> list[_T]:
    # Identity first: an unchanged task is often the very same object.
    return [
        value
        for key, value in current.items()
        if (old := saved.get(key)) is not value and old != value
    ]


def _task_json(tracked: TrackedTask) -> str:
    return json.dumps(
        {
            "task": tracked.task.to_dict(),
            "first_seen": tracked.first_seen,
            "last_change": tracked.last_change,
            "stalled": tracked.stalled,
            "overdue": tracked.overdue,
            "ended_at": tracked.ended_at,
            "vanished": tracked.vanished,
            "progress_history": [list(point) for point in tracked.progress_history],
        }
    )


def _task_from_json(account: str, region: str, text: str) -> TrackedTask:
    data = json.loads(text)
    return TrackedTask(
        account=account,
        region=region,
        task=ImportTask.from_dict(data["task"]),
        first_seen=float(data["first_seen"]),
        last_change=float(data["last_change"]),
        stalled=bool(data.get("stalled", False)),
        overdue=bool(data.get("overdue", False)),
        ended_at=None if data.get("ended_at") is None else float(data["ended_at"]),
        vanished=bool(data.get("vanished", False)),
        progress_history=tuple(
            (float(at), float(progress))
            for at, progress in data.get("progress_history", ())
        ),
    )


def _region_json(health: RegionHealth) -> str:
    data = asdict(health)
    del data["account"], data["region"]
    return json.dumps(data)


def _region_from_json(account: str, region: str, text: str) -> RegionHealth:
    return RegionHealth(account=account, region=region, **json.loads(text))
