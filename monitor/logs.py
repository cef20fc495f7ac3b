"""Logging: one structlog event per line, JSON for journald, readable on a TTY.

The stdlib ``logging`` of the libraries underneath (APScheduler, aiohttp,
botocore) is folded into the same stream and format at WARNING and above,
so a library's traceback is one JSON line too rather than raw text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("json", "console", "auto")

REDACTED = "[redacted]"

# Matched anywhere in a key, any case: `aws_session_token`, `Authorization`,
# `client_secret`. A pagination `next_token` is caught too, which costs only
# a less useful debug line.
_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|credential|authori[sz]ation|external_id"
    r"|private_key|api_key",
    re.IGNORECASE,
)

# Deep enough for a headers dict inside a request dict; deeper values are
# logged as they are.
_REDACT_DEPTH = 4

# Our handler on the root logger, kept so that configuring again replaces it
# rather than adding a second one that prints every line twice.
_handler: logging.Handler | None = None


def redact_secrets(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Replace the values of secret-looking keys, also in nested dicts."""
    redacted: EventDict = _redacted(event_dict, _REDACT_DEPTH)
    return redacted


def _redacted(value: Any, depth: int) -> Any:
    if depth <= 0:
        return value
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_KEY.search(key)
            else _redacted(item, depth - 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(item, depth - 1) for item in value]
    return value


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger; safe to call again.

    ``stream`` defaults to ``sys.stdout`` as it is at call time, so a test's
    captured stdout is honoured.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {list(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {list(FORMATS)}")
    out = sys.stdout if stream is None else stream

    terminal = _is_terminal(out)
    as_json = fmt == "json" or (fmt == "auto" and not terminal)
    renderer: list[Processor]
    if as_json:
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=terminal)]
    stamped: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]

    # Loggers are not cached, so a logger made before a reload (SIGHUP) picks
    # up the new level on its next call.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.processors.StackInfoRenderer(),
            redact_secrets,
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        context_class=dict,
        cache_logger_on_first_use=False,
    )

    _route_stdlib(out, max(LEVELS[level], logging.WARNING), stamped, renderer)


def _route_stdlib(
    out: TextIO, threshold: int, stamped: list[Processor], renderer: list[Processor]
) -> None:
    global _handler

    handler = _SharedLineHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                *renderer,
            ],
        )
    )

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(threshold)
    _handler = handler

    # Python's own warnings (deprecations, unclosed sockets) would otherwise
    # go to stderr in a format of their own.
    logging.captureWarnings(True)


class _SharedLineHandler(logging.Handler):
    """Writes through a structlog PrintLogger, sharing its per-stream lock.

    A line from a library thread and one of our events then never interleave
    mid-line on the shared stream.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._printer = structlog.PrintLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
