"""The simulated EC2 world and the aiohttp app that serves it.

Three actions are implemented: DescribeImportImageTasks, ImportImage and
CancelImportTask; any other is ``InvalidAction``. The caller's region comes
from the SigV4 credential scope and its account from the access key ID
(``Simulator.accounts``, else a stable derived ID). Signatures are not
checked, since the simulator cannot know anyone's secret key.

Choices where the real API documents nothing:

- ``ImportTaskId.N`` naming a well-formed ID that does not exist (or has
  expired) is left out of the result rather than failing the call, so a
  batched lookup of vanished tasks returns what still exists. A malformed
  ID is ``InvalidParameterValue``.
- An unknown ``task-state`` value is ``InvalidParameterValue``, like an
  unknown filter name, so a typo fails loudly instead of matching nothing.
- Tasks are listed oldest first (creation time, then ID). A ``NextToken``
  carries the last task's key, the page number and a digest of the query,
  so it keeps its place while tasks appear and end between pages, and is
  ``InvalidPaginationToken`` when reused with another query or region.
- CancelImportTask on a task that is no longer active is ``IncorrectState``;
  on an unknown or malformed ID, ``InvalidConversionTaskId``.

A region's tasks are generated on its first request, inside the event loop:
under the ``scale`` scenario that takes about a second per region, during
which the server answers nothing else.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from monitor.model import ACTIVE, TASK_STATUSES
from monitor.simulator.clock import SimClock
from monitor.simulator.faults import FaultDice, Faults
from monitor.simulator.lifecycle import (
    CANCELLED,
    DiskSpec,
    GiB,
    Plan,
    Stall,
    TaskSpec,
    Timeline,
    TimelineBuilder,
    realistic,
)
from monitor.simulator.protocol import (
    ApiError,
    boolean,
    credential_scope,
    decode_token,
    derived_account,
    encode_token,
    integer,
    invalid_token,
    members,
    render_error,
    render_result,
    scalars,
)
from monitor.simulator.scenarios import SCENARIOS, generate, task_id

log = structlog.get_logger(__name__)

#: Without MaxResults a page holds at most this many tasks.
DEFAULT_PAGE = 1000

#: Keep at most this many request records; the oldest half goes past it.
MAX_RECORDS = 100_000

_TASK_ID = re.compile(r"^import-ami-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
_FORMATS = ("OVA", "VHD", "VHDX", "VMDK", "RAW")
_CHOICES = {
    "Architecture": ("i386", "x86_64", "arm64"),
    "Platform": ("Windows", "Linux"),
    "LicenseType": ("AWS", "BYOL"),
    "BootMode": ("legacy-bios", "uefi", "uefi-preferred"),
}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the simulator saw it and answered it."""

    at: float
    action: str | None
    access_key: str | None
    account: str | None
    region: str | None
    status: int
    code: str | None = None
    fault: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """The error code, else the injected fault, else ``success``."""
        return self.code or self.fault or "success"


@dataclass(slots=True)
class Caller:
    """Who asked, where, and which faults apply to the request."""

    access_key: str
    account: str
    region: str
    faults: Faults
    fault: str | None = None


class _Region:
    """The tasks of one account in one region, kept in listing order."""

    def __init__(self, timelines: list[Timeline]) -> None:
        self.timelines = {timeline.task_id: timeline for timeline in timelines}
        self.order = sorted((t.created_at, t.task_id) for t in timelines)
        self.client_tokens: dict[str, str] = {}
        self.imports = 0

    def add(self, timeline: Timeline) -> None:
        if timeline.task_id in self.timelines:
            raise ValueError(f"task {timeline.task_id} already exists")
        self.timelines[timeline.task_id] = timeline
        bisect.insort(self.order, (timeline.created_at, timeline.task_id))


#: A plausible account's regions: the default ones and one opt-in of each kind.
DEFAULT_REGIONS = {
    **dict.fromkeys(
        (
            "ap-northeast-1",
            "ap-south-1",
            "ap-southeast-2",
            "ca-central-1",
            "eu-central-1",
            "eu-west-1",
            "eu-west-2",
            "sa-east-1",
            "us-east-1",
            "us-east-2",
            "us-west-2",
        ),
        "opt-in-not-required",
    ),
    "eu-south-1": "opted-in",
    "af-south-1": "not-opted-in",
}


