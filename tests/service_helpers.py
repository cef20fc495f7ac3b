"""Run the daemon as users do, as a subprocess, and watch what it says.

The daemon is started with ``python -m monitor run --config PATH`` against a
simulator served by the test's own event loop. Its stdout is read line by
line in the background, each JSON line kept as one event; systemd's notify
socket is stood in for by a datagram socket the test owns.

Nothing here waits without a bound the caller can see: the waits take no
timeout of their own and are meant to sit under ``asyncio.timeout``. When a
test fails inside :func:`run_daemon`, the daemon's last events and its
stderr are attached to the failure as a note.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from monitor.simulator import Endpoint, Simulator
from tests.conftest import free_port
from tests.e2e import ACCESS_KEY

REPOSITORY = Path(__file__).resolve().parent.parent

#: The ``account`` label of the one target the tests configure.
ACCOUNT = "e2e"

#: The bound on a wait for something the daemon does within seconds.
WAIT = 20.0

#: How long one HTTP request to the daemon may take.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)

#: An event as the daemon logs it: one parsed JSON line.
LogEvent = dict[str, Any]

#: A metric sample keyed by its name and its sorted (label, value) pairs.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]

#: What ``systemctl status`` shows: Monitor.describe().
STATUS_LINE = re.compile(
    r"tracking (?P<tasks>\d+) active task\(s\) in (?P<regions>\d+) region\(s\)"
)

T = TypeVar("T")


class Feed(Generic[T]):
    """Items that arrive in the background, and a wait for a given one."""

    def __init__(self, describe: Callable[[T], str] = repr) -> None:
        self.items: list[T] = []
        self.ended = False
        self._describe = describe
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    def end(self) -> None:
        """No more items will come: a wait for one fails at once."""
        self.ended = True
        self._changed.set()

    async def wait_for(
        self, match: Callable[[T], bool], what: str, start: int = 0
    ) -> T:
        """The first item from index ``start`` on that matches, once it is here."""
        index = start
        while True:
            while index < len(self.items):
                if match(self.items[index]):
                    return self.items[index]
                index += 1
            if self.ended:
                raise AssertionError(f"the stream ended without {what}")
            self._changed.clear()
            await self._changed.wait()

    def recent(self, count: int = 30) -> str:
        """The last items, one a line, for failure notes."""
        return "\n".join(self._describe(item) for item in self.items[-count:])


def daemon_environment() -> dict[str, str]:
    """The daemon's environment: dummy credentials and nothing of this host's.

    AWS_ENDPOINT_URL_EC2 names a closed loopback port, so that a config that
    lost its endpoint_url (a reload gone wrong) fails its polls here instead
    of reaching out to a real AWS endpoint.
    """
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "EC2_IMPORT_MONITOR_", "WATCHDOG_"))
        and name != "NOTIFY_SOCKET"
    }
    return {
        **inherited,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": "service-test-secret",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_EC2": f"http://127.0.0.1:{free_port()}",
        "PYTHONUNBUFFERED": "1",
    }


def toml_value(value: object) -> str:
    """A Python value written as TOML: text, numbers, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # Every escape json.dumps writes is also a TOML basic-string escape.
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        pairs = (
            f"{toml_value(key)} = {toml_value(item)}" for key, item in value.items()
        )
        return "{ " + ", ".join(pairs) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_config(
    endpoint: str,
    port: int,
    state: Path,
    *,
    regions: Sequence[str] = ("us-east-1",),
    level: str = "info",
    poll: Mapping[str, object] | None = None,
    stall: Mapping[str, object] | None = None,
) -> str:
    """A config file watching the simulator at ``endpoint``, JSON logs on."""
    sections: dict[str, Mapping[str, object]] = {
        "poll": {"interval": "2s", "max_attempts": 2, **(poll or {})},
        "stall": dict(stall or {}),
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "state": {"path": state},
        "log": {"level": level, "format": "json"},
    }
    lines = [
        "[[targets]]",
        f"name = {toml_value(ACCOUNT)}",
        f"regions = {toml_value(list(regions))}",
        f"endpoint_url = {toml_value(endpoint)}",
    ]
    for name, keys in sections.items():
        if keys:
            lines.append(f"\n[{name}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


def _show_event(event: LogEvent) -> str:
    return json.dumps(event, default=str)[:400]


def _matches(event: LogEvent, name: str, fields: Mapping[str, object]) -> bool:
    return event.get("event") == name and all(
        event.get(key) == value for key, value in fields.items()
    )


@dataclass
class DaemonProcess:
    """A running ``monitor run``: its events, its HTTP port, its exit."""

    process: asyncio.subprocess.Process
    port: int
    events: Feed[LogEvent] = field(default_factory=lambda: Feed(_show_event))
    #: stdout lines that are not JSON objects; a json-format daemon has none.
    other_lines: list[str] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mark(self) -> int:
        """The position of the next event, to wait for events after now."""
        return len(self.events.items)

    async def wait_event(self, name: str, start: int = 0, **fields: object) -> LogEvent:
        """The first event ``name`` with these field values, from ``start`` on."""
        what = f"a {name} event" + (f" with {fields}" if fields else "")
        return await self.events.wait_for(
            lambda event: _matches(event, name, fields), what, start
        )

    async def wait_any(self, names: Sequence[str], start: int = 0) -> LogEvent:
        """The first event named one of ``names``, from ``start`` on."""
        return await self.events.wait_for(
            lambda event: event.get("event") in names, f"any of {names}", start
        )

    def named(self, name: str, start: int = 0, **fields: object) -> list[LogEvent]:
        """Every event ``name`` with these field values, so far."""
        return [
            event
            for event in self.events.items[start:]
            if _matches(event, name, fields)
        ]

    def names(self) -> list[str]:
        return [str(event.get("event")) for event in self.events.items]

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self) -> int:
        """The exit code, once the process has ended and its output is read."""
        code = await self.process.wait()
        # The pipes reach end of file with the process; let the readers finish.
        await asyncio.gather(*self.readers, return_exceptions=True)
        return code

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds the daemon took to exit."""
        started = time.monotonic()
        self.send(signal.SIGTERM)
        code = await self.wait_exit()
        return code, time.monotonic() - started

    def stderr_lines(self) -> list[str]:
        return self.stderr.decode(errors="replace").splitlines()

    def report(self) -> str:
        """The last events and stderr, for a failing test's output."""
        stderr = self.stderr.decode(errors="replace")[-3000:]
        return (
            f"daemon exit code: {self.process.returncode}\n"
            f"last events:\n{self.events.recent()}\n"
            f"other stdout lines: {self.other_lines[-10:]}\n"
            f"stderr:\n{stderr}"
        )


