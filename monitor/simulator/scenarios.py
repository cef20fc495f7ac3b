"""Named, seeded scenarios: the tasks an account and region start with.

Each (account, region) gets its own ``random.Random`` seeded from the
scenario, the seed, the account and the region, and its start times are
offsets from the simulator's start time. So the same seed gives the same
tasks in the same states at the same simulated times, whichever region is
asked first and whenever it is first asked.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from monitor.simulator.lifecycle import (
    FAILURES,
    DiskSpec,
    Plan,
    TaskSpec,
    Timeline,
    realistic,
)

HOUR = 3600.0

_VMS = (
    ("web", "CentOS 7"),
    ("db", "Ubuntu 22.04"),
    ("build", "Debian 12"),
    ("ad", "Windows Server 2019"),
    ("mail", "RHEL 8"),
    ("files", "Windows Server 2022"),
    ("proxy", "Amazon Linux 2"),
    ("erp", "SLES 15"),
)
_FORMATS = ("VMDK", "VMDK", "VHD", "VHDX", "RAW", "OVA")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A recipe for a region's tasks: ``build(rng, start, count, bucket)``."""

    name: str
    summary: str
    default_tasks: int
    build: Callable[[random.Random, float, int, str], list[Timeline]]


def generate(
    scenario: str,
    seed: int,
    account: str,
    region: str,
    start: float,
    tasks: int | None = None,
) -> list[Timeline]:
    """The tasks of one account and region under ``scenario``."""
    recipe = SCENARIOS[scenario]
    count = recipe.default_tasks if tasks is None else tasks
    rng = random.Random(f"{scenario}/{seed}/{account}/{region}")
    return recipe.build(rng, start, count, f"vm-imports-{account}-{region}")


def task_id(rng: random.Random) -> str:
    """A task ID shaped like today's: 17 hex digits."""
    return f"import-ami-{rng.getrandbits(68):017x}"


def random_spec(rng: random.Random, bucket: str, disks: int | None = None) -> TaskSpec:
    """A plausible import request: one VM of one to three disks."""
    identity = task_id(rng)
    role, system = rng.choice(_VMS)
    name = f"{role}-{rng.randint(1, 40):02d}"
    windows = system.startswith("Windows")
    file_format = rng.choice(_FORMATS)
    count = disks if disks is not None else rng.choice((1, 1, 1, 2, 3))
    specs = []
    for number in range(count):
        # Disk sizes spread over orders of magnitude, as real VMs do.
        size = math.floor(2 ** rng.uniform(30.0, 36.3) / 65536) * 65536.0
        key = f"exports/{name}/disk{number + 1}.{file_format.lower()}"
        use_url = rng.random() < 0.2
        specs.append(
            DiskSpec(
                size_bytes=size,
                format=file_format,
                url=f"s3://{bucket}/{key}" if use_url else None,
                s3_bucket=None if use_url else bucket,
                s3_key=None if use_url else key,
                description=f"{name} disk {number + 1}",
            )
        )
    encrypted = rng.random() < 0.2
    tagged = rng.random() < 0.5
    return TaskSpec(
        task_id=identity,
        disks=tuple(specs),
        description=f"{name} ({system})",
        architecture="arm64" if rng.random() < 0.1 else "x86_64",
        platform="Windows" if windows else "Linux",
        license_type="AWS" if windows and rng.random() < 0.5 else "BYOL",
        encrypted=encrypted,
        kms_key_id=f"alias/{role}-imports" if encrypted else None,
        boot_mode=rng.choice(("legacy-bios", "uefi", None)),
        usage_operation="RunInstances:0800" if windows else "RunInstances",
        tags=(("Name", name), ("team", role)) if tagged else (),
    )


def _steady(
    rng: random.Random, start: float, count: int, bucket: str
) -> list[Timeline]:
    """Every task completes; some before the start, some during the first hours."""
    return [
        realistic(
            random_spec(rng, bucket),
            start + rng.uniform(-3 * HOUR, 2 * HOUR),
            rng,
            Plan(),
        )
        for _ in range(count)
    ]


def _mixed(rng: random.Random, start: float, count: int, bucket: str) -> list[Timeline]:
    """A quarter fail, in different phases; some are cancelled; the rest complete.

    A few are already running at the start and the rest start over the
    first four hours, so new tasks keep appearing.
    """
    failing = max(1, round(count * 0.25)) if count >= 3 else 0
    cancelled = max(1, round(count * 0.15)) if count >= 3 else 0
    outcomes = ["fail"] * failing + ["cancel"] * cancelled
    outcomes += ["complete"] * (count - len(outcomes))
    rng.shuffle(outcomes)
    phases = list(FAILURES)

    timelines = []
    for number, outcome in enumerate(outcomes):
        running_before = number < max(1, count // 5)
        offset = (
            rng.uniform(-2 * HOUR, 0) if running_before else rng.uniform(0, 4 * HOUR)
        )
        plan = Plan()
        if outcome == "fail":
            plan = Plan(outcome="fail", fail_in=phases[number % len(phases)])
        elif outcome == "cancel":
            plan = Plan(outcome="cancel", cancel_after=rng.uniform(300.0, 2400.0))
        timelines.append(realistic(random_spec(rng, bucket), start + offset, rng, plan))
    return timelines


_STALL_PHASES = ("converting", "converting", "converting", "updating", "booting")


def _stalls(
    rng: random.Random, start: float, count: int, bucket: str
) -> list[Timeline]:
    """A third of the tasks freeze for hours, then resume; the rest keep moving.

    Which ones froze, where and for how long is on each ``Timeline.stalls``.
    """
    frozen = max(1, count // 3) if count else 0
    chosen = set(rng.sample(range(count), frozen))

    timelines = []
    for number in range(count):
        plan = Plan()
        if number in chosen:
            phase = rng.choice(_STALL_PHASES)
            plan = Plan(
                stall_in=phase,
                stall_at=rng.randint(25, 45) if phase == "converting" else 0,
                stall_for=rng.uniform(2 * HOUR, 5 * HOUR),
            )
        offset = rng.uniform(-0.5 * HOUR, 1 * HOUR)
        timelines.append(realistic(random_spec(rng, bucket), start + offset, rng, plan))
    return timelines


def _scale(rng: random.Random, start: float, count: int, bucket: str) -> list[Timeline]:
    """Many long-running three-disk tasks, so most are active at any time."""
    timelines = []
    for _ in range(count):
        plan = Plan(
            outcome="fail" if rng.random() < 0.05 else "complete",
            pace=rng.uniform(6.0, 10.0),
        )
        offset = rng.uniform(-6 * HOUR, 1 * HOUR)
        spec = random_spec(rng, bucket, disks=3)
        timelines.append(realistic(spec, start + offset, rng, plan))
    return timelines


def _empty(rng: random.Random, start: float, count: int, bucket: str) -> list[Timeline]:
    """No tasks at all, until someone calls ImportImage."""
    return []


SCENARIOS: dict[str, Scenario] = {
    recipe.name: recipe
    for recipe in (
        Scenario("steady", "every import completes", 12, _steady),
        Scenario(
            "mixed",
            "imports complete, fail in different phases, or are cancelled",
            20,
            _mixed,
        ),
        Scenario("stalls", "some imports freeze for hours, then resume", 12, _stalls),
        Scenario(
            "scale", "thousands of long three-disk imports per region", 2000, _scale
        ),
        Scenario("empty", "no imports until ImportImage is called", 0, _empty),
    )
}
