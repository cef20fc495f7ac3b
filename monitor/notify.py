"""Tell systemd how the daemon is doing: the sd_notify protocol, written out.

The protocol is small: newline-separated ``KEY=value`` assignments sent as one
datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an
abstract name when it starts with ``@``). Without that variable the daemon was
not started by systemd as ``Type=notify``, and every call here does nothing.

A notification is never worth crashing or stalling the daemon for: the socket
is non-blocking, and a send that fails is logged once and then dropped.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends state changes and watchdog pings to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._socket_name = env.get("NOTIFY_SOCKET", "")
        self._address = _address(self._socket_name)
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._socket: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is set, so that messages go somewhere."""
        return self._address is not None

    def notify(self, **fields: object) -> None:
        """Send ``KEY=value`` lines, in the order given, as one datagram."""
        if self._address is None or not fields:
            return

        # A newline inside a value would start a new assignment, so a STATUS
        # text could otherwise smuggle in READY=1 or STOPPING=1.
        payload = "\n".join(
            f"{key}={_one_line(value)}" for key, value in fields.items()
        )

        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            # sendto, not connect: the path is resolved on every send, so a
            # socket that systemd re-creates (daemon-reexec) is found again.
            self._socket.sendto(payload.encode(), self._address)
        except OSError as error:
            self._warn(error)

    def ready(self) -> None:
        """Start-up (or a reload) has finished: the service is running."""
        self.notify(READY=1)

    def status(self, text: str) -> None:
        """A one-line status that ``systemctl status`` shows."""
        self.notify(STATUS=text)

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.notify(STOPPING=1)

    def reloading(self) -> None:
        """A reload has begun; call :meth:`ready` when it is done.

        systemd 253 and later want the time of the request alongside, to tell
        this reload from an earlier one; older versions ignore the field.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec)

    def watchdog(self) -> None:
        """The event loop is alive: reset the service watchdog."""
        self.notify(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or ``None`` when none are expected.

        That is half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3)
        recommends, and only when ``WATCHDOG_PID`` is unset or names this
        process: a child that inherited the variables must not ping.
        """
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != str(os.getpid()):
            return None

        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None

        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket; a later notification opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _warn(self, error: OSError) -> None:
        # Once only: with the watchdog pinging every few seconds, a socket
        # that is gone for good would otherwise flood the journal.
        if self._warned:
            return
        self._warned = True
        log.warning(
            "systemd_notify_failed",
            socket=self._socket_name,
            error=str(error),
            errno=error.errno,
        )


def _address(name: str) -> str | None:
    """The socket address for ``$NOTIFY_SOCKET``, or ``None`` to stay silent.

    Only paths and abstract names are understood; the ``vsock:`` form of
    systemd 254 and later (for virtual machines) is treated as unset, so
    under it the daemon runs without notifications.
    """
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None


def _one_line(value: object) -> str:
    return " ".join(str(value).splitlines())