class Simulator:
    """A fake EC2 import service: scenario tasks, faults, and a request log.

    ``Simulator(scenario="mixed", seed=7, tasks=20, speed=0.0, start=...)``
    builds a world whose tasks follow the scenario; ``serve(sim)`` puts it
    on the network. Tests may change ``accounts``, ``denied``, ``faults``
    and the clock at any time.
    """

    def __init__(
        self,
        scenario: str = "mixed",
        seed: int = 0,
        tasks: int | None = None,
        speed: float = 1.0,
        start: float | None = None,
        faults: Faults | None = None,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; try {sorted(SCENARIOS)}")
        self.scenario = scenario
        self.seed = seed
        self.tasks = tasks
        self.clock = SimClock(start, speed)
        self.faults = faults if faults is not None else Faults()
        #: access key ID -> 12-digit account ID
        self.accounts: dict[str, str] = dict(accounts or {})
        #: (access key ID or "*", action or "*") pairs that are refused
        self.denied: set[tuple[str, str]] = set()
        self.requests: list[RequestRecord] = []
        #: Requests being answered right now, so a test can act mid-request.
        self.in_flight = 0
        #: What DescribeRegions lists: region -> opt-in status.
        self.regions: dict[str, str] = dict(DEFAULT_REGIONS)
        self._regions: dict[tuple[str, str], _Region] = {}
        self._dice = FaultDice(seed)

    @property
    def start(self) -> float:
        return self.clock.start

    def account_for(self, access_key: str) -> str:
        return self.accounts.get(access_key) or derived_account(access_key)

    def stalls_of(self, account: str, region: str) -> list[Stall]:
        """Where and when the tasks of an account and region freeze."""
        return [s for t in self.timelines_of(account, region) for s in t.stalls]

    def timelines_of(self, account: str, region: str) -> list[Timeline]:
        """Every task of an account and region, expired or not yet begun too."""
        world = self._world(account, region)
        return [world.timelines[task] for _, task in world.order]

    def tasks_of(
        self, account: str, region: str, now: float | None = None
    ) -> list[dict[str, Any]]:
        """The tasks DescribeImportImageTasks would list now, in its order."""
        moment = self.clock.now() if now is None else now
        states = (t.state_at(moment) for t in self.timelines_of(account, region))
        return [state for state in states if state is not None]

    def add_task(
        self, account: str, region: str, timeline: Timeline | TimelineBuilder
    ) -> Timeline:
        """Add a hand-written task to an account and region."""
        if isinstance(timeline, TimelineBuilder):
            timeline = timeline.build()
        self._world(account, region).add(timeline)
        return timeline

    def _world(self, account: str, region: str) -> _Region:
        world = self._regions.get((account, region))
        if world is None:
            timelines = generate(
                self.scenario, self.seed, account, region, self.start, self.tasks
            )
            world = self._regions[(account, region)] = _Region(timelines)
            log.debug(
                "region_created", account=account, region=region, tasks=len(timelines)
            )
        return world

    # The actions

    def describe_import_image_tasks(
        self, caller: Caller, params: Mapping[str, str]
    ) -> dict[str, Any]:
        states = _state_filter(params)
        wanted = scalars(params, "ImportTaskId")
        for task in wanted:
            if not _TASK_ID.match(task):
                raise ApiError(
                    "InvalidParameterValue", f"Invalid import task ID: '{task}'"
                )
        limit = integer(params, "MaxResults", 1, DEFAULT_PAGE) or DEFAULT_PAGE
        query = _query_digest(caller, states, wanted)
        cursor, page = self._cursor(caller, params.get("NextToken"), query)

        # Walk the tasks after the cursor, one more than a page to know if
        # another page follows.
        world = self._world(caller.account, caller.region)
        now = self.clock.now()
        ids = set(wanted)
        begin = bisect.bisect_right(world.order, cursor) if cursor else 0
        found: list[tuple[tuple[float, str], dict[str, Any]]] = []
        more = False
        for key in world.order[begin:]:
            if key[0] > now:
                break
            timeline = world.timelines[key[1]]
            if ids and key[1] not in ids:
                continue
            step = timeline.step_at(now)
            if step is None or (states and step.status not in states):
                continue
            if len(found) == limit:
                more = True
                break
            found.append((key, timeline.state_at(now) or {}))
        tasks = [state for _, state in found]

        # Faults that break paging in ways clients must survive.
        if caller.faults.repeat_task and cursor is not None:
            repeated = world.timelines[cursor[1]].state_at(now)
            if repeated is not None:
                tasks.insert(0, repeated)
                caller.fault = "repeat_task"
        token = None
        if more:
            last = found[-1][0]
            token = encode_token({"c": list(last), "p": page + 1, "q": query})
        if caller.faults.token_loop and page == 1:
            token = encode_token({"c": None, "p": 0, "q": query})
            caller.fault = "token_loop"

        return {"ImportImageTasks": tasks, "NextToken": token}

    def describe_regions(
        self, caller: Caller, params: Mapping[str, str]
    ) -> dict[str, Any]:
        """The enabled regions, or every region with ``AllRegions=true``.

        ``RegionNames`` and ``Filters`` are not implemented: the monitor
        does not send them, and the simulator refuses rather than ignores.
        """
        if any(key.startswith(("RegionName", "Filter")) for key in params):
            raise ApiError(
                "InvalidParameterValue", "RegionNames and Filters are not simulated"
            )
        everything = boolean(params, "AllRegions") or False
        return {
            "Regions": [
                {
                    "RegionName": name,
                    "Endpoint": f"ec2.{name}.amazonaws.com",
                    "OptInStatus": status,
                }
                for name, status in sorted(self.regions.items())
                if everything or status != "not-opted-in"
            ]
        }

    def import_image(self, caller: Caller, params: Mapping[str, str]) -> dict[str, Any]:
        world = self._world(caller.account, caller.region)
        client_token = params.get("ClientToken")
        if client_token and client_token in world.client_tokens:
            existing = world.timelines[world.client_tokens[client_token]]
            return _import_result(existing.state_at(self.clock.now()) or {})

        world.imports += 1
        rng = random.Random(
            f"import/{self.seed}/{caller.account}/{caller.region}/{world.imports}"
        )
        spec = _import_spec(params, rng)
        while spec.task_id in world.timelines:
            spec = _import_spec(params, rng)
        now = self.clock.now()
        timeline = realistic(spec, now, rng, Plan())
        world.add(timeline)
        if client_token:
            world.client_tokens[client_token] = spec.task_id
        log.info(
            "import_started",
            account=caller.account,
            region=caller.region,
            task_id=spec.task_id,
            completes_at=timeline.ended_at,
        )
        return _import_result(timeline.state_at(now) or {})

    def cancel_import_task(
        self, caller: Caller, params: Mapping[str, str]
    ) -> dict[str, Any]:
        task = params.get("ImportTaskId")
        if not task:
            raise ApiError(
                "MissingParameter",
                "The request must contain the parameter ImportTaskId",
            )
        world = self._world(caller.account, caller.region)
        now = self.clock.now()
        timeline = world.timelines.get(task)
        step = timeline.step_at(now) if timeline is not None else None
        if timeline is None or step is None:
            raise ApiError(
                "InvalidConversionTaskId",
                f"The import task ID '{task}' does not exist",
            )
        if step.status != ACTIVE:
            raise ApiError(
                "IncorrectState",
                f"The import task '{task}' is {step.status} and cannot be cancelled",
            )

        reason = params.get("CancelReason") or CANCELLED
        world.timelines[task] = timeline.cancelled(now, reason)
        log.info(
            "import_cancelled",
            account=caller.account,
            region=caller.region,
            task_id=task,
        )
        return {"ImportTaskId": task, "PreviousState": step.status, "State": "deleting"}

    def _cursor(
        self, caller: Caller, token: str | None, query: str
    ) -> tuple[tuple[float, str] | None, int]:
        if token is None:
            return None, 0
        if caller.faults.bad_token:
            caller.fault = "bad_token"
            raise invalid_token(token)
        payload = decode_token(token)
        cursor, page = payload.get("c"), payload.get("p")
        if payload.get("q") != query or not isinstance(page, int):
            raise invalid_token(token)
        if cursor is None:
            return None, page
        valid = (
            isinstance(cursor, list)
            and len(cursor) == 2
            and isinstance(cursor[0], int | float)
            and isinstance(cursor[1], str)
        )
        if not valid:
            raise invalid_token(token)
        return (float(cursor[0]), cursor[1]), page

    # Serving

    def app(self) -> web.Application:
        """The aiohttp application answering EC2 Query requests at any path."""
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self._handle)
        return application

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        params = {key: str(value) for key, value in request.query.items()}
        if request.method == "POST":
            form = await request.post()
            params.update((key, str(value)) for key, value in form.items())
        action = params.get("Action")
        scope = credential_scope(request.headers.get("Authorization"))
        access_key, region = scope if scope else (None, None)
        account = self.account_for(access_key) if access_key else None
        faults = self.faults.effective(region)
        draw = self._dice.roll(faults, region)
        request_id = str(uuid.uuid4())

        def record(
            status: int, code: str | None = None, fault: str | None = None
        ) -> None:
            self._record(
                RequestRecord(
                    self.clock.now(),
                    action,
                    access_key,
                    account,
                    region,
                    status,
                    code,
                    fault,
                    params,
                )
            )

        # Connection-level faults come first, as the network would.
        if faults.drop_connection:
            record(0, fault="drop_connection")
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if faults.latency:
            await asyncio.sleep(faults.latency)

        caller: Caller | None = None
        try:
            if faults.auth_failure:
                raise ApiError(
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                )
            if access_key is None or account is None or region is None:
                raise ApiError(
                    "AuthFailure", "The request is not signed with SigV4 for ec2"
                )
            caller = Caller(access_key, account, region, faults)
            if draw.throttle:
                raise ApiError("RequestLimitExceeded", "Request limit exceeded.")
            if draw.error:
                raise ApiError(
                    "InternalError", "An internal error has occurred. Try again."
                )
            result = self._dispatch(caller, action, params)
        except ApiError as error:
            fault = caller.fault if caller else None
            if faults.auth_failure:
                fault = "auth_failure"
            elif draw.throttle or draw.error:
                fault = "throttle" if draw.throttle else "error"
            record(error.status, error.code, fault)
            return web.Response(
                status=error.status,
                text=render_error(error, request_id),
                content_type="text/xml",
                headers={"x-amzn-RequestId": request_id},
            )

        body = render_result(action or "", result, request_id)
        if draw.malformed:
            record(200, fault="malformed")
            return _xml(_malformed(body), request_id)
        if draw.truncate:
            record(200, fault="truncate")
            return await _truncated(request, body, request_id)
        record(200, fault=caller.fault if caller else None)
        return _xml(body, request_id)

    def _dispatch(
        self, caller: Caller, action: str | None, params: Mapping[str, str]
    ) -> dict[str, Any]:
        operations: dict[str, Callable[[Caller, Mapping[str, str]], dict[str, Any]]] = {
            "DescribeImportImageTasks": self.describe_import_image_tasks,
            "DescribeRegions": self.describe_regions,
            "ImportImage": self.import_image,
            "CancelImportTask": self.cancel_import_task,
        }
        operation = operations.get(action or "")
        if action is None or operation is None:
            raise ApiError(
                "InvalidAction",
                f"The action {action} is not valid for this web service.",
            )
        refused = {(caller.access_key, action), ("*", action), (caller.access_key, "*")}
        if refused & self.denied:
            raise ApiError(
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
            )
        if boolean(params, "DryRun"):
            raise ApiError(
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            )
        return operation(caller, params)

    def _record(self, record: RequestRecord) -> None:
        self.requests.append(record)
        if len(self.requests) > MAX_RECORDS:
            del self.requests[: MAX_RECORDS // 2]
        log.debug(
            "request_served",
            action=record.action,
            account=record.account,
            region=record.region,
            status=record.status,
            outcome=record.outcome,
        )


def _state_filter(params: Mapping[str, str]) -> set[str]:
    """The ``task-state`` values asked for; several filters must all match."""
    allowed: set[str] | None = None
    for entry in members(params, "Filters"):
        name = entry.get("Name")
        values = scalars(entry, "Value")
        if name != "task-state":
            raise ApiError(
                "InvalidParameterValue",
                f"The filter '{name}' is invalid; the only filter is 'task-state'",
            )
        if not values:
            raise ApiError(
                "InvalidParameterValue", "The filter 'task-state' needs a value"
            )
        for value in values:
            if value not in TASK_STATUSES:
                raise ApiError(
                    "InvalidParameterValue",
                    f"The task-state '{value}' is invalid; "
                    f"use one of {', '.join(TASK_STATUSES)}",
                )
        allowed = set(values) if allowed is None else allowed & set(values)
    if allowed is not None and not allowed:
        # Filters that contradict each other match nothing; an empty set
        # would mean "no filter" below, so keep an impossible state.
        return {"none"}
    return allowed or set()


def _query_digest(caller: Caller, states: set[str], ids: list[str]) -> str:
    query = f"{caller.account}/{caller.region}/{sorted(states)}/{sorted(ids)}"
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def _import_spec(params: Mapping[str, str], rng: random.Random) -> TaskSpec:
    """The task an ImportImage request asks for; errors name the bad parameter."""
    containers = members(params, "DiskContainer")
    if not containers:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter DiskContainer"
        )
    disks = []
    for number, container in enumerate(containers, start=1):
        url = container.get("Url")
        bucket = container.get("UserBucket.S3Bucket")
        key = container.get("UserBucket.S3Key")
        if not url and not (bucket and key) and not container.get("SnapshotId"):
            raise ApiError(
                "InvalidParameterValue",
                f"DiskContainer.{number} needs Url, UserBucket.S3Bucket and "
                "UserBucket.S3Key, or SnapshotId",
            )
        file_format = container.get("Format")
        if file_format is not None and file_format.upper() not in _FORMATS:
            raise ApiError(
                "InvalidParameterValue",
                f"DiskContainer.{number}.Format '{file_format}' is not one of "
                f"{', '.join(_FORMATS)}",
            )
        # The simulator cannot read the object, so it makes up a size.
        size = float(rng.randrange(2 * 1024, 60 * 1024)) * (GiB / 1024)
        disks.append(
            DiskSpec(
                size_bytes=size,
                format=file_format or "VMDK",
                url=url,
                s3_bucket=bucket,
                s3_key=key,
                description=container.get("Description"),
                device_name=container.get("DeviceName"),
            )
        )

    for name, choices in _CHOICES.items():
        value = params.get(name)
        if value is not None and value not in choices:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({value}) for parameter {name} is invalid. "
                f"Use one of {', '.join(choices)}.",
            )
    return TaskSpec(
        task_id=task_id(rng),
        disks=tuple(disks),
        description=params.get("Description"),
        architecture=params.get("Architecture"),
        platform=params.get("Platform"),
        license_type=params.get("LicenseType"),
        hypervisor=params.get("Hypervisor"),
        encrypted=boolean(params, "Encrypted"),
        kms_key_id=params.get("KmsKeyId"),
        boot_mode=params.get("BootMode"),
        usage_operation=params.get("UsageOperation"),
        tags=_tags(params),
        license_arns=tuple(
            entry["LicenseConfigurationArn"]
            for entry in members(params, "LicenseSpecifications")
            if entry.get("LicenseConfigurationArn")
        ),
    )