async def _read_stdout(daemon: DaemonProcess, stream: asyncio.StreamReader) -> None:
    try:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict):
                daemon.events.add(event)
            else:
                daemon.other_lines.append(line)
    finally:
        daemon.events.end()


async def _read_stderr(daemon: DaemonProcess, stream: asyncio.StreamReader) -> None:
    while chunk := await stream.read(65536):
        daemon.stderr.extend(chunk)


@asynccontextmanager
async def run_daemon(
    config: Path, port: int, env: Mapping[str, str]
) -> AsyncIterator[DaemonProcess]:
    """``python -m monitor run --config CONFIG``, killed at the end if still up."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "run",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=REPOSITORY,
        # A line with a traceback in it can be long; past the default 64 KiB
        # the reader would stop with an error.
        limit=2**20,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    daemon = DaemonProcess(process, port)
    daemon.readers = [
        asyncio.create_task(_read_stdout(daemon, process.stdout)),
        asyncio.create_task(_read_stderr(daemon, process.stderr)),
    ]

    try:
        yield daemon
    except BaseException as error:
        error.add_note(daemon.report())
        raise
    finally:
        if process.returncode is None:
            process.kill()
            with suppress(TimeoutError):
                async with asyncio.timeout(WAIT):
                    await process.wait()
        for reader in daemon.readers:
            reader.cancel()
        await asyncio.gather(*daemon.readers, return_exceptions=True)


@dataclass
class Service:
    """One daemon's surroundings: its simulator, files, port and environment."""

    sim: Simulator
    endpoint: Endpoint
    directory: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=daemon_environment)

    @property
    def config(self) -> Path:
        return self.directory / "config.toml"

    @property
    def account_id(self) -> str:
        """The simulator's account for the dummy access key."""
        return self.sim.account_for(ACCESS_KEY)

    def configure(self, **options: Any) -> Path:
        """(Re)write the config file; options as for :func:`render_config`."""
        text = render_config(
            self.endpoint.url, self.port, self.directory / "state.db", **options
        )
        self.config.write_text(text)
        return self.config

    def run(self) -> AbstractAsyncContextManager[DaemonProcess]:
        return run_daemon(self.config, self.port, self.env)


