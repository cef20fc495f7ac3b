"""``history`` and ``status`` read the state store, never AWS, never writing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import events as ev
from monitor.events import Event
from monitor.model import ImportTask
from monitor.store import Store
from monitor.tracker import TrackedTask, TrackerState

REPO = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0
TASK = "import-ami-0123456789abcdef0"


def run_command(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run one command in its own process, as a user at a shell would."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", name, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def tracked(
    task_id: str,
    *,
    region: str = "eu-west-1",
    status: str = "active",
    phase: str | None = "converting",
    progress: float | None = 0.39,
    stalled: bool = False,
) -> TrackedTask:
    task = ImportTask(
        task_id=task_id,
        status=status,
        phase=phase,
        status_message=phase,
        progress=progress,
    )
    return TrackedTask(
        account="prod",
        region=region,
        task=task,
        first_seen=T0,
        last_change=T0 + 900.0,
        stalled=stalled,
        progress_history=((T0, 0.1), (T0 + 900.0, 0.39)),
    )


def timeline() -> list[Event]:
    def event(name: str, at: float, **fields: object) -> Event:
        return Event(name, "prod", "eu-west-1", at, TASK, fields)

    # Saved out of order: the timeline is ordered by time, not by insertion.
    return [
        event(ev.TASK_PHASE_CHANGED, T0 + 60, before="validated", after="converting"),
        event(
            ev.TASK_DISCOVERED,
            T0,
            status="active",
            phase="validated",
            progress=0.1,
            description="db \x1b[2J server",
            disks=1,
        ),
        event(
            ev.TASK_PROGRESSED,
            T0 + 900,
            before=0.1,
            after=0.39,
            phase="converting",
            eta_seconds=2100,
        ),
        event(ev.TASK_STATUS_CHANGED, T0 + 1000, before="active", after="deleted"),
        event(
            ev.TASK_FAILED,
            T0 + 1000,
            status="deleted",
            status_message="ClientError: Unsupported kernel version",
            last_phase="converting",
            cancelled=False,
        ),
    ]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose [state] path is a store holding two tasks and events."""
    state_path = tmp_path / "state.db"
    tasks = [
        tracked(TASK),
        tracked(
            "import-ami-00000000000000bad",
            region="us-east-1",
            phase="booting\x1b]0;owned\x07",
            stalled=True,
        ),
    ]
    store = Store.open(state_path)
    store.save(TrackerState(tasks={t.key: t for t in tasks}), timeline())
    store.close()

    path = tmp_path / "config.toml"
    path.write_text(
        '[[targets]]\nname = "prod"\nregions = ["eu-west-1", "us-east-1"]\n\n'
        f"[state]\npath = {json.dumps(str(state_path))}\n"
    )
    return path


