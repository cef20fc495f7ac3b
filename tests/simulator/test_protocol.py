"""The Query protocol layer: parameters in, XML out, checked against botocore."""

from __future__ import annotations

from typing import Any

import pytest
from botocore import parsers
from botocore.model import ListShape, OperationModel, Shape, StructureShape
from botocore.session import get_session

from monitor.simulator.protocol import (
    ApiError,
    boolean,
    credential_scope,
    decode_token,
    derived_account,
    element_name,
    encode_token,
    integer,
    members,
    render_error,
    render_result,
    scalars,
)

FULL_TASK: dict[str, Any] = {
    "ImportTaskId": "import-ami-0123456789abcdef0",
    "Architecture": "x86_64",
    "Description": "web-01 <prod> & more",
    "Encrypted": True,
    "Hypervisor": "xen",
    "ImageId": "ami-0123456789abcdef0",
    "KmsKeyId": "alias/imports",
    "LicenseType": "BYOL",
    "Platform": "Linux",
    "Progress": "28",
    "SnapshotDetails": [
        {
            "Description": "root",
            "DeviceName": "/dev/sda1",
            "DiskImageSize": 705638400.0,
            "Format": "VMDK",
            "Progress": "41",
            "SnapshotId": "snap-0123456789abcdef0",
            "Status": "active",
            "StatusMessage": "converting",
            "Url": "s3://bucket/disk.vmdk",
            "UserBucket": {"S3Bucket": "bucket", "S3Key": "disk.vmdk"},
        }
    ],
    "Status": "active",
    "StatusMessage": "converting",
    "Tags": [{"Key": "Name", "Value": "web-01"}],
    "LicenseSpecifications": [{"LicenseConfigurationArn": "arn:aws:lc:1"}],
    "UsageOperation": "RunInstances",
    "BootMode": "uefi",
}


def _operation(name: str) -> OperationModel:
    return get_session().get_service_model("ec2").operation_model(name)


def _parse(name: str, body: str, status: int = 200) -> dict[str, Any]:
    parser = parsers.create_parser("ec2")
    response = {"body": body.encode(), "headers": {}, "status_code": status}
    parsed: dict[str, Any] = parser.parse(response, _operation(name).output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


def _structures(shape: Shape, seen: set[str]) -> list[StructureShape]:
    if shape.name in seen:
        return []
    seen.add(shape.name)
    if isinstance(shape, ListShape):
        return _structures(shape.member, seen)
    if not isinstance(shape, StructureShape):
        return []
    found = [shape]
    for member in shape.members.values():
        found += _structures(member, seen)
    return found


@pytest.mark.parametrize(
    "operation",
    ["DescribeImportImageTasks", "ImportImage", "CancelImportTask"],
)
def test_element_names_are_botocores_location_names(operation: str) -> None:
    """Every response member renders under the locationName botocore expects."""
    output = _operation(operation).output_shape

    structures = _structures(output, set())

    assert structures
    for structure in structures:
        for key, member in structure.members.items():
            assert element_name(key) == member.serialization["name"], (
                f"{structure.name}.{key}"
            )
            if isinstance(member, ListShape):
                assert member.member.serialization.get("name") == "item"


def test_a_full_task_round_trips_through_botocores_parser() -> None:
    """Every ImportImageTask field comes back from botocore equal and typed."""
    result = {"ImportImageTasks": [FULL_TASK], "NextToken": "abc"}

    body = render_result("DescribeImportImageTasks", result, "req-1")
    parsed = _parse("DescribeImportImageTasks", body)

    assert parsed == result
    assert isinstance(parsed["ImportImageTasks"][0]["Encrypted"], bool)
    assert isinstance(
        parsed["ImportImageTasks"][0]["SnapshotDetails"][0]["DiskImageSize"], float
    )


def test_the_response_is_namespaced_and_carries_the_request_id() -> None:
    """The root is ``<ActionResponse xmlns=...>`` with a requestId first."""
    body = render_result("CancelImportTask", {"State": "deleting"}, "req-9")

    assert (
        '<CancelImportTaskResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        in body
    )
    assert "<requestId>req-9</requestId><state>deleting</state>" in body


def test_absent_values_render_no_element() -> None:
    """A None value is left out, so botocore reports the key as absent."""
    body = render_result(
        "DescribeImportImageTasks",
        {"ImportImageTasks": [], "NextToken": None},
        "req-2",
    )

    assert "nextToken" not in body
    assert _parse("DescribeImportImageTasks", body) == {"ImportImageTasks": []}


def test_errors_use_ec2s_document_and_status() -> None:
    """botocore reads Code and Message out of EC2's error document."""
    error = ApiError("RequestLimitExceeded", "Request limit exceeded.")

    body = render_error(error, "req-3")
    parsed = _parse("DescribeImportImageTasks", body, status=error.status)

    assert error.status == 503
    assert parsed["Error"] == {
        "Code": "RequestLimitExceeded",
        "Message": "Request limit exceeded.",
    }
    assert "<RequestID>req-3</RequestID>" in body


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InvalidParameterValue", 400),
        ("MissingParameter", 400),
        ("InvalidAction", 400),
        ("InvalidPaginationToken", 400),
        ("UnauthorizedOperation", 403),
        ("AuthFailure", 401),
        ("DryRunOperation", 412),
        ("InternalError", 500),
        ("RequestLimitExceeded", 503),
    ],
)
def test_each_error_code_has_ec2s_http_status(code: str, status: int) -> None:
    """The status codes are the ones EC2 sends with each error."""
    assert ApiError(code, "x").status == status


