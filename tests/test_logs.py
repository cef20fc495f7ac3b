"""Logging set-up: JSON or console lines, levels, stdlib folding, redaction."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from monitor.logs import REDACTED, configure_logging


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stdout under a person's shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leaves structlog and the root logger as the test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    yield

    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestFormats:
    def test_json_lines_carry_timestamp_level_and_event(self) -> None:
        """Each event is one JSON object with UTC time, level, event and fields."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)

        structlog.get_logger().info("task_discovered", account="prod", progress=0.28)

        (line,) = json_lines(stream)
        assert line["event"] == "task_discovered"
        assert line["level"] == "info"
        assert (line["account"], line["progress"]) == ("prod", 0.28)
        stamp = datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)

    def test_auto_is_json_off_a_terminal(self) -> None:
        """With format auto, a stream that is not a TTY (journald) gets JSON."""
        stream = io.StringIO()
        configure_logging("info", "auto", stream)

        structlog.get_logger().info("poll_recovered", region="eu-west-1")

        assert json_lines(stream)[0]["event"] == "poll_recovered"

    def test_auto_is_console_on_a_terminal(self) -> None:
        """With format auto, a terminal gets the coloured console renderer."""
        stream = Terminal()
        configure_logging("info", "auto", stream)

        structlog.get_logger().info("poll_recovered", region="eu-west-1")

        output = stream.getvalue()
        assert "poll_recovered" in output
        assert "\x1b[" in output
        with pytest.raises(json.JSONDecodeError):
            json.loads(output)

    def test_console_format_is_plain_off_a_terminal(self) -> None:
        """Format console, piped, is readable key=value text without colours."""
        stream = io.StringIO()
        configure_logging("info", "console", stream)

        structlog.get_logger().warning(
            "poll_failed", account="prod", region="us-east-1"
        )

        output = stream.getvalue()
        assert "poll_failed" in output
        assert "account=prod" in output
        assert "\x1b[" not in output

    def test_exceptions_stay_on_one_json_line(self) -> None:
        """A logged exception is a field of its event, not loose traceback lines."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)

        try:
            raise RuntimeError("poll crashed")
        except RuntimeError:
            structlog.get_logger().exception("daemon_crashed")

        (line,) = json_lines(stream)
        assert line["level"] == "error"
        assert "RuntimeError: poll crashed" in line["exception"]

    @pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
    def test_unknown_level_or_format_is_refused(self, level: str, fmt: str) -> None:
        """Only the levels and formats the config accepts are accepted here."""
        with pytest.raises(ValueError, match="unknown log"):
            configure_logging(level, fmt, io.StringIO())


class TestLevels:
    def test_events_below_the_level_are_dropped(self) -> None:
        """At info, debug events produce no output."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)
        log = structlog.get_logger()

        log.debug("poll_started")
        log.info("task_progressed")

        assert [line["event"] for line in json_lines(stream)] == ["task_progressed"]

    def test_reconfiguring_changes_the_level_of_existing_loggers(self) -> None:
        """A logger made before a reload (SIGHUP) follows the new level."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)
        log = structlog.get_logger("monitor.daemon")
        log.debug("before_reload")

        configure_logging("debug", "json", stream)
        log.debug("after_reload")

        assert [line["event"] for line in json_lines(stream)] == ["after_reload"]

    def test_reconfiguring_moves_output_to_the_new_stream(self) -> None:
        """After configuring again, nothing more goes to the old stream."""
        old, new = io.StringIO(), io.StringIO()
        configure_logging("info", "json", old)

        configure_logging("info", "json", new)
        structlog.get_logger().info("task_completed")
        logging.getLogger("botocore").warning("retrying")

        assert old.getvalue() == ""
        assert [line["event"] for line in json_lines(new)] == [
            "task_completed",
            "retrying",
        ]


class TestLibraryLogs:
    def test_warnings_are_folded_into_the_same_format(self) -> None:
        """A library's stdlib warning is a JSON line naming its logger."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)

        logging.getLogger("botocore.retries").warning("throttled %d times", 3)

        (line,) = json_lines(stream)
        assert line["event"] == "throttled 3 times"
        assert (line["logger"], line["level"]) == ("botocore.retries", "warning")
        assert "timestamp" in line

    def test_library_info_is_dropped_even_at_debug(self) -> None:
        """Libraries speak from WARNING up, whatever our own level is."""
        stream = io.StringIO()
        configure_logging("debug", "json", stream)

        logging.getLogger("apscheduler.executors.default").info("Running job")
        logging.getLogger("aiohttp.access").info("GET /metrics 200")

        assert stream.getvalue() == ""

    def test_library_warnings_follow_a_stricter_level(self) -> None:
        """At level error, a library's warning is dropped too."""
        stream = io.StringIO()
        configure_logging("error", "json", stream)

        logging.getLogger("aiohttp.server").warning("slow client")
        logging.getLogger("aiohttp.server").error("handler failed")

        assert [line["event"] for line in json_lines(stream)] == ["handler failed"]

    def test_library_tracebacks_are_one_json_line(self) -> None:
        """A stdlib logger.exception arrives as one line with the traceback in it."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)

        try:
            raise ValueError("job exploded")
        except ValueError:
            logging.getLogger("apscheduler.executors.default").exception("Job failed")

        (line,) = json_lines(stream)
        assert line["event"] == "Job failed"
        assert "ValueError: job exploded" in line["exception"]

    def test_configuring_twice_does_not_duplicate_lines(self) -> None:
        """Calling configure again replaces its stdlib handler, not adds one."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)
        configure_logging("info", "json", stream)

        logging.getLogger("aiohttp").warning("once")

        assert len(json_lines(stream)) == 1

    def test_python_warnings_are_logged(self) -> None:
        """warnings.warn output is a log line too, not raw stderr text."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("old API", DeprecationWarning, stacklevel=1)

        (line,) = json_lines(stream)
        assert line["logger"] == "py.warnings"
        assert "old API" in line["event"]


class TestRedaction:
    def test_secret_looking_keys_are_redacted(self) -> None:
        """Values of keys that name secrets never reach the output."""
        stream = io.StringIO()
        configure_logging("debug", "json", stream)

        structlog.get_logger().debug(
            "session_created",
            account="prod",
            aws_secret_access_key="s3cr3t-key",
            aws_session_token="tok-123",
            password="hunter2",
            Credentials={"AccessKeyId": "AKIAEXAMPLE", "SessionToken": "tok-456"},
            headers={"Authorization": "AWS4-HMAC-SHA256 sig", "Host": "ec2"},
            external_id="ext-789",
        )

        output = stream.getvalue()
        for secret in ("s3cr3t-key", "tok-123", "hunter2", "tok-456", "sig", "ext-789"):
            assert secret not in output
        (line,) = json_lines(stream)
        assert line["password"] == REDACTED
        assert line["headers"] == {"Authorization": REDACTED, "Host": "ec2"}
        assert line["account"] == "prod"

    def test_nested_values_in_lists_are_redacted(self) -> None:
        """Secrets inside lists of dicts are found too."""
        stream = io.StringIO()
        configure_logging("info", "console", stream)

        structlog.get_logger().info("targets_loaded", targets=[{"token": "abc123"}])

        assert "abc123" not in stream.getvalue()
        assert REDACTED in stream.getvalue()

    def test_context_variables_are_redacted(self) -> None:
        """Fields bound for a whole poll cycle are redacted like direct ones."""
        stream = io.StringIO()
        configure_logging("info", "json", stream)
        structlog.contextvars.bind_contextvars(session_token="ctx-secret")

        try:
            structlog.get_logger().info("bound")
        finally:
            structlog.contextvars.clear_contextvars()

        assert "ctx-secret" not in stream.getvalue()