def _tags(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    tags = []
    for number, spec in enumerate(members(params, "TagSpecification"), start=1):
        if spec.get("ResourceType") != "import-image-task":
            raise ApiError(
                "InvalidParameterValue",
                f"TagSpecification.{number}.ResourceType must be import-image-task",
            )
        for tag in members(spec, "Tag"):
            if not tag.get("Key"):
                raise ApiError("InvalidParameterValue", "A tag needs a Key")
            tags.append((tag["Key"], tag.get("Value", "")))
    return tuple(tags)


def _import_result(state: Mapping[str, Any]) -> dict[str, Any]:
    # ImportImageResult has every ImportImageTask member except BootMode.
    return {key: value for key, value in state.items() if key != "BootMode"}


def _xml(body: str, request_id: str) -> web.Response:
    return web.Response(
        text=body,
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )


def _malformed(body: str) -> str:
    # Cut the closing tag of the root element: a parser sees an unclosed
    # document, as it would from a broken proxy.
    return body[: body.rindex("</")] + "<"


async def _truncated(
    request: web.Request, body: str, request_id: str
) -> web.StreamResponse:
    """Promise the whole body, send half of it, and hang up."""
    data = body.encode()
    response = web.StreamResponse(headers={"x-amzn-RequestId": request_id})
    response.content_type = "text/xml"
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a running simulator listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Endpoint]:
    """Serve ``sim`` on ``host:port`` (0 picks a free port) until the block ends."""
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        endpoint = Endpoint(host, _bound_port(runner) or port)
        log.info("simulator_started", url=endpoint.url, scenario=sim.scenario)
        yield endpoint
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
