"""The monitor under faults: one region breaks for a while, then recovers.

Each case runs the in-process Monitor against the simulator over real HTTP
on a manual clock, with hand-written tasks in two regions. A fault is turned
on for one region for two polls and then off again, while tasks in that
region move on behind it. What must hold (DESIGN.md, "Correctness that must
hold", rule 1): the other region carries on as if nothing happened, the
failing region reports no task changes while it cannot be seen, says so once
and says when it is back, and then catches up on what it missed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Settings
from monitor.daemon import Monitor
from monitor.ec2 import MAX_ERROR_CHARS
from monitor.events import Event
from monitor.model import ImportTask
from monitor.simulator import (
    DiskSpec,
    Simulator,
    TaskSpec,
    TimelineBuilder,
    serve,
)
from monitor.tracker import RegionKey, TaskKey, TrackedTask
from tests.e2e import T0, Run, monitor_run, use_test_credentials

FAILING = "eu-west-1"
HEALTHY = "us-east-1"

#: Small timeouts so a read timeout costs a second; two pages or more per
#: listing, so paging faults have a page 2 to break.
MAX_ATTEMPTS = 2
POLL: dict[str, Any] = {
    "page_size": 2,
    "read_timeout": "1s",
    "connect_timeout": "1s",
    "max_attempts": MAX_ATTEMPTS,
}

#: Polls before, during (two) and after the fault, at these clock offsets.
BEFORE, DURING, RECOVERY, AFTER = 0.0, (300.0, 600.0), 900.0, 1200.0

GIB = 2.0**30
DISKS = (DiskSpec(size_bytes=10 * GIB),)

# In the failing region: one task completes, one fails and one progresses
# while the region cannot be seen; the rest only fill pages.
DONE_ID = "import-ami-0d0000000000000d1"
FAIL_ID = "import-ami-0f0000000000000f2"
MOVING_ID = "import-ami-0e0000000000000e3"
STEADY_IDS = tuple(f"import-ami-05{n:015x}" for n in range(3))
DONE_IMAGE = "ami-0d0d0d0d0d0d0d0d0"
FAILURE = "ClientError: Unsupported kernel version 2.6.32"

# In the healthy region: one task completes and one progresses during the
# other region's outage.
HEALTHY_DONE_ID = "import-ami-0a00000000000000a"
HEALTHY_MOVING_ID = "import-ami-0b00000000000000b"

#: Events that end a task; none may come from a region that cannot be seen.
TERMINAL = frozenset({"task_completed", "task_failed", "task_vanished"})

#: Every event the healthy region produces in the episode, by poll offset.
HEALTHY_EVENTS: dict[float, set[tuple[str, str | None]]] = {
    BEFORE: {
        ("task_discovered", HEALTHY_DONE_ID),
        ("task_discovered", HEALTHY_MOVING_ID),
    },
    DURING[0]: {
        ("task_progressed", HEALTHY_MOVING_ID),
        ("snapshot_progressed", HEALTHY_MOVING_ID),
    },
    DURING[1]: {
        ("task_status_changed", HEALTHY_DONE_ID),
        ("task_completed", HEALTHY_DONE_ID),
    },
    RECOVERY: set(),
    AFTER: set(),
}


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_credentials(monkeypatch)


@dataclass
class Poll:
    """One cycle of the episode, as the outside world saw it."""

    offset: float
    events: list[Event]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    failing_tasks: dict[TaskKey, TrackedTask]

    def of(self, account: str, region: str) -> list[Event]:
        return [e for e in self.events if (e.account, e.region) == (account, region)]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))


@dataclass
class Episode:
    """The five polls of a fault episode, and the failing region's account."""

    account: str
    polls: list[Poll] = field(default_factory=list)

    @property
    def before(self) -> Poll:
        return self.polls[0]

    @property
    def during(self) -> list[Poll]:
        return self.polls[1:3]

    @property
    def recovery(self) -> Poll:
        return self.polls[3]

    def failing_events(self) -> list[Event]:
        return [e for p in self.polls for e in p.of(self.account, FAILING)]

    def requests(self, poll: Poll, outcome: str) -> float:
        value = poll.sample(
            "ec2_import_api_requests_total",
            account=self.account,
            region=FAILING,
            operation="DescribeImportImageTasks",
            outcome=outcome,
        )
        assert value is not None, f"no api_requests_total for {outcome}"
        return value


