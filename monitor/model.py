"""Import tasks as the monitor sees them: immutable, parsed once from the API.

This is the one place where the API's CamelCase names are mapped to
snake_case. Parsing never raises on odd input: a field that is missing or of
the wrong type becomes ``None``, because a monitor that crashes on one
strange response watches nothing at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIVE = "active"
DELETING = "deleting"
DELETED = "deleted"
COMPLETED = "completed"
UNKNOWN = "unknown"

#: Every ``Status`` the API documents, in lifecycle order.
TASK_STATUSES = (ACTIVE, DELETING, DELETED, COMPLETED)

#: Statuses after which a task never changes again.
FINAL_STATUSES = frozenset({DELETED, COMPLETED})

#: ``StatusMessage`` values while a task is active, in the order they happen.
PHASES = (
    "pending",
    "validating",
    "validated",
    "converting",
    "updating",
    "updated",
    "preparing to boot",
    "booting",
    "booted",
    "preparing ami",
)


@dataclass(frozen=True, slots=True)
class SnapshotDisk:
    """One entry of a task's ``SnapshotDetails``."""

    #: ``disk0``, ``disk1``... by position: the API keeps the order, while
    #: ``DeviceName`` only appears once the import has booted, and a label
    #: that changed midway would split one disk's series in two.
    device: str
    device_name: str | None = None
    status: str | None = None
    status_message: str | None = None
    progress: float | None = None
    size_bytes: float | None = None
    format: str | None = None
    snapshot_id: str | None = None
    url: str | None = None
    s3_bucket: str | None = None
    s3_key: str | None = None
    description: str | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any], index: int) -> SnapshotDisk:
        bucket = item.get("UserBucket")
        bucket = bucket if isinstance(bucket, Mapping) else {}
        return cls(
            device=f"disk{index}",
            device_name=_text(item.get("DeviceName")),
            status=_text(item.get("Status")),
            status_message=_text(item.get("StatusMessage")),
            progress=parse_progress(item.get("Progress")),
            size_bytes=_number(item.get("DiskImageSize")),
            format=_text(item.get("Format")),
            snapshot_id=_text(item.get("SnapshotId")),
            url=_text(item.get("Url")),
            s3_bucket=_text(bucket.get("S3Bucket")),
            s3_key=_text(bucket.get("S3Key")),
            description=_text(item.get("Description")),
        )


@dataclass(frozen=True, slots=True)
class ImportTask:
    """One ``ImportImageTasks`` entry of ``DescribeImportImageTasks``."""

    task_id: str
    status: str
    phase: str | None = None
    status_message: str | None = None
    progress: float | None = None
    image_id: str | None = None
    description: str | None = None
    architecture: str | None = None
    platform: str | None = None
    license_type: str | None = None
    hypervisor: str | None = None
    boot_mode: str | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    usage_operation: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    disks: tuple[SnapshotDisk, ...] = field(default=())

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def failed(self) -> bool:
        """A task that ended without an image: failed or cancelled."""
        return self.status == DELETED

    @property
    def total_size_bytes(self) -> float:
        return sum(disk.size_bytes or 0.0 for disk in self.disks)

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> ImportTask | None:
        """Parse one API entry; ``None`` when it has no usable task ID."""
        if not isinstance(item, Mapping):
            return None
        task_id = _text(item.get("ImportTaskId"))
        if not task_id:
            return None

        status = (_text(item.get("Status")) or UNKNOWN).lower()
        if status not in TASK_STATUSES:
            status = UNKNOWN
        message = _text(item.get("StatusMessage"))

        details = item.get("SnapshotDetails")
        details = details if isinstance(details, list) else []
        disks = tuple(
            SnapshotDisk.from_api(detail, index)
            for index, detail in enumerate(details)
            if isinstance(detail, Mapping)
        )

        return cls(
            task_id=task_id,
            status=status,
            # While active, StatusMessage names the phase; after the end it
            # is the reason (a failure message), which is not a phase.
            phase=message if status == ACTIVE else None,
            status_message=message,
            progress=parse_progress(item.get("Progress")),
            image_id=_text(item.get("ImageId")),
            description=_text(item.get("Description")),
            architecture=_text(item.get("Architecture")),
            platform=_text(item.get("Platform")),
            license_type=_text(item.get("LicenseType")),
            hypervisor=_text(item.get("Hypervisor")),
            boot_mode=_text(item.get("BootMode")),
            encrypted=_flag(item.get("Encrypted")),
            kms_key_id=_text(item.get("KmsKeyId")),
            usage_operation=_text(item.get("UsageOperation")),
            tags=_tags(item.get("Tags")),
            disks=disks,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for the state store and ``--json`` output."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImportTask:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        values["tags"] = tuple(tuple(pair) for pair in values.get("tags", ()))
        values["disks"] = tuple(
            SnapshotDisk(**disk) for disk in values.get("disks", ())
        )
        return cls(**values)


def parse_progress(value: object) -> float | None:
    """``Progress`` is a percentage string (``"28"``); return a 0..1 ratio.

    Anything that is not a finite number gives ``None`` rather than an
    exception, and out-of-range values are clamped.
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        percent = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    if not math.isfinite(percent):
        return None
    return min(max(percent, 0.0), 100.0) / 100.0


def _text(value: object) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value)
    return text if text else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _tags(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        return ()
    pairs = []
    for tag in value:
        if isinstance(tag, Mapping) and _text(tag.get("Key")) is not None:
            pairs.append((str(tag["Key"]), _text(tag.get("Value")) or ""))
    return tuple(pairs)