async def fetch(url: str) -> tuple[int, str, str]:
    """GET ``url``: the status, the content type and the body."""
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.get(url) as response,
    ):
        return response.status, response.content_type, await response.text()


def samples(exposition: str) -> dict[SampleKey, float]:
    """Every sample of a text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def scrape(daemon: DaemonProcess) -> dict[SampleKey, float]:
    """The daemon's /metrics, parsed."""
    status, _, body = await fetch(daemon.url + "/metrics")
    assert status == 200, body
    return samples(body)


def region_labels(region: str) -> tuple[tuple[str, str], ...]:
    return (("account", ACCOUNT), ("region", region))


def task_labels(region: str, task_id: str) -> tuple[tuple[str, str], ...]:
    return (("account", ACCOUNT), ("region", region), ("task_id", task_id))


async def poll_until(check: Callable[[], Awaitable[T | None]], every: float) -> T:
    """Call ``check`` every ``every`` seconds until it returns something.

    For state that announces nothing when it changes (an HTTP endpoint);
    the caller bounds the whole wait with ``asyncio.timeout``.
    """
    while True:
        result = await check()
        if result is not None:
            return result
        await asyncio.sleep(every)


# systemd's notify socket


@dataclass(frozen=True)
class Notification:
    """One sd_notify datagram: when it arrived, and its KEY=value fields."""

    at: float
    fields: dict[str, str]

    @classmethod
    def parse(cls, payload: bytes, at: float) -> Notification:
        pairs = (line.partition("=") for line in payload.decode().splitlines())
        return cls(at, {key: value for key, _, value in pairs})

    def has(self, key: str, value: str | None = None) -> bool:
        return key in self.fields and (value is None or self.fields[key] == value)


class NotifySocket:
    """Stands in for systemd: a datagram socket that records what it is sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: Feed[Notification] = Feed(lambda n: repr(n.fields))
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    def environment(self, watchdog_usec: int | None = None) -> dict[str, str]:
        """What systemd would set for a Type=notify service (WatchdogSec=)."""
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    @property
    def mark(self) -> int:
        return len(self.received.items)

    def having(
        self, key: str, value: str | None = None, start: int = 0
    ) -> list[Notification]:
        return [n for n in self.received.items[start:] if n.has(key, value)]

    async def wait_for(
        self, key: str, value: str | None = None, start: int = 0
    ) -> Notification:
        what = f"a {key}={value if value is not None else '...'} notification"
        return await self.received.wait_for(lambda n: n.has(key, value), what, start)

    async def receive(self) -> None:
        """Record datagrams until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            payload = await loop.sock_recv(self._socket, 4096)
            self.received.add(Notification.parse(payload, time.monotonic()))

    def close(self) -> None:
        self._socket.close()


@asynccontextmanager
async def notify_socket(path: Path) -> AsyncIterator[NotifySocket]:
    """A :class:`NotifySocket` at ``path``, receiving until the block ends."""
    listener = NotifySocket(path)
    receiver = asyncio.create_task(listener.receive())
    try:
        yield listener
    except BaseException as error:
        error.add_note("notifications:\n" + listener.received.recent())
        raise
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        listener.close()
