"""The EC2 Query protocol: form parameters in, namespaced XML out.

Requests are ``Action=...&Version=2016-11-15`` with lists flattened as
``Name.N`` and structures as ``Name.N.Member`` (``Filters.1.Value.2``).
Responses are ``<ActionResponse xmlns=...>`` documents whose element names
are botocore's ``locationName`` for each member: the CamelCase key with a
lower-case first letter, except the three lists EC2 calls ``...Set``, and
``item`` for every list entry. Errors are EC2's
``<Response><Errors><Error>`` document with the HTTP status EC2 uses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
VERSION = "2016-11-15"

#: HTTP status of each error code the simulator returns.
ERROR_STATUS = {
    "AuthFailure": 401,
    "DryRunOperation": 412,
    "IncorrectState": 400,
    "InternalError": 500,
    "InvalidAction": 400,
    "InvalidConversionTaskId": 400,
    "InvalidPaginationToken": 400,
    "InvalidParameterValue": 400,
    "MissingParameter": 400,
    "RequestLimitExceeded": 503,
    "UnauthorizedOperation": 403,
}

#: List members whose element is not simply the lower-camel-case key.
_SET_NAMES = {
    "Regions": "regionInfo",
    "Endpoint": "regionEndpoint",
    "ImportImageTasks": "importImageTaskSet",
    "SnapshotDetails": "snapshotDetailSet",
    "Tags": "tagSet",
}

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/ec2/aws4_request")


class ApiError(Exception):
    """An EC2 error response: a code, a message and the code's HTTP status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = ERROR_STATUS.get(code, 400)


def credential_scope(authorization: str | None) -> tuple[str, str] | None:
    """The access key ID and region of a SigV4 ``Authorization`` header."""
    if not authorization:
        return None
    match = _CREDENTIAL.search(authorization)
    return (match.group(1), match.group(2)) if match else None


def derived_account(access_key: str) -> str:
    """A stable 12-digit account ID for an access key nobody mapped."""
    digest = hashlib.sha256(access_key.encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**12:012d}"


# Reading parameters


def members(params: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
    """The entries of a flattened list ``prefix.N.*``, ordered by N.

    Each entry maps the rest of the key (``Name``, ``Value.1``) to its value;
    a scalar list (``ImportTaskId.N``) gives entries keyed by ``""``.
    """
    found: dict[int, dict[str, str]] = {}
    head = prefix + "."
    for key, value in params.items():
        if not key.startswith(head):
            continue
        index, _, rest = key[len(head) :].partition(".")
        if not index.isdigit() or int(index) < 1:
            raise ApiError("InvalidParameterValue", f"Invalid list index in {key}")
        found.setdefault(int(index), {})[rest] = value
    return [found[index] for index in sorted(found)]


def scalars(params: Mapping[str, str], prefix: str) -> list[str]:
    """A flattened list of strings, ``prefix.1``, ``prefix.2``, ..."""
    return [entry[""] for entry in members(params, prefix) if "" in entry]


def boolean(params: Mapping[str, str], name: str) -> bool | None:
    value = params.get(name)
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise ApiError(
            "InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid."
        )
    return value.lower() == "true"


def integer(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter {name} is invalid. "
            f"Expecting a value between {low} and {high}.",
        )
    return number


# Pagination tokens


def encode_token(payload: Mapping[str, Any]) -> str:
    """An opaque token: the payload, JSON-encoded, then base64."""
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    """The payload of a token; ``InvalidPaginationToken`` if it is not ours."""
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeError) as error:
        raise invalid_token(token) from error
    if not isinstance(payload, dict):
        raise invalid_token(token)
    return payload


def invalid_token(token: str) -> ApiError:
    return ApiError("InvalidPaginationToken", f"Invalid pagination token: {token}")


# Writing responses


def element_name(key: str) -> str:
    """botocore's ``locationName`` of a response member."""
    return _SET_NAMES.get(key) or key[:1].lower() + key[1:]


def render_result(action: str, result: Mapping[str, Any], request_id: str) -> str:
    """The XML document of a successful ``action``."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<{action}Response xmlns="{NAMESPACE}">',
        f"<requestId>{request_id}</requestId>",
    ]
    _render_members(result, parts)
    parts.append(f"</{action}Response>")
    return "".join(parts)


def render_error(error: ApiError, request_id: str) -> str:
    """EC2's error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response><Errors><Error>"
        f"<Code>{escape(error.code)}</Code>"
        f"<Message>{escape(error.message)}</Message>"
        "</Error></Errors>"
        f"<RequestID>{request_id}</RequestID></Response>"
    )


def _render_members(values: Mapping[str, Any], parts: list[str]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        name = element_name(key)
        parts.append(f"<{name}>")
        if isinstance(value, list):
            for item in value:
                parts.append("<item>")
                _render_value(item, parts)
                parts.append("</item>")
        else:
            _render_value(value, parts)
        parts.append(f"</{name}>")


def _render_value(value: object, parts: list[str]) -> None:
    if isinstance(value, Mapping):
        _render_members(value, parts)
    elif isinstance(value, bool):
        parts.append("true" if value else "false")
    elif isinstance(value, float):
        parts.append(repr(value))
    else:
        parts.append(escape(str(value)))
