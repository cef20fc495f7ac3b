"""Import task timelines: what one task looks like at any simulated time.

A task is a pure function of simulated time. When it is created it gets a
:class:`Timeline`, an ordered list of steps, each the complete state from
its time until the next step's; asking for the state at ``now`` is a binary
search, so two simulators built alike agree at every instant, whatever order
they were asked in.

The shape follows what real imports do (see DESIGN.md): ``Status`` stays
``active`` while ``StatusMessage`` walks the phases; ``Progress`` is a
percentage string that jumps at phase changes and creeps while converting;
a completed task has an ``ImageId`` and neither ``Progress`` nor
``StatusMessage``; failures and cancellations pass through ``deleting`` and
end ``deleted`` with the reason as ``StatusMessage``; an ended task vanishes
:data:`RETENTION` seconds after it ended.

Disks (``SnapshotDetails``) report ``DiskImageSize`` as bytes in a double,
``0.0`` while pending; their ``Status`` is ``active`` until their own
conversion is done, then ``completed``. The API documents nothing for the
disks of a failed task: here a disk that had not completed becomes
``deleted`` with the task's failure message, so a monitor sees it end too.
``DeviceName`` appears once the instance has booted, unless the importer
named it, and ``SnapshotId`` once the AMI is being prepared.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from monitor.model import ACTIVE, COMPLETED, DELETED, DELETING, PHASES

#: Ended tasks stay visible for seven days, as the real API keeps them.
RETENTION = 7 * 24 * 3600.0

#: How long a failed or cancelled task shows ``deleting`` before ``deleted``.
DELETING_SECONDS = 60.0

GiB = 1024.0**3

#: ``Progress`` of each phase where it is a single step.
PHASE_PROGRESS = {
    "pending": 2,
    "validating": 5,
    "validated": 11,
    "updating": 59,
    "updated": 65,
    "preparing to boot": 69,
    "booting": 73,
    "booted": 82,
    "preparing ami": 88,
}

#: While converting, ``Progress`` creeps through this range, one step a time.
CONVERTING_PROGRESS = (19, 58)

#: Seconds each phase lasts (uniform in the range); converting scales by size.
PHASE_SECONDS = {
    "pending": (60.0, 300.0),
    "validating": (60.0, 240.0),
    "validated": (20.0, 90.0),
    "updating": (120.0, 600.0),
    "updated": (20.0, 90.0),
    "preparing to boot": (60.0, 240.0),
    "booting": (180.0, 600.0),
    "booted": (20.0, 90.0),
    "preparing ami": (300.0, 1200.0),
}

#: Converting takes a fixed part plus this many seconds per GiB of disk.
CONVERTING_SECONDS_PER_GIB = (40.0, 100.0)

#: Failure messages real imports end with, by the phase they fail in.
FAILURES = {
    "validating": "ClientError: No valid partitions. Not a valid volume.",
    "converting": "ClientError: Unsupported kernel version 2.6.32",
    "updating": (
        "ClientError: BLSC-style GRUB found, but unable to detect default kernel"
    ),
    "booting": (
        "FirstBootFailure: This import request failed because the instance "
        "failed to boot and establish network connectivity."
    ),
}

CANCELLED = "User cancelled"

_CONVERTING = PHASES.index("converting")
_BOOTED = PHASES.index("booted")
_PREPARING_AMI = PHASES.index("preparing ami")


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """What the importer asked for: one ``DiskContainer``."""

    size_bytes: float = 8 * GiB
    format: str = "VMDK"
    url: str | None = None
    s3_bucket: str | None = "vm-imports"
    s3_key: str | None = "images/disk.vmdk"
    description: str | None = None
    device_name: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The attributes of a task that do not change while it runs."""

    task_id: str
    disks: tuple[DiskSpec, ...] = (DiskSpec(),)
    description: str | None = None
    architecture: str | None = "x86_64"
    platform: str | None = "Linux"
    license_type: str | None = "BYOL"
    hypervisor: str | None = None
    encrypted: bool | None = False
    kms_key_id: str | None = None
    boot_mode: str | None = None
    usage_operation: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    license_arns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiskState:
    """One disk at one step."""

    status: str
    size_bytes: float
    progress: int | None = None
    status_message: str | None = None
    device_name: str | None = None
    snapshot_id: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """The whole mutable state of a task from ``at`` until the next step."""

    at: float
    status: str
    message: str | None
    progress: int | None
    disks: tuple[DiskState, ...]
    image_id: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in (COMPLETED, DELETED)


