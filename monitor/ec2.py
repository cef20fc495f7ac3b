"""Fetching: one aioboto3 EC2 client per target and region, reused across polls.

A region's poll lists its active tasks through botocore's paginator, then
looks up by ID the tasks that were open last time and are no longer listed,
to learn how they ended. If any page or lookup fails, the whole region's poll
is marked failed and the tracker leaves that region alone this cycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from monitor.config import ALL_REGIONS, PollSettings, Target
from monitor.credentials import session_for
from monitor.model import ImportTask
from monitor.sharding import Shard
from monitor.tracker import RegionKey, RegionPoll

log = structlog.get_logger(__name__)

OPERATION = "DescribeImportImageTasks"
DISCOVER = "DescribeRegions"

#: Where DescribeRegions is asked; regions of other partitions (GovCloud,
#: China) are not discovered and must be listed by name.
DISCOVERY_REGION = "us-east-1"

#: How often ``regions = ["all"]`` is looked up again, for newly enabled ones.
REDISCOVER_SECONDS = 6 * 3600.0

#: IDs per by-ID lookup. The API documents no bound; 100 keeps a request small
#: and one bad ID from failing a large batch.
LOOKUP_BATCH = 100

#: A poll that has read this many pages is in a token loop, whatever the tokens.
MAX_PAGES = 10_000

#: A poll's error as events and the status page show it is cut to this length.
MAX_ERROR_CHARS = 240

#: Error codes botocore's retry modes treat as throttling, for the metrics.
THROTTLE_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled"}
)

#: (account, region, operation, outcome) -> None; counts every HTTP attempt.
RequestRecorder = Callable[[str, str, str, str], None]


class PollError(Exception):
    """A region's poll could not be trusted (beyond botocore's own errors)."""


@dataclass(frozen=True, slots=True)
class RegionClient:
    account: str
    region: str
    client: Any

    @property
    def key(self) -> RegionKey:
        return RegionKey(self.account, self.region)


class Poller:
    """Owns the EC2 clients and polls every target and region concurrently.

    Only the regions this instance's shard owns get a client. A target with
    ``regions = ["all"]`` learns its regions from DescribeRegions at start,
    again every :data:`REDISCOVER_SECONDS`, and on every poll until the
    first discovery has worked.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        settings: PollSettings,
        record_request: RequestRecorder | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._settings = settings
        self._shard = Shard.parse(settings.shard)
        self._record = record_request or (lambda *_: None)
        self._config = AioConfig(
            retries={
                "mode": settings.retry_mode,
                "total_max_attempts": settings.max_attempts,
            },
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # One connection per concurrent page request is all a region uses.
            max_pool_connections=4,
        )
        self._sessions: dict[str, Any] = {}
        self._clients: dict[RegionKey, RegionClient] = {}
        self._contexts: dict[RegionKey, Any] = {}
        self._discovered_at: dict[str, float] = {}

    @property
    def regions(self) -> tuple[RegionKey, ...]:
        return tuple(self._clients)

    async def __aenter__(self) -> Poller:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        for target in self._targets:
            self._sessions[target.name] = session_for(target)
            if target.regions == [ALL_REGIONS]:
                await self._discover(target)
            else:
                await self._use_regions(target, target.regions)
        log.debug("clients_opened", regions=len(self._clients))

    async def close(self) -> None:
        for key in list(self._clients):
            await self._drop(key)

    async def _discover(self, target: Target) -> None:
        """Ask DescribeRegions which regions are enabled; poll those."""
        client = self._sessions[target.name].client(
            "ec2",
            region_name=DISCOVERY_REGION,
            endpoint_url=target.endpoint_url,
            config=self._config,
        )
        try:
            async with client as ec2:
                self._count_attempts(ec2, target.name, DISCOVERY_REGION, DISCOVER)
                async with asyncio.timeout(self._settings.region_deadline):
                    answer = await ec2.describe_regions()
        except Exception as exc:  # any failure: keep what we had, retry later
            log.warning(
                "region_discovery_failed",
                account=target.name,
                error=describe_error(exc),
            )
            return

        regions = sorted(
            str(entry["RegionName"])
            for entry in answer.get("Regions", [])
            if isinstance(entry, Mapping) and entry.get("RegionName")
        )
        self._discovered_at[target.name] = time.monotonic()
        await self._use_regions(target, regions)
        log.info("regions_discovered", account=target.name, regions=regions)

    async def _rediscover_due(self) -> None:
        now = time.monotonic()
        for target in self._targets:
            if target.regions != [ALL_REGIONS]:
                continue
            last = self._discovered_at.get(target.name)
            if last is None or now - last >= REDISCOVER_SECONDS:
                await self._discover(target)

    async def _use_regions(self, target: Target, regions: Sequence[str]) -> None:
        """Open clients for the shard's share of ``regions``; close the rest."""
        wanted = {
            RegionKey(target.name, region)
            for region in regions
            if self._shard.owns(target.name, region)
        }
        for key in [k for k in self._clients if k.account == target.name]:
            if key not in wanted:
                await self._drop(key)
        for key in sorted(wanted - self._clients.keys()):
            context = self._sessions[target.name].client(
                "ec2",
                region_name=key.region,
                endpoint_url=target.endpoint_url,
                config=self._config,
            )
            client = await context.__aenter__()
            self._count_attempts(client, key.account, key.region, OPERATION)
            self._contexts[key] = context
            self._clients[key] = RegionClient(key.account, key.region, client)

    async def _drop(self, key: RegionKey) -> None:
        self._clients.pop(key, None)
        context = self._contexts.pop(key, None)
        if context is not None:
            await context.__aexit__(None, None, None)

    async def poll(
        self, open_task_ids: Mapping[RegionKey, frozenset[str]]
    ) -> list[RegionPoll]:
        """Poll every region once, at most ``concurrency`` at a time.

        ``open_task_ids`` holds, per region, the tasks the tracker still
        follows; those missing from the active listing are looked up by ID.
        """
        await self._rediscover_due()
        limit = asyncio.Semaphore(self._settings.concurrency)

        async def bounded(client: RegionClient) -> RegionPoll:
            async with limit:
                return await self.poll_region(
                    client, open_task_ids.get(client.key, frozenset())
                )

        clients = list(self._clients.values())
        return list(await asyncio.gather(*(bounded(c) for c in clients)))

    async def poll_region(
        self, rc: RegionClient, open_ids: frozenset[str]
    ) -> RegionPoll:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.region_deadline):
                active = await self._list(
                    rc, Filters=[{"Name": "task-state", "Values": ["active"]}]
                )
                missing = sorted(open_ids - {task.task_id for task in active})
                resolved: list[ImportTask] = []
                for batch in _batches(missing, LOOKUP_BATCH):
                    resolved += await self._list(rc, ImportTaskIds=batch)
        except Exception as exc:  # any failure fails this region, and only it
            error = describe_error(exc)
            if not isinstance(
                exc, ClientError | BotoCoreError | PollError | TimeoutError
            ):
                # Not an API answer: a parser or library fault worth a trace.
                self._record(rc.account, rc.region, OPERATION, "server_error")
                log.warning(
                    "poll_error", account=rc.account, region=rc.region, exc_info=exc
                )
            return RegionPoll(
                rc.account,
                rc.region,
                ok=False,
                error=error,
                duration=time.perf_counter() - started,
            )

        return RegionPoll(
            rc.account,
            rc.region,
            ok=True,
            active=tuple(active),
            resolved=tuple(resolved),
            looked_up=frozenset(missing),
            duration=time.perf_counter() - started,
        )

    async def _list(self, rc: RegionClient, **params: Any) -> list[ImportTask]:
        paginator = rc.client.get_paginator("describe_import_image_tasks")
        pages = paginator.paginate(
            **params, PaginationConfig={"PageSize": self._settings.page_size}
        )
        tasks: list[ImportTask] = []
        tokens: set[str] = set()

        async for page in pages:
            tasks.extend(_parse(page.get("ImportImageTasks")))
            token = page.get("NextToken")
            # botocore only catches a token repeated back to back; a longer
            # cycle would page forever.
            if token is not None and token in tokens:
                raise PollError(f"pagination token loop after {len(tokens)} pages")
            if token is not None:
                tokens.add(token)
            if len(tokens) > MAX_PAGES:
                raise PollError(f"more than {MAX_PAGES} pages")

        return tasks

    def _count_attempts(
        self, client: Any, account: str, region: str, operation: str
    ) -> None:
        def on_response(
            parsed_response: Mapping[str, Any] | None = None,
            exception: BaseException | None = None,
            **_: Any,
        ) -> None:
            self._record(
                account, region, operation, classify(parsed_response, exception)
            )

        client.meta.events.register(f"response-received.ec2.{operation}", on_response)


def classify(parsed: Mapping[str, Any] | None, exception: BaseException | None) -> str:
    """The outcome label of one HTTP attempt."""
    if exception is not None or parsed is None:
        return "network_error"
    code = parsed.get("Error", {}).get("Code")
    status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
    if code in THROTTLE_CODES:
        return "throttled"
    if status >= 500:
        return "server_error"
    if status >= 400 or code:
        return "client_error"
    return "success"


def describe_error(exc: BaseException) -> str:
    """One line about a failure, without request IDs or credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', 'Unknown')}: {error.get('Message', '')}"
    elif isinstance(exc, TimeoutError):
        return "deadline exceeded"
    else:
        text = f"{type(exc).__name__}: {exc}"
    # botocore's parser errors quote the raw response body after a newline:
    # kilobytes of XML in every poll_failed event and on the status page.
    lines = text.strip().splitlines()
    return lines[0][:MAX_ERROR_CHARS] if lines else type(exc).__name__


def _parse(items: object) -> Iterable[ImportTask]:
    if not isinstance(items, list):
        return ()
    parsed = (ImportTask.from_api(item) for item in items)
    return [task for task in parsed if task is not None]


def _batches(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