def test_flattened_lists_are_read_in_index_order() -> None:
    """``Filters.N.Value.M`` becomes entries ordered by N, then values by M."""
    params = {
        "Filters.2.Name": "task-state",
        "Filters.2.Value.2": "deleted",
        "Filters.2.Value.1": "completed",
        "Filters.10.Name": "task-state",
        "Filters.1.Name": "task-state",
        "Filters.1.Value.1": "active",
    }

    entries = members(params, "Filters")

    assert [scalars(entry, "Value") for entry in entries] == [
        ["active"],
        ["completed", "deleted"],
        [],
    ]


def test_a_list_index_that_is_not_a_positive_number_is_rejected() -> None:
    """``ImportTaskId.0`` or ``ImportTaskId.x`` is a bad parameter, not ignored."""
    with pytest.raises(ApiError) as raised:
        scalars({"ImportTaskId.0": "import-ami-01234567"}, "ImportTaskId")

    assert raised.value.code == "InvalidParameterValue"


def test_booleans_and_integers_are_validated() -> None:
    """Only true/false are booleans; integers must be in range."""
    assert boolean({"DryRun": "True"}, "DryRun") is True
    assert boolean({}, "DryRun") is None
    assert integer({"MaxResults": "1000"}, "MaxResults", 1, 1000) == 1000

    with pytest.raises(ApiError):
        boolean({"DryRun": "yes"}, "DryRun")
    with pytest.raises(ApiError):
        integer({"MaxResults": "1001"}, "MaxResults", 1, 1000)
    with pytest.raises(ApiError):
        integer({"MaxResults": "ten"}, "MaxResults", 1, 1000)


def test_tokens_round_trip_and_garbage_is_an_invalid_token() -> None:
    """A token decodes to its payload; anything else is InvalidPaginationToken."""
    payload = {"c": [1800000000.5, "import-ami-0123456789abcdef0"], "p": 3, "q": "x"}

    assert decode_token(encode_token(payload)) == payload
    # Not base64, base64 of something that is not JSON, JSON that is a list.
    for garbage in ("not a token!", "bm90IGpzb24", "WzFd"):
        with pytest.raises(ApiError) as raised:
            decode_token(garbage)
        assert raised.value.code == "InvalidPaginationToken"


def test_the_credential_scope_gives_access_key_and_region() -> None:
    """Region and key come from SigV4's ``Credential=KEY/DATE/REGION/ec2/...``."""
    header = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/ap-south-2/ec2/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )

    assert credential_scope(header) == ("AKIDEXAMPLE", "ap-south-2")
    assert credential_scope(None) is None
    assert credential_scope("Basic dXNlcjpwYXNz") is None


def test_derived_accounts_are_stable_twelve_digit_ids() -> None:
    """An unmapped key always maps to the same 12-digit account; keys differ."""
    first = derived_account("AKIDONE")

    assert first == derived_account("AKIDONE")
    assert len(first) == 12
    assert first.isdigit()
    assert first != derived_account("AKIDTWO")
