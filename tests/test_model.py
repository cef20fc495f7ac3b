"""Parsing API entries: faithful for real responses, never crashing on odd ones."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.model import ImportTask, parse_progress

#: Shaped like a real active entry, disk sizes in bytes as real responses are.
REAL_ENTRY: dict[str, Any] = {
    "ImportTaskId": "import-ami-0a1b2c3d4e5f60718",
    "Architecture": "x86_64",
    "Description": "web01 migration",
    "Encrypted": False,
    "LicenseType": "BYOL",
    "Platform": "Linux",
    "Progress": "28",
    "Status": "active",
    "StatusMessage": "converting",
    "BootMode": "legacy-bios",
    "Tags": [{"Key": "team", "Value": "ops"}],
    "SnapshotDetails": [
        {
            "DiskImageSize": 705638400.0,
            "Format": "VMDK",
            "Status": "active",
            "Progress": "40",
            "UserBucket": {"S3Bucket": "vm-images", "S3Key": "web01-disk1.vmdk"},
        }
    ],
}


class TestRealEntries:
    def test_an_active_entry_maps_every_field(self) -> None:
        task = ImportTask.from_api(REAL_ENTRY)

        assert task is not None
        assert task.status == "active"
        assert task.phase == "converting"
        assert task.progress == pytest.approx(0.28)
        assert task.tags == (("team", "ops"),)
        (disk,) = task.disks
        assert disk.device == "disk0"
        assert disk.size_bytes == 705638400.0
        assert disk.progress == pytest.approx(0.40)
        assert (disk.s3_bucket, disk.s3_key) == ("vm-images", "web01-disk1.vmdk")

    def test_after_the_end_the_status_message_is_a_reason_not_a_phase(self) -> None:
        entry = {
            "ImportTaskId": "import-ami-1",
            "Status": "deleted",
            "StatusMessage": "ClientError: Unsupported kernel version 2.6.32",
        }

        task = ImportTask.from_api(entry)

        assert task is not None
        assert task.phase is None
        assert task.failed
        assert task.status_message == entry["StatusMessage"]

    def test_an_unknown_status_is_kept_as_unknown(self) -> None:
        task = ImportTask.from_api({"ImportTaskId": "import-ami-1", "Status": "paused"})

        assert task is not None
        assert task.status == "unknown"
        assert not task.ended

    def test_to_dict_and_back_is_the_same_task(self) -> None:
        task = ImportTask.from_api(REAL_ENTRY)
        assert task is not None

        assert ImportTask.from_dict(task.to_dict()) == task


class TestProgress:
    @pytest.mark.parametrize(
        ("raw", "ratio"),
        [("28", 0.28), ("0", 0.0), ("100", 1.0), (" 7 ", 0.07), ("150", 1.0)],
    )
    def test_percent_strings_become_ratios(self, raw: str, ratio: float) -> None:
        assert parse_progress(raw) == pytest.approx(ratio)

    @pytest.mark.parametrize("raw", [None, "", "n/a", "nan", "inf", True, [], {}])
    def test_anything_else_is_unknown(self, raw: object) -> None:
        assert parse_progress(raw) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["ImportTaskId", "Status", "StatusMessage", "Progress", "SnapshotDetails", "Tags"]
)


@given(st.dictionaries(FIELDS | st.text(max_size=5), JSON, max_size=8))
def test_arbitrary_entries_never_crash_the_parser(entry: dict[str, Any]) -> None:
    """No API input may raise: it parses, or gives None without an ID."""
    task = ImportTask.from_api(entry)

    if task is not None:
        assert task.task_id
        assert task.progress is None or 0.0 <= task.progress <= 1.0
