"""Shared fixtures: real peers (promtool, the AWS CLI) found or demanded."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def free_port() -> int:
    """A loopback TCP port that was free a moment ago.

    Another process could take it before the test binds it; the test then
    fails with a bind error rather than passing wrongly.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_tool(name: str, path: str | None = None) -> str:
    """The path of a real tool the test needs.

    Locally a missing tool skips the test; under CI (``CI=true``) it fails
    it, because the test set-up is supposed to have installed the tool and a
    skip there would hide a missing install step.
    """
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (make tools installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def promtool() -> str:
    return require_tool("promtool")
