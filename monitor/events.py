"""Events: one fact per change, named in the past tense.

The tracker produces them; :func:`emit` writes each as one structlog event.
Their names and fields are an interface: alert runbooks, journald queries and
the history store all depend on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog

TASK_DISCOVERED: Final = "task_discovered"
TASK_PROGRESSED: Final = "task_progressed"
TASK_PHASE_CHANGED: Final = "task_phase_changed"
TASK_STATUS_CHANGED: Final = "task_status_changed"
SNAPSHOT_PROGRESSED: Final = "snapshot_progressed"
SNAPSHOT_STATUS_CHANGED: Final = "snapshot_status_changed"
TASK_COMPLETED: Final = "task_completed"
TASK_FAILED: Final = "task_failed"
TASK_STALLED: Final = "task_stalled"
TASK_RESUMED: Final = "task_resumed"
TASK_OVERDUE: Final = "task_overdue"
TASK_VANISHED: Final = "task_vanished"
POLL_FAILED: Final = "poll_failed"
POLL_RECOVERED: Final = "poll_recovered"

#: Every event name, so counters can start at zero for each.
EVENT_NAMES: Final = (
    TASK_DISCOVERED,
    TASK_PROGRESSED,
    TASK_PHASE_CHANGED,
    TASK_STATUS_CHANGED,
    SNAPSHOT_PROGRESSED,
    SNAPSHOT_STATUS_CHANGED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_STALLED,
    TASK_RESUMED,
    TASK_OVERDUE,
    TASK_VANISHED,
    POLL_FAILED,
    POLL_RECOVERED,
)

#: Events that say something went wrong; they are logged at warning level.
WARNINGS: Final = frozenset({TASK_FAILED, TASK_STALLED, TASK_VANISHED, POLL_FAILED})


@dataclass(frozen=True, slots=True)
class Event:
    """One change, seen at ``time`` (Unix seconds) in one account and region."""

    name: str
    account: str
    region: str
    time: float
    task_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The flat form that is logged, stored and printed as JSON."""
        record: dict[str, Any] = {
            "event": self.name,
            "account": self.account,
            "region": self.region,
        }
        if self.task_id is not None:
            record["task_id"] = self.task_id
        record.update(self.fields)
        record["observed_at"] = iso_time(self.time)
        return record


def emit(events: Iterable[Event], logger: Any = None) -> None:
    """Write each event as one structlog event, warnings at warning level."""
    log = logger if logger is not None else structlog.get_logger("monitor.events")
    for event in events:
        record = event.as_record()
        name = record.pop("event")
        if event.name in WARNINGS:
            log.warning(name, **record)
        else:
            log.info(name, **record)


def iso_time(seconds: float) -> str:
    """Unix seconds as UTC ISO-8601, the form every event field uses."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