@dataclass(frozen=True, slots=True)
class Stall:
    """A window in which a task is frozen: no step between since and until."""

    task_id: str
    message: str | None
    progress: int | None
    since: float
    until: float


class Timeline:
    """A task's whole life, decided up front; read it with :meth:`state_at`."""

    __slots__ = ("_times", "spec", "stalls", "steps")

    def __init__(
        self,
        spec: TaskSpec,
        steps: Sequence[Step],
        stalls: Sequence[Stall] = (),
    ) -> None:
        if not steps:
            raise ValueError("a timeline needs at least one step")
        times = [step.at for step in steps]
        if times != sorted(times):
            raise ValueError("steps must be in time order")
        self.spec = spec
        self.steps = tuple(steps)
        self.stalls = tuple(stalls)
        self._times = times

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    @property
    def created_at(self) -> float:
        return self.steps[0].at

    @property
    def ended_at(self) -> float | None:
        last = self.steps[-1]
        return last.at if last.ended else None

    @property
    def expires_at(self) -> float:
        ended = self.ended_at
        return math.inf if ended is None else ended + RETENTION

    def step_at(self, now: float) -> Step | None:
        """The step in force at ``now``; None before creation or after expiry."""
        index = bisect.bisect_right(self._times, now) - 1
        if index < 0 or now >= self.expires_at:
            return None
        return self.steps[index]

    def state_at(self, now: float) -> dict[str, Any] | None:
        """The task as DescribeImportImageTasks returns it (botocore's shape)."""
        step = self.step_at(now)
        return None if step is None else render(self.spec, step)

    def cancelled(self, at: float, reason: str = CANCELLED) -> Timeline:
        """This timeline cut at ``at`` by a cancellation: deleting, then deleted."""
        kept = [step for step in self.steps if step.at <= at]
        if not kept or kept[-1].ended or kept[-1].status == DELETING:
            raise ValueError(f"{self.task_id} cannot be cancelled at {at}")
        builder = TimelineBuilder(self.spec)
        builder.steps.extend(kept)
        builder.cancelled(at, reason)
        stalls = [
            replace(s, until=min(s.until, at)) for s in self.stalls if s.since < at
        ]
        return Timeline(self.spec, builder.steps, stalls)

    def __repr__(self) -> str:
        return f"Timeline({self.task_id}, {len(self.steps)} steps)"


def render(spec: TaskSpec, step: Step) -> dict[str, Any]:
    """One ``ImportImageTask`` in botocore's parsed shape, absent fields left out."""
    task: dict[str, Any] = {"ImportTaskId": spec.task_id}
    _put(task, "Architecture", spec.architecture)
    _put(task, "Description", spec.description)
    _put(task, "Encrypted", spec.encrypted)
    _put(task, "Hypervisor", spec.hypervisor)
    _put(task, "ImageId", step.image_id)
    _put(task, "KmsKeyId", spec.kms_key_id)
    _put(task, "LicenseType", spec.license_type)
    _put(task, "Platform", spec.platform)
    _put(task, "Progress", None if step.progress is None else str(step.progress))
    pairs = zip(spec.disks, step.disks, strict=True)
    task["SnapshotDetails"] = [_render_disk(disk, state) for disk, state in pairs]
    task["Status"] = step.status
    _put(task, "StatusMessage", step.message)
    if spec.tags:
        task["Tags"] = [{"Key": key, "Value": value} for key, value in spec.tags]
    if spec.license_arns:
        task["LicenseSpecifications"] = [
            {"LicenseConfigurationArn": arn} for arn in spec.license_arns
        ]
    _put(task, "UsageOperation", spec.usage_operation)
    _put(task, "BootMode", spec.boot_mode)
    return task


