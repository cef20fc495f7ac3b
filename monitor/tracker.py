"""The tracker: previous state + new snapshots + now => events + new state.

It is pure. It knows nothing of AWS, HTTP, Prometheus or the disk; the clock
is passed in. Everything the monitor reports is decided here, so every
correctness rule of the design lives in this file and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from monitor import events as ev
from monitor.events import Event, iso_time
from monitor.model import ACTIVE, COMPLETED, TASK_STATUSES, ImportTask

#: How many (time, progress) points a task keeps for its ETA.
HISTORY_POINTS = 32

#: An ETA needs at least this much observed time, or it is noise.
MIN_ETA_BASIS_SECONDS = 120.0


class TaskKey(NamedTuple):
    account: str
    region: str
    task_id: str


class RegionKey(NamedTuple):
    account: str
    region: str


@dataclass(frozen=True, slots=True)
class RegionPoll:
    """What one poll of one account and region brought back.

    ``active`` is the listing of active tasks; ``resolved`` the answer of the
    by-ID lookup for tasks that left that listing, and ``looked_up`` the IDs
    that lookup asked for. ``ok`` is false when any page or the lookup failed:
    then nothing else in it is trusted.
    """

    account: str
    region: str
    ok: bool
    active: tuple[ImportTask, ...] = ()
    resolved: tuple[ImportTask, ...] = ()
    looked_up: frozenset[str] = frozenset()
    error: str | None = None
    duration: float = 0.0

    @property
    def key(self) -> RegionKey:
        return RegionKey(self.account, self.region)


@dataclass(frozen=True, slots=True)
class TrackedTask:
    """A task and what the monitor remembers about it."""

    account: str
    region: str
    task: ImportTask
    first_seen: float
    last_change: float
    stalled: bool = False
    overdue: bool = False
    ended_at: float | None = None
    #: Ended because a lookup by ID found nothing: kept, not exported, so a
    #: stale listing cannot bring it back as a new task.
    vanished: bool = False
    #: (time, progress ratio) at each progress change, oldest first.
    progress_history: tuple[tuple[float, float], ...] = ()

    @property
    def key(self) -> TaskKey:
        return TaskKey(self.account, self.region, self.task.task_id)


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """How polling one account and region is going."""

    account: str
    region: str
    ok: bool
    last_attempt: float
    last_success: float | None = None
    failing_since: float | None = None
    duration: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TrackerState:
    tasks: Mapping[TaskKey, TrackedTask] = field(default_factory=dict)
    regions: Mapping[RegionKey, RegionHealth] = field(default_factory=dict)

    def open_task_ids(self, account: str, region: str) -> frozenset[str]:
        """Tasks of a region not yet ended: the ones a poll must account for."""
        return frozenset(
            tracked.task.task_id
            for key, tracked in self.tasks.items()
            if key.account == account
            and key.region == region
            and tracked.ended_at is None
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """The thresholds the tracker judges by, taken from the configuration."""

    #: (phase, total disk bytes) -> seconds without change before "stalled".
    stall_threshold: Callable[[str | None, float], float]
    #: An active task older than this (since first seen) is overdue.
    max_age: float
    #: An ended task stays in the state this long, then is forgotten.
    keep_ended: float


def observe(
    state: TrackerState, polls: Iterable[RegionPoll], now: float, rules: Rules
) -> tuple[TrackerState, list[Event]]:
    """Fold one poll cycle into the state; return the new state and events."""
    tasks = dict(state.tasks)
    regions = dict(state.regions)
    out: list[Event] = []

    for poll in polls:
        previous = regions.get(poll.key)
        regions[poll.key] = _region_health(previous, poll, now, out)
        if poll.ok:
            _apply_poll(tasks, poll, now, rules, out)

    # Stall, age and retention are judged only where the last poll worked:
    # a region we cannot see has no news, which is not the same as no change.
    for key, tracked in list(tasks.items()):
        health = regions.get(RegionKey(key.account, key.region))
        if health is None or not health.ok:
            continue
        if tracked.ended_at is not None:
            if now - tracked.ended_at >= rules.keep_ended:
                del tasks[key]
            continue
        tasks[key] = _judge_time(tracked, now, rules, out)

    return TrackerState(tasks=tasks, regions=regions), out


def estimate_eta(tracked: TrackedTask, now: float) -> float | None:
    """Seconds to completion, from the task's own average rate so far.

    The rate is measured from the first recorded progress to ``now``, not to
    the last change, so the flat steps that real imports show between phase
    jumps count against it instead of making every jump look fast.
    """
    task = tracked.task
    if task.status != ACTIVE or task.progress is None:
        return None
    if len(tracked.progress_history) < 2:
        return None

    start_time, start_progress = tracked.progress_history[0]
    elapsed = now - start_time
    gained = task.progress - start_progress
    if elapsed < MIN_ETA_BASIS_SECONDS or gained <= 0:
        return None

    return (1.0 - task.progress) * elapsed / gained


def _region_health(
    previous: RegionHealth | None, poll: RegionPoll, now: float, out: list[Event]
) -> RegionHealth:
    was_failing = previous is not None and not previous.ok

    if not poll.ok:
        if not was_failing:
            out.append(
                Event(
                    ev.POLL_FAILED,
                    poll.account,
                    poll.region,
                    now,
                    fields={"error": poll.error},
                )
            )
        return RegionHealth(
            account=poll.account,
            region=poll.region,
            ok=False,
            last_attempt=now,
            last_success=previous.last_success if previous else None,
            failing_since=(previous.failing_since if previous and was_failing else now),
            duration=poll.duration,
            error=poll.error,
        )

    if previous is not None and was_failing:
        since = previous.failing_since or now
        out.append(
            Event(
                ev.POLL_RECOVERED,
                poll.account,
                poll.region,
                now,
                fields={"failed_for_seconds": round(now - since, 3)},
            )
        )
    return RegionHealth(
        account=poll.account,
        region=poll.region,
        ok=True,
        last_attempt=now,
        last_success=now,
        duration=poll.duration,
    )


def _apply_poll(
    tasks: dict[TaskKey, TrackedTask],
    poll: RegionPoll,
    now: float,
    rules: Rules,
    out: list[Event],
) -> None:
    seen = deduplicate((*poll.active, *poll.resolved))

    for task in seen.values():
        key = TaskKey(poll.account, poll.region, task.task_id)
        previous = tasks.get(key)
        if previous is not None and previous.ended_at is not None:
            # An ended task never changes again; a stale listing must not
            # bring it back to life.
            continue
        tasks[key] = _diff(previous, poll.account, poll.region, task, now, out)

    # A task we knew that is neither listed as active nor found by ID is gone.
    # Only a lookup that actually asked for it can say so (rule 2).
    for task_id in poll.looked_up - seen.keys():
        key = TaskKey(poll.account, poll.region, task_id)
        tracked = tasks.get(key)
        if tracked is None or tracked.ended_at is not None:
            continue
        out.append(
            Event(
                ev.TASK_VANISHED,
                poll.account,
                poll.region,
                now,
                task_id,
                {
                    "status": tracked.task.status,
                    "phase": tracked.task.phase,
                    "progress": tracked.task.progress,
                },
            )
        )
        tasks[key] = replace(
            tracked, ended_at=now, vanished=True, stalled=False, overdue=False
        )


def deduplicate(tasks: Iterable[ImportTask]) -> dict[str, ImportTask]:
    """One entry per task ID; of duplicates, the one furthest along wins.

    Pages are read at different moments, so one task can show up twice in
    two states; keeping the most advanced never reports a step backwards.
    """
    chosen: dict[str, ImportTask] = {}
    for task in tasks:
        current = chosen.get(task.task_id)
        if current is None or _advancement(task) >= _advancement(current):
            chosen[task.task_id] = task
    return chosen


def _advancement(task: ImportTask) -> tuple[int, float]:
    rank = TASK_STATUSES.index(task.status) if task.status in TASK_STATUSES else -1
    return rank, task.progress or 0.0


def _diff(
    previous: TrackedTask | None,
    account: str,
    region: str,
    task: ImportTask,
    now: float,
    out: list[Event],
) -> TrackedTask:
    def event(name: str, **fields: object) -> None:
        out.append(Event(name, account, region, now, task.task_id, fields))

    if previous is None:
        event(
            ev.TASK_DISCOVERED,
            status=task.status,
            phase=task.phase,
            progress=task.progress,
            description=task.description,
            disks=len(task.disks),
            size_bytes=task.total_size_bytes,
        )
        tracked = TrackedTask(
            account=account,
            region=region,
            task=task,
            first_seen=now,
            last_change=now,
            progress_history=_history((), task, now),
        )
        return _finish_if_ended(tracked, None, now, out)

    old = previous.task
    changed = False

    if task.status != old.status:
        event(ev.TASK_STATUS_CHANGED, before=old.status, after=task.status)
        changed = True

    if task.phase != old.phase and task.phase is not None:
        event(ev.TASK_PHASE_CHANGED, before=old.phase, after=task.phase)
        changed = True

    history = previous.progress_history
    if task.progress is not None and task.progress != old.progress:
        changed = True
        history = _history(history, task, now)
        # Progress that goes down (a new phase restarting its count, a stale
        # page) is a change for stall purposes but never reported as progress.
        if old.progress is None or task.progress > old.progress:
            eta = estimate_eta(
                replace(previous, task=task, progress_history=history), now
            )
            event(
                ev.TASK_PROGRESSED,
                before=old.progress,
                after=task.progress,
                phase=task.phase,
                eta_seconds=None if eta is None else round(eta),
            )

    if _diff_disks(old, task, event):
        changed = True

    tracked = replace(
        previous,
        task=task,
        last_change=now if changed else previous.last_change,
        progress_history=history,
    )

    if changed and previous.stalled and not task.ended:
        event(
            ev.TASK_RESUMED,
            phase=task.phase,
            stalled_for_seconds=round(now - previous.last_change),
        )
        tracked = replace(tracked, stalled=False)

    return _finish_if_ended(tracked, old, now, out)


def _diff_disks(old: ImportTask, new: ImportTask, event: Callable[..., None]) -> bool:
    before = {disk.device: disk for disk in old.disks}
    changed = False

    for disk in new.disks:
        was = before.get(disk.device)
        old_status = was.status if was else None
        old_progress = was.progress if was else None
        old_size = was.size_bytes if was else None

        if disk.status != old_status:
            event(
                ev.SNAPSHOT_STATUS_CHANGED,
                device=disk.device,
                before=old_status,
                after=disk.status,
                status_message=disk.status_message,
            )
            changed = True
        if disk.progress is not None and disk.progress != old_progress:
            if old_progress is None or disk.progress > old_progress:
                event(
                    ev.SNAPSHOT_PROGRESSED,
                    device=disk.device,
                    before=old_progress,
                    after=disk.progress,
                )
            changed = True
        # The size going from 0.0 to the real byte count is the disk moving
        # on, so it counts as activity, though it has no event of its own.
        if disk.size_bytes != old_size:
            changed = True

    return changed


def _finish_if_ended(
    tracked: TrackedTask, old: ImportTask | None, now: float, out: list[Event]
) -> TrackedTask:
    task = tracked.task
    if not task.ended:
        return tracked

    fields: dict[str, object] = {
        "status": task.status,
        "tracked_for_seconds": round(now - tracked.first_seen),
    }
    if task.status == COMPLETED:
        fields["image_id"] = task.image_id
        name = ev.TASK_COMPLETED
    else:
        fields["status_message"] = task.status_message
        # A cancel and a failure both pass through "deleting" and end
        # "deleted"; only the message (e.g. "User cancelled") tells them apart.
        fields["last_phase"] = old.phase if old else None
        name = ev.TASK_FAILED

    out.append(Event(name, tracked.account, tracked.region, now, task.task_id, fields))
    return replace(tracked, ended_at=now, stalled=False, overdue=False)


def _judge_time(
    tracked: TrackedTask, now: float, rules: Rules, out: list[Event]
) -> TrackedTask:
    task = tracked.task
    if task.status != ACTIVE:
        return tracked

    def event(name: str, **fields: object) -> None:
        out.append(
            Event(name, tracked.account, tracked.region, now, task.task_id, fields)
        )

    threshold = rules.stall_threshold(task.phase, task.total_size_bytes)
    if not tracked.stalled and now - tracked.last_change >= threshold:
        event(
            ev.TASK_STALLED,
            phase=task.phase,
            progress=task.progress,
            since=iso_time(tracked.last_change),
            threshold_seconds=round(threshold),
        )
        tracked = replace(tracked, stalled=True)

    if not tracked.overdue and now - tracked.first_seen >= rules.max_age:
        event(
            ev.TASK_OVERDUE,
            phase=task.phase,
            progress=task.progress,
            age_seconds=round(now - tracked.first_seen),
            max_age_seconds=round(rules.max_age),
        )
        tracked = replace(tracked, overdue=True)

    return tracked


def _history(
    history: tuple[tuple[float, float], ...], task: ImportTask, now: float
) -> tuple[tuple[float, float], ...]:
    if task.progress is None:
        return history
    # Keep the oldest point: the ETA's basis is the whole observed run.
    points = (*history, (now, task.progress))
    if len(points) > HISTORY_POINTS:
        points = (points[0], *points[-(HISTORY_POINTS - 1) :])
    return points
