"""The simulator's `stalls` scenario: every frozen task flagged once, in time.

Tasks freeze for hours in converting, updating or booting and then resume;
the others keep moving. With the default thresholds, polled every five
simulated minutes, each freeze longer than its threshold must produce exactly
one `task_stalled` within its threshold plus one poll of the monitor seeing
the freeze, one `task_resumed` when it moves again, and no moving task may
ever be flagged.
"""

from __future__ import annotations

import pytest

from monitor.simulator import Stall
from tests.e2e import T0, monitor_run, use_test_credentials

POLL = 300.0
HOURS = 12


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_credentials(monkeypatch)


async def test_every_frozen_task_stalls_once_and_no_moving_task_does() -> None:
    async with monitor_run("stalls", tasks=9, seed=4) as run:
        await run.poll_every(POLL, until=HOURS * 3600)
        threshold = run.monitor.rules.stall_threshold
        stalls: dict[str, Stall] = {}
        sizes: dict[str, float] = {}
        for region in ("us-east-1", "eu-west-1"):
            for timeline in run.sim.timelines_of(run.account_id, region):
                sizes[timeline.task_id] = sum(
                    disk.size_bytes for disk in timeline.spec.disks
                )
                for stall in timeline.stalls:
                    stalls[stall.task_id] = stall

    by_task = run.by_task()
    judged = 0
    for task_id, events in by_task.items():
        assert task_id is not None, "no region's poll failed in this run"
        stalled = [e for e in events if e.name == "task_stalled"]
        resumed = [e for e in events if e.name == "task_resumed"]
        if task_id not in stalls:
            assert stalled == [], f"{task_id} kept moving but was flagged"
            continue
        stall = stalls[task_id]

        limit = threshold(stall.message, sizes[task_id])
        if stall.since < T0 or stall.until > T0 + HOURS * 3600:
            continue  # not wholly inside the watched hours
        if stall.until - stall.since < limit:
            assert stalled == [], f"{task_id} froze for less than its threshold"
            continue
        if stall.until - stall.since < limit + 2 * POLL:
            continue  # too close to call at this poll spacing

        judged += 1
        assert len(stalled) == 1, task_id
        assert stall.since + limit <= stalled[0].time <= stall.since + limit + 2 * POLL
        assert stalled[0].fields["phase"] == stall.message
        assert len(resumed) == 1, task_id
        assert stall.until <= resumed[0].time <= stall.until + POLL

    assert judged >= 2, "the scenario should hold frozen tasks to judge"