def _render_disk(disk: DiskSpec, state: DiskState) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    _put(detail, "Description", disk.description)
    _put(detail, "DeviceName", state.device_name)
    detail["DiskImageSize"] = state.size_bytes
    _put(detail, "Format", disk.format)
    _put(detail, "Progress", None if state.progress is None else str(state.progress))
    _put(detail, "SnapshotId", state.snapshot_id)
    detail["Status"] = state.status
    _put(detail, "StatusMessage", state.status_message)
    _put(detail, "Url", disk.url)
    if disk.s3_bucket is not None or disk.s3_key is not None:
        bucket: dict[str, Any] = {}
        _put(bucket, "S3Bucket", disk.s3_bucket)
        _put(bucket, "S3Key", disk.s3_key)
        detail["UserBucket"] = bucket
    return detail


def _put(target: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        target[key] = value


class TimelineBuilder:
    """Writes a timeline step by step, for scenarios and for tests.

    ``TimelineBuilder("import-ami-0123456789abcdef0").phase(t0, "pending", 2)
    .phase(t0 + 300, "converting", 28).completed(t0 + 3600).build()``

    Disk states follow from the phase unless given: sizes appear after
    pending, per-disk ``Progress`` while converting (``disk_progress`` sets
    it exactly; 100 marks a disk completed), device names from ``booted``
    and snapshot IDs from ``preparing ami``.
    """

    def __init__(self, spec: TaskSpec | str) -> None:
        self.spec = TaskSpec(spec) if isinstance(spec, str) else spec
        self.steps: list[Step] = []
        self.stalls: list[Stall] = []
        self._disk_cache: dict[tuple[int, int, int | None], DiskState] = {}

    def phase(
        self,
        at: float,
        message: str,
        progress: int | None = None,
        *,
        disk_progress: Sequence[int | None] | None = None,
    ) -> TimelineBuilder:
        """From ``at`` the task is active in phase ``message``."""
        if message not in PHASES:
            raise ValueError(f"unknown phase {message!r}; phases are {PHASES}")
        if progress is None:
            progress = PHASE_PROGRESS.get(message, CONVERTING_PROGRESS[0])
        if disk_progress is not None and len(disk_progress) != len(self.spec.disks):
            raise ValueError("disk_progress needs one entry per disk")
        disks = self._disks_in(message, progress, disk_progress)
        self._append(Step(at, ACTIVE, message, progress, disks))
        return self

    def completed(self, at: float, image_id: str | None = None) -> TimelineBuilder:
        """From ``at`` the task is completed, with an AMI."""
        disks = tuple(
            DiskState(
                COMPLETED,
                disk.size_bytes,
                device_name=_device_name(self.spec, index),
                snapshot_id=_snapshot_id(self.spec, index),
            )
            for index, disk in enumerate(self.spec.disks)
        )
        image = image_id or _derived_id("ami", self.spec.task_id)
        self._append(Step(at, COMPLETED, None, None, disks, image_id=image))
        return self

    def failed(
        self,
        at: float,
        message: str,
        *,
        deleting_for: float = DELETING_SECONDS,
    ) -> TimelineBuilder:
        """At ``at`` the task fails: ``deleting``, then ``deleted``, with a reason."""
        if not self.steps:
            raise ValueError("a task fails from some state: add a phase first")
        ended = tuple(
            disk
            if disk.status == COMPLETED
            else replace(disk, status=DELETED, progress=None, status_message=message)
            for disk in self.steps[-1].disks
        )
        self._append(Step(at, DELETING, message, None, ended))
        self._append(Step(at + deleting_for, DELETED, message, None, ended))
        return self

    def cancelled(
        self,
        at: float,
        reason: str = CANCELLED,
        *,
        deleting_for: float = DELETING_SECONDS,
    ) -> TimelineBuilder:
        """At ``at`` someone cancels the task; it ends like a failure."""
        return self.failed(at, reason, deleting_for=deleting_for)

    def stalled(self, since: float, until: float) -> TimelineBuilder:
        """Record that the task is meant to be frozen between two steps."""
        step = self.steps[-1]
        self.stalls.append(
            Stall(self.spec.task_id, step.message, step.progress, since, until)
        )
        return self

    def build(self) -> Timeline:
        return Timeline(self.spec, self.steps, self.stalls)

    def _append(self, step: Step) -> None:
        if self.steps and step.at < self.steps[-1].at:
            raise ValueError(f"step at {step.at} is before the previous step")
        if self.steps and self.steps[-1].ended:
            raise ValueError("the task has already ended")
        self.steps.append(step)

    def _disks_in(
        self,
        message: str,
        progress: int,
        disk_progress: Sequence[int | None] | None,
    ) -> tuple[DiskState, ...]:
        index = PHASES.index(message)
        disks = []
        for number in range(len(self.spec.disks)):
            percent = None
            if index == _CONVERTING:
                percent = (
                    _disk_share(progress)
                    if disk_progress is None
                    else disk_progress[number]
                )
            # Most steps repeat the disks of the step before: share them.
            key = (number, index, percent)
            state = self._disk_cache.get(key)
            if state is None:
                state = self._disk_cache[key] = self._disk_in(number, index, percent)
            disks.append(state)
        return tuple(disks)

    def _disk_in(self, number: int, index: int, percent: int | None) -> DiskState:
        disk = self.spec.disks[number]
        if index == 0:
            return DiskState(ACTIVE, 0.0, device_name=disk.device_name)
        if index < _CONVERTING:
            return DiskState(ACTIVE, disk.size_bytes, device_name=disk.device_name)
        if index == _CONVERTING:
            done = percent is not None and percent >= 100
            return DiskState(
                COMPLETED if done else ACTIVE,
                disk.size_bytes,
                progress=None if done else percent,
                device_name=disk.device_name,
            )
        device = _device_name(self.spec, number) if index >= _BOOTED else None
        snapshot = _snapshot_id(self.spec, number) if index >= _PREPARING_AMI else None
        return DiskState(
            COMPLETED,
            disk.size_bytes,
            device_name=device or disk.device_name,
            snapshot_id=snapshot,
        )


def _disk_share(progress: int) -> int:
    """A disk's percentage when only the task's converting progress is known."""
    low, high = CONVERTING_PROGRESS
    share = (progress - low) / (high - low + 1)
    return max(0, min(99, int(share * 100)))


def _device_name(spec: TaskSpec, index: int) -> str:
    given = spec.disks[index].device_name
    if given:
        return given
    return "/dev/sda1" if index == 0 else f"/dev/sd{chr(ord('a') + index)}"


def _snapshot_id(spec: TaskSpec, index: int) -> str:
    return _derived_id("snap", f"{spec.task_id}/{index}")


def _derived_id(prefix: str, seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{prefix}-{digest[:17]}"


@dataclass(frozen=True, slots=True)
class Plan:
    """How a generated task's life goes, beyond the random phase durations.

    ``outcome`` is how it ends; a failure happens at a random point of
    ``fail_in`` with its message from :data:`FAILURES`; a cancellation
    ``cancel_after`` seconds after creation. A stall freezes the task at the
    first step of ``stall_in`` whose progress reaches ``stall_at``, for
    ``stall_for`` seconds. ``pace`` multiplies every duration.
    """

    outcome: Literal["complete", "fail", "cancel"] = "complete"
    fail_in: str = "converting"
    cancel_after: float = 0.0
    stall_in: str | None = None
    stall_at: int = 0
    stall_for: float = 0.0
    pace: float = 1.0


def realistic(spec: TaskSpec, start: float, rng: random.Random, plan: Plan) -> Timeline:
    """A timeline with realistic, size-dependent phase durations from ``rng``."""
    builder = TimelineBuilder(spec)

    # Lay out every active step and when the task would complete.
    raw, completes_at = _active_steps(spec, start, rng, plan.pace)

    # A stall delays everything after the frozen step.
    stall: tuple[float, float] | None = None
    if plan.stall_in is not None and plan.stall_for > 0:
        raw, completes_at, stall = _insert_stall(raw, completes_at, plan)

    # Cut the life short where it fails or is cancelled.
    ends_at = completes_at
    if plan.outcome == "fail":
        ends_at = _failure_time(raw, completes_at, plan.fail_in, rng)
    elif plan.outcome == "cancel":
        ends_at = min(start + plan.cancel_after, completes_at)
    for at, message, progress, disk_progress in raw:
        if at >= ends_at and len(builder.steps) > 0:
            break
        builder.phase(at, message, progress, disk_progress=disk_progress)
        if stall is not None and at == stall[0]:
            builder.stalled(stall[0], min(stall[1], ends_at))

    if plan.outcome == "fail" and ends_at < completes_at:
        builder.failed(ends_at, FAILURES.get(plan.fail_in, FAILURES["converting"]))
    elif plan.outcome == "cancel" and ends_at < completes_at:
        builder.cancelled(max(ends_at, builder.steps[-1].at))
    else:
        builder.completed(completes_at)
    return builder.build()


_RawStep = tuple[float, str, int, list[int | None] | None]


def _active_steps(
    spec: TaskSpec, start: float, rng: random.Random, pace: float
) -> tuple[list[_RawStep], float]:
    raw: list[_RawStep] = []
    now = start
    for message in PHASES:
        if message == "converting":
            now = _converting_steps(spec, now, rng, pace, raw)
            continue
        raw.append((now, message, PHASE_PROGRESS[message], None))
        low, high = PHASE_SECONDS[message]
        now += rng.uniform(low, high) * pace
    return raw, now


def _converting_steps(
    spec: TaskSpec,
    begin: float,
    rng: random.Random,
    pace: float,
    raw: list[_RawStep],
) -> float:
    """Append the creeping converting steps; return when converting ends.

    Disks convert one after another, each for a time in proportion to its
    size, and the task's progress follows the bytes converted.
    """
    sizes = [disk.size_bytes for disk in spec.disks]
    total = sum(sizes) or 1.0
    per_gib = rng.uniform(*CONVERTING_SECONDS_PER_GIB)
    duration = (120.0 + per_gib * total / GiB) * pace
    low, high = CONVERTING_PROGRESS
    count = high - low + 1
    for number in range(count):
        fraction = number / count
        jitter = rng.uniform(-0.3, 0.3) if number else 0.0
        at = begin + duration * (fraction + jitter / count)
        done = fraction * total
        disk_progress: list[int | None] = []
        before = 0.0
        for size in sizes:
            if done >= before + size:
                disk_progress.append(100)
            elif done >= before:
                disk_progress.append(int((done - before) / size * 100) if size else 0)
            else:
                disk_progress.append(None)
            before += size
        raw.append((at, "converting", low + number, disk_progress))
    return begin + duration


def _insert_stall(
    raw: list[_RawStep], completes_at: float, plan: Plan
) -> tuple[list[_RawStep], float, tuple[float, float] | None]:
    for index, (at, message, progress, _) in enumerate(raw):
        if message == plan.stall_in and progress >= plan.stall_at:
            shifted = raw[: index + 1] + [
                (later + plan.stall_for, m, p, d) for later, m, p, d in raw[index + 1 :]
            ]
            following = (
                shifted[index + 1][0]
                if index + 1 < len(shifted)
                else completes_at + plan.stall_for
            )
            return shifted, completes_at + plan.stall_for, (at, following)
    return raw, completes_at, None


def _failure_time(
    raw: list[_RawStep], completes_at: float, phase: str, rng: random.Random
) -> float:
    times = [at for at, message, _, _ in raw if message == phase]
    if not times:
        return completes_at
    begin = times[0]
    later = [at for at, message, _, _ in raw if at > times[-1] and message != phase]
    end = later[0] if later else completes_at
    return rng.uniform(begin + 1.0, max(begin + 1.0, end - 1.0))