class TestStatus:
    def test_lists_every_task_from_the_store(self, config: Path) -> None:
        """One row per task, by account, region and ID, with status and clock."""
        result = run_command("status", "--config", str(config))

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == [
            "TASK",
            "ACCOUNT",
            "REGION",
            "STATUS",
            "PHASE",
            "PROGRESS",
            "STALLED",
            "LAST",
            "CHANGE",
        ]
        assert lines[1].split()[:7] == [
            TASK,
            "prod",
            "eu-west-1",
            "active",
            "converting",
            "39%",
            "no",
        ]
        assert lines[2].split() == [
            "import-ami-00000000000000bad",
            "prod",
            "us-east-1",
            "active",
            "booting\\x1b]0;owned\\x07",
            "39%",
            "yes",
            "2027-01-15T08:15:00+00:00",
        ]
        assert len(lines) == 3

    def test_control_characters_never_reach_the_terminal(self, config: Path) -> None:
        """A phase from the API carrying escape sequences is shown escaped."""
        result = run_command("status", "--config", str(config))

        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout
        assert "\x07" not in result.stdout

    def test_json_lists_the_same_tasks(self, config: Path) -> None:
        """--json gives one object per task, with times as ISO-8601 UTC."""
        result = run_command("status", "--config", str(config), "--json")

        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        assert [item["task_id"] for item in listed] == [
            TASK,
            "import-ami-00000000000000bad",
        ]
        assert listed[0]["progress"] == 0.39
        assert listed[0]["last_change"] == "2027-01-15T08:15:00+00:00"
        assert listed[1]["stalled"] is True

    def test_it_reads_while_the_daemon_holds_the_write_lock(
        self, config: Path, tmp_path: Path
    ) -> None:
        """Beside a writer mid-transaction, status sees the last committed state."""
        writer = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM tasks")

        result = run_command("status", "--config", str(config), "--json")
        writer.rollback()

        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)) == 2

    def test_it_never_writes_the_store(self, config: Path, tmp_path: Path) -> None:
        """The database file is byte for byte the same after a status."""
        before = (tmp_path / "state.db").read_bytes()

        result = run_command("status", "--config", str(config))

        assert result.returncode == 0, result.stderr
        assert (tmp_path / "state.db").read_bytes() == before

    def test_a_missing_store_is_an_error_naming_it(self, tmp_path: Path) -> None:
        """A config pointing where no daemon has run says so and exits 1."""
        missing = tmp_path / "nowhere.db"
        config = tmp_path / "config.toml"
        config.write_text(f"[state]\npath = {json.dumps(str(missing))}\n")

        result = run_command("status", "--config", str(config))

        assert result.returncode == 1
        assert result.stdout == ""
        assert f"state database {missing} does not exist" in result.stderr
        assert not missing.exists()


class TestHistory:
    def test_prints_the_timeline_oldest_first(self, config: Path) -> None:
        """Time, event, phase and progress, with before -> after where they apply."""
        result = run_command("history", TASK, "--config", str(config))

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"{TASK} in prod/eu-west-1"
        assert lines[1].split() == ["TIME", "EVENT", "PHASE", "PROGRESS", "DETAIL"]
        rows = lines[2:]
        assert [row.split()[1] for row in rows] == [
            "task_discovered",
            "task_phase_changed",
            "task_progressed",
            "task_status_changed",
            "task_failed",
        ]
        assert rows[0].startswith("2027-01-15T08:00:00+00:00  task_discovered")
        assert "validated -> converting" in rows[1]
        assert "10% -> 39%" in rows[2]
        assert "eta_seconds=2100" in rows[2]
        assert "status active -> deleted" in rows[3]
        assert 'status_message="ClientError: Unsupported kernel version"' in rows[4]

    def test_task_text_is_escaped(self, config: Path) -> None:
        """A description with a terminal escape is printed as an escape."""
        result = run_command("history", TASK, "--config", str(config))

        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout
        assert "db \\u001b[2J server" in result.stdout

    def test_json_is_the_stored_event_records(self, config: Path) -> None:
        """--json prints the records as logged, in time order."""
        result = run_command("history", TASK, "--config", str(config), "--json")

        assert result.returncode == 0, result.stderr
        expected = sorted(timeline(), key=lambda event: event.time)
        assert json.loads(result.stdout) == [event.as_record() for event in expected]

    def test_an_unknown_task_exits_3(self, config: Path) -> None:
        """A task the store never saw is an error of its own, exit status 3."""
        result = run_command(
            "history", "import-ami-ffffffffffffffff", "--config", str(config)
        )

        assert result.returncode == 3
        assert result.stdout == ""
        assert "import-ami-ffffffffffffffff is unknown" in result.stderr

    def test_a_tracked_task_without_events_is_known(self, config: Path) -> None:
        """A task whose events were pruned still has its place, and no rows."""
        result = run_command(
            "history", "import-ami-00000000000000bad", "--config", str(config)
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "import-ami-00000000000000bad in prod/us-east-1",
            "TIME  EVENT  PHASE  PROGRESS  DETAIL",
        ]
