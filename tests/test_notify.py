"""The sd_notify client against Unix datagram sockets the tests own."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.notify import SystemdNotifier

#: How long a test waits for a datagram before it counts as lost.
RECEIVE_TIMEOUT = 2.0


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a file path, and that path."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(RECEIVE_TIMEOUT)
        yield server, path


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in the abstract namespace, and its '@' name."""
    name = f"ec2-import-monitor-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(RECEIVE_TIMEOUT)
        yield server, "@" + name


def receive(server: socket.socket) -> str:
    return server.recv(4096).decode()


def open_sockets() -> set[str]:
    """The sockets this process holds open, as their ``socket:[inode]`` links."""
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            # The descriptor listdir itself used is closed by now.
            continue
        if target.startswith("socket:"):
            links.add(target)
    return links


class TestMessages:
    def test_ready_arrives_on_a_path_socket(
        self, path_socket: tuple[socket.socket, str]
    ) -> None:
        """ready() sends exactly READY=1 to a socket named by its path."""
        server, path = path_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})

        notifier.ready()

        assert receive(server) == "READY=1"

    def test_ready_arrives_on_an_abstract_socket(
        self, abstract_socket: tuple[socket.socket, str]
    ) -> None:
        """A NOTIFY_SOCKET starting with '@' names the abstract namespace."""
        server, name = abstract_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": name})

        notifier.ready()

        assert receive(server) == "READY=1"

    def test_each_helper_sends_its_own_datagram(
        self, abstract_socket: tuple[socket.socket, str]
    ) -> None:
        """status, watchdog and stopping each arrive intact and in order."""
        server, name = abstract_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": name})

        notifier.status("polling 3 regions; 2 imports active")
        notifier.watchdog()
        notifier.stopping()

        assert receive(server) == "STATUS=polling 3 regions; 2 imports active"
        assert receive(server) == "WATCHDOG=1"
        assert receive(server) == "STOPPING=1"

    def test_fields_share_one_datagram(
        self, path_socket: tuple[socket.socket, str]
    ) -> None:
        """notify() joins its fields with newlines into a single message."""
        server, path = path_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})

        notifier.notify(READY=1, STATUS="started")

        assert receive(server) == "READY=1\nSTATUS=started"

    def test_a_newline_cannot_inject_an_assignment(
        self, path_socket: tuple[socket.socket, str]
    ) -> None:
        """A multi-line value is sent on one line, so it sets nothing else."""
        server, path = path_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})

        notifier.status("bad config\nREADY=1")

        assert receive(server) == "STATUS=bad config READY=1"

    def test_reloading_carries_the_monotonic_time(
        self, path_socket: tuple[socket.socket, str]
    ) -> None:
        """reloading() sends RELOADING=1 and the CLOCK_MONOTONIC time in usec."""
        server, path = path_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

        notifier.reloading()
        message = receive(server)

        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", message)
        assert match is not None, message
        assert before <= int(match.group(1)) <= after

    def test_the_socket_is_opened_once(
        self, path_socket: tuple[socket.socket, str]
    ) -> None:
        """The first message opens one socket; later messages reuse it."""
        server, path = path_socket
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
        before = open_sockets()

        notifier.watchdog()
        after_first = open_sockets()
        notifier.watchdog()
        notifier.watchdog()
        after_third = open_sockets()

        assert len(after_first - before) == 1
        assert after_third == after_first
        assert [receive(server) for _ in range(3)] == ["WATCHDOG=1"] * 3


class TestWithoutSystemd:
    def test_disabled_without_notify_socket(self) -> None:
        """With no NOTIFY_SOCKET the notifier is disabled."""
        notifier = SystemdNotifier({})

        assert notifier.enabled is False

    def test_enabled_with_notify_socket(self, tmp_path: Path) -> None:
        """A NOTIFY_SOCKET path enables it, even before anything is sent."""
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})

        assert notifier.enabled is True

    def test_calls_are_silent_no_ops(self) -> None:
        """Every call returns quietly and logs nothing when disabled."""
        notifier = SystemdNotifier({})

        with capture_logs() as logs:
            notifier.ready()
            notifier.status("x")
            notifier.reloading()
            notifier.watchdog()
            notifier.stopping()

        assert logs == []

    def test_reads_os_environ_by_default(
        self, monkeypatch: pytest.MonkeyPatch, path_socket: tuple[socket.socket, str]
    ) -> None:
        """Without a mapping it reads NOTIFY_SOCKET from the process environment."""
        server, path = path_socket
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notifier = SystemdNotifier()

        notifier.ready()

        assert receive(server) == "READY=1"


class TestVanishedSocket:
    def test_a_missing_socket_does_not_raise(self, tmp_path: Path) -> None:
        """Sending to a socket that is gone logs one warning and goes on."""
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})

        with capture_logs() as logs:
            notifier.ready()
            notifier.watchdog()
            notifier.stopping()

        assert [entry["event"] for entry in logs] == ["systemd_notify_failed"]
        assert logs[0]["log_level"] == "warning"

    def test_sending_resumes_when_the_socket_returns(self, tmp_path: Path) -> None:
        """A failed send does not disable later ones on the same notifier."""
        path = str(tmp_path / "notify")
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
        with capture_logs():
            notifier.watchdog()

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            server.settimeout(RECEIVE_TIMEOUT)
            notifier.ready()

            assert receive(server) == "READY=1"

    # A blocking send would hang here for good; fail instead of waiting.
    @pytest.mark.timeout(10)
    def test_a_full_socket_does_not_block(self, tmp_path: Path) -> None:
        """When nobody reads the socket, sends fail fast instead of waiting."""
        path = str(tmp_path / "notify")
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path})

        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server,
            capture_logs() as logs,
        ):
            server.bind(path)
            started = time.monotonic()
            # The receive queue of a Unix datagram socket holds a few hundred
            # messages at most (net.unix.max_dgram_qlen), so this fills it.
            for _ in range(5000):
                notifier.watchdog()
            elapsed = time.monotonic() - started

        assert elapsed < RECEIVE_TIMEOUT
        assert [entry["event"] for entry in logs] == ["systemd_notify_failed"]


class TestWatchdogInterval:
    def test_half_of_watchdog_usec_in_seconds(self) -> None:
        """WATCHDOG_USEC=60000000 (60 s) means a ping every 30 seconds."""
        notifier = SystemdNotifier({"WATCHDOG_USEC": "60000000"})

        assert notifier.watchdog_interval() == 30.0

    def test_sub_second_watchdog(self) -> None:
        """Microseconds are kept: 500 ms gives 0.25 s."""
        notifier = SystemdNotifier({"WATCHDOG_USEC": "500000"})

        assert notifier.watchdog_interval() == 0.25

    def test_matching_watchdog_pid(self) -> None:
        """A WATCHDOG_PID naming this process keeps the watchdog on."""
        notifier = SystemdNotifier(
            {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
        )

        assert notifier.watchdog_interval() == 10.0

    def test_other_watchdog_pid(self) -> None:
        """A WATCHDOG_PID naming another process means this one must not ping."""
        notifier = SystemdNotifier(
            {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
        )

        assert notifier.watchdog_interval() is None

    @pytest.mark.parametrize("value", [None, "", "soon", "0", "-5"])
    def test_no_usable_watchdog_usec(self, value: str | None) -> None:
        """Without a positive integer WATCHDOG_USEC there is no watchdog."""
        env = {} if value is None else {"WATCHDOG_USEC": value}
        notifier = SystemdNotifier(env)

        assert notifier.watchdog_interval() is None