def samples_of(
    exposition: bytes,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def script(sim: Simulator, account_id: str) -> None:
    """Hand-written tasks for both regions; see the module constants."""

    def add(region: str, builder: TimelineBuilder) -> None:
        sim.add_task(account_id, region, builder)

    add(
        FAILING,
        TimelineBuilder(TaskSpec(DONE_ID, disks=DISKS))
        .phase(T0 - 600, "preparing ami")
        .completed(T0 + 400, image_id=DONE_IMAGE),
    )
    add(
        FAILING,
        TimelineBuilder(TaskSpec(FAIL_ID, disks=DISKS))
        .phase(T0 - 600, "converting", 30)
        .failed(T0 + 450, FAILURE),
    )
    add(
        FAILING,
        TimelineBuilder(TaskSpec(MOVING_ID, disks=DISKS))
        .phase(T0 - 600, "converting", 20)
        .phase(T0 + 500, "converting", 45),
    )
    for steady in STEADY_IDS:
        add(
            FAILING,
            TimelineBuilder(TaskSpec(steady, disks=DISKS)).phase(
                T0 - 600, "converting", 25
            ),
        )
    add(
        HEALTHY,
        TimelineBuilder(TaskSpec(HEALTHY_DONE_ID, disks=DISKS))
        .phase(T0 - 600, "preparing ami")
        .completed(T0 + 450),
    )
    add(
        HEALTHY,
        TimelineBuilder(TaskSpec(HEALTHY_MOVING_ID, disks=DISKS))
        .phase(T0 - 600, "converting", 20)
        .phase(T0 + 250, "converting", 40),
    )


#: Turns a fault on or off; may be a coroutine function.
Switch = Callable[[], Awaitable[None] | None]


async def episode(
    run: Run, account: str, fault_on: Switch, fault_off: Switch
) -> Episode:
    """Poll before, during (twice) and after a fault in the failing region."""
    result = Episode(account)

    async def poll(offset: float) -> None:
        events = await run.poll_at(offset)
        failing = {
            key: tracked
            for key, tracked in run.monitor.state.tasks.items()
            if key.region == FAILING
        }
        samples = samples_of(run.monitor.web.exposition)
        result.polls.append(Poll(offset, events, samples, failing))

    await poll(BEFORE)
    await _call(fault_on)
    for offset in DURING:
        await poll(offset)
    await _call(fault_off)
    await poll(RECOVERY)
    await poll(AFTER)
    return result


async def _call(switch: Switch) -> None:
    outcome = switch()
    if outcome is not None:
        await outcome


def assert_contained_and_recovered(episode: Episode, healthy_account: str) -> None:
    """Rule 1 of the design, for one fault episode."""
    account = episode.account

    # The healthy region saw exactly its own changes, on time, and stayed up.
    for poll in episode.polls:
        seen = {(e.name, e.task_id) for e in poll.of(healthy_account, HEALTHY)}
        assert seen == HEALTHY_EVENTS[poll.offset], poll.offset
        assert (
            poll.sample(
                "ec2_import_poll_success", account=healthy_account, region=HEALTHY
            )
            == 1.0
        )

    # While failing: one poll_failed, no task event, tasks frozen, success 0.
    first, second = episode.during
    assert [e.name for e in first.of(account, FAILING)] == ["poll_failed"]
    assert second.of(account, FAILING) == []
    for poll in episode.during:
        assert poll.failing_tasks == episode.before.failing_tasks
        frozen = poll.sample(
            "ec2_import_task_progress_ratio",
            account=account,
            region=FAILING,
            task_id=MOVING_ID,
        )
        assert frozen == 0.2
        assert (
            poll.sample("ec2_import_poll_success", account=account, region=FAILING)
            == 0.0
        )

    # Recovered: said once, and what changed meanwhile is reported now.
    names = [e.name for e in episode.failing_events()]
    assert names.count("poll_failed") == 1
    assert names.count("poll_recovered") == 1
    caught_up = {(e.name, e.task_id): e for e in episode.recovery.of(account, FAILING)}
    assert ("poll_recovered", None) in caught_up
    assert caught_up[("task_completed", DONE_ID)].fields["image_id"] == DONE_IMAGE
    assert caught_up[("task_failed", FAIL_ID)].fields["status_message"] == FAILURE
    progressed = caught_up[("task_progressed", MOVING_ID)].fields
    assert (progressed["before"], progressed["after"]) == (0.2, 0.45)
    assert "task_vanished" not in names
    for poll in (episode.recovery, episode.polls[-1]):
        assert (
            poll.sample("ec2_import_poll_success", account=account, region=FAILING)
            == 1.0
        )

    # Each task ended exactly once, and only after the region came back.
    terminal = [e for e in episode.failing_events() if e.name in TERMINAL]
    assert sorted((e.name, e.task_id) for e in terminal) == [
        ("task_completed", DONE_ID),
        ("task_failed", FAIL_ID),
    ]
    assert all(e.time == T0 + RECOVERY for e in terminal)


@dataclass(frozen=True)
class Fault:
    """A fault switch of the simulator and what the failing attempts count as."""

    settings: Mapping[str, object]
    #: The api_requests_total outcome of each failed HTTP attempt.
    outcome: str
    #: Failed HTTP attempts over the two failing polls: retried faults cost
    #: ``max_attempts`` each, the rest one.
    attempts: int
    #: A fragment of the poll_failed error, to show it failed for this reason.
    error: str


FAULTS = {
    "throttled beyond max_attempts": Fault(
        {"throttle_rate": 1.0}, "throttled", 4, "RequestLimitExceeded"
    ),
    "server errors": Fault({"error_rate": 1.0}, "server_error", 4, "InternalError"),
    "connection drops": Fault(
        {"drop_connection": True}, "network_error", 4, "ConnectionClosedError"
    ),
    "read timeouts": Fault({"latency": 1.5}, "network_error", 4, "ReadTimeoutError"),
    "malformed XML": Fault(
        {"malformed_rate": 1.0}, "server_error", 2, "ResponseParserError"
    ),
    "truncated XML": Fault(
        {"truncate_rate": 1.0}, "network_error", 4, "ConnectionClosedError"
    ),
    "invalid NextToken": Fault(
        {"bad_token": True}, "client_error", 2, "InvalidPaginationToken"
    ),
    "credentials rejected": Fault(
        {"auth_failure": True}, "client_error", 2, "AuthFailure"
    ),
    # Every page of a looping listing is a good answer; the poller refuses
    # the loop itself, so no attempt fails.
    "token loop": Fault({"token_loop": True}, "client_error", 0, "token loop"),
}


class TestOneRegionFailing:
    """A fault in one region, on for two polls and then off."""

    @pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
    async def test_failure_is_contained_reported_once_and_caught_up(
        self, fault: Fault
    ) -> None:
        """No false event while failing; one poll_failed; catch-up on recovery."""
        async with monitor_run(**POLL) as run:
            script(run.sim, run.account_id)
            region_faults = run.sim.faults.for_region(FAILING)

            def on() -> None:
                for name, value in fault.settings.items():
                    setattr(region_faults, name, value)

            result = await episode(run, "e2e", on, run.sim.faults.clear)

        assert_contained_and_recovered(result, "e2e")
        error = result.during[0].of("e2e", FAILING)[0].fields["error"]
        assert fault.error in error
        assert "\n" not in error
        assert len(error) <= MAX_ERROR_CHARS
        counted = result.requests(result.during[1], fault.outcome) - result.requests(
            result.before, fault.outcome
        )
        assert counted == fault.attempts

    async def test_throttled_attempts_are_the_ones_the_service_refused(
        self,
    ) -> None:
        """Every RequestLimitExceeded the service sent is counted as throttled."""
        async with monitor_run(**POLL) as run:
            script(run.sim, run.account_id)
            region_faults = run.sim.faults.for_region(FAILING)

            def on() -> None:
                region_faults.throttle_rate = 1.0

            result = await episode(run, "e2e", on, run.sim.faults.clear)
            refused = sum(
                1
                for record in run.sim.requests
                if record.region == FAILING and record.code == "RequestLimitExceeded"
            )

        assert refused == 2 * MAX_ATTEMPTS
        assert result.requests(result.polls[-1], "throttled") == refused
        assert result.requests(result.polls[-1], "success") > 0

    async def test_a_page_repeating_a_task_is_not_a_failure_nor_a_duplicate(
        self,
    ) -> None:
        """Every page after the first repeating a task changes nothing reported."""
        async with monitor_run(**POLL) as clean:
            script(clean.sim, clean.account_id)
            expected = await episode(clean, "e2e", _nothing, _nothing)
        async with monitor_run(**POLL) as run:
            script(run.sim, run.account_id)
            region_faults = run.sim.faults.for_region(FAILING)

            def on() -> None:
                region_faults.repeat_task = True

            result = await episode(run, "e2e", on, run.sim.faults.clear)
            repeated = [r for r in run.sim.requests if r.fault == "repeat_task"]

        assert repeated, "the fault never fired: no page 2 was read"
        assert [_summary(p.events) for p in result.polls] == [
            _summary(p.events) for p in expected.polls
        ]
        assert not any(e.name.startswith("poll_") for e in result.failing_events())


def _nothing() -> None:
    """A switch that switches nothing, for a fault-free reference run."""


def _summary(events: list[Event]) -> list[tuple[str, str, str | None]]:
    return sorted((e.name, e.region, e.task_id) for e in events)


class TestUnreachableEndpoint:
    """A target's endpoint stops listening, then listens again."""

    async def test_refused_connections_fail_only_that_target_until_it_listens(
        self, tmp_path: Path
    ) -> None:
        """Connection refused is a failed poll like any other, and recovers."""
        sim = Simulator(scenario="empty", seed=3, speed=0.0, start=T0)
        state = tmp_path / "state.db"
        async with Listener(sim) as dark, _two_targets(sim, dark.url, state) as run:
            script(sim, run.account_id)

            result = await episode(run, "dark", dark.stop, dark.start)

        assert_contained_and_recovered(result, "e2e")
        failed = result.during[0].of("dark", FAILING)[0]
        assert "Could not connect" in failed.fields["error"]
        assert result.requests(result.during[1], "network_error") == 4


class Listener:
    """The simulator on a loopback port of its own, which can stop listening.

    While stopped nothing listens on the port, so connections are refused,
    as from a host whose service is down.
    """

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._serving = AsyncExitStack()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        endpoint = await self._serving.enter_async_context(
            serve(self._sim, port=self.port)
        )
        self.port = endpoint.port

    async def stop(self) -> None:
        await self._serving.aclose()

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@asynccontextmanager
async def _two_targets(
    sim: Simulator, dark_url: str, state: Path
) -> AsyncIterator[Run]:
    """The healthy region on one endpoint, the failing one on ``dark_url``."""
    async with serve(sim) as endpoint:
        settings = Settings.model_validate(
            {
                "poll": {"interval": "60s", **POLL},
                "targets": [
                    {"name": "e2e", "regions": [HEALTHY], "endpoint_url": endpoint.url},
                    {"name": "dark", "regions": [FAILING], "endpoint_url": dark_url},
                ],
                "state": {"path": str(state)},
            }
        )
        monitor = Monitor(settings, clock=sim.clock.now)
        await monitor.start()
        try:
            yield Run(sim, monitor)
        finally:
            await monitor.close()


class TestPartialFaults:
    """Faults that hit only some requests, over hours of the mixed scenario."""

    @pytest.mark.parametrize(
        "settings",
        [
            {"throttle_rate": 0.4},
            {"error_rate": 0.4},
            {"malformed_rate": 0.3, "truncate_rate": 0.3},
        ],
        ids=["throttling", "server errors", "broken bodies"],
    )
    async def test_no_event_contradicts_what_the_service_held(
        self, settings: Mapping[str, float]
    ) -> None:
        """Each event matches the simulator's truth; the end state converges."""
        # One attempt per request: every unlucky draw fails a poll, so the
        # run sees many failures and recoveries without retry back-off.
        async with monitor_run("mixed", tasks=10, seed=11, max_attempts=1) as run:
            region_faults = run.sim.faults.for_region(FAILING)
            for name, value in settings.items():
                setattr(region_faults, name, value)
            failed_polls: list[float] = []
            for step in range(24):
                offset = step * 900.0
                events = await run.poll_at(offset)
                if not run.monitor.state.regions[RegionKey("e2e", FAILING)].ok:
                    failed_polls.append(offset)
                _assert_true_to_the_service(run, events)
            run.sim.faults.clear()
            await run.poll_at(24 * 900.0)
            truth = {region: _truth(run, region) for region in (FAILING, HEALTHY)}

        assert failed_polls, "no poll failed: the fault rate tested nothing"
        ended = [e for e in run.events if e.region == FAILING and e.name in TERMINAL]
        assert ended, "no task ended in the faulty region: nothing to get wrong"
        for event in run.events:
            if event.region == FAILING and event.time - T0 in failed_polls:
                assert event.name == "poll_failed", event
        names = [e.name for e in run.events if e.region == FAILING]
        polls = [n for n in names if n.startswith("poll_")]
        assert polls == ["poll_failed", "poll_recovered"] * (len(polls) // 2)
        assert all(
            e.region == FAILING for e in run.events if e.name.startswith("poll_")
        )
        for key, tracked in run.monitor.state.tasks.items():
            assert tracked.task.status == truth[key.region][key.task_id].status, key
        for task_id, events in run.by_task().items():
            ends = [e.name for e in events if e.name in TERMINAL]
            assert len(ends) <= 1, (task_id, ends)


def _truth(run: Run, region: str) -> dict[str, ImportTask]:
    parsed = map(ImportTask.from_api, run.sim.tasks_of(run.account_id, region))
    return {task.task_id: task for task in parsed if task is not None}


def _assert_true_to_the_service(run: Run, events: list[Event]) -> None:
    """Terminal events name the state the simulator holds at that moment."""
    truth = {region: _truth(run, region) for region in (FAILING, HEALTHY)}
    for event in events:
        if event.task_id is None:
            continue
        now = truth[event.region].get(event.task_id)
        if event.name == "task_completed":
            assert now is not None
            assert now.status == "completed", event
        elif event.name == "task_failed":
            assert now is not None
            assert now.status == "deleted", event
        elif event.name == "task_vanished":
            assert now is None, event
        elif event.name == "task_progressed" and now is not None:
            assert now.status != "active" or now.progress == event.fields["after"]
