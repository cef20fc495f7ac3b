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
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from monitor.config import PollSettings, Target
from monitor.credentials import session_for
from monitor.model import ImportTask
from monitor.tracker import RegionKey, RegionPoll

log = structlog.get_logger(__name__)

OPERATION = "DescribeImportImageTasks"

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
    """Owns the EC2 clients and polls every target and region concurrently."""

    def __init__(
        self,
        targets: Sequence[Target],
        settings: PollSettings,
        record_request: RequestRecorder | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._settings = settings
        self._record = record_request or (lambda *_: None)
        self._stack = AsyncExitStack()
        self._clients: list[RegionClient] = []

    @property
    def regions(self) -> tuple[RegionKey, ...]:
        return tuple(client.key for client in self._clients)

    async def __aenter__(self) -> Poller:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        config = AioConfig(
            retries={
                "mode": self._settings.retry_mode,
                "total_max_attempts": self._settings.max_attempts,
            },
            connect_timeout=self._settings.connect_timeout,
            read_timeout=self._settings.read_timeout,
            # One connection per concurrent page request is all a region uses.
            max_pool_connections=4,
        )
        for target in self._targets:
            session = session_for(target)
            for region in target.regions:
                client = await self._stack.enter_async_context(
                    session.client(
                        "ec2",
                        region_name=region,
                        endpoint_url=target.endpoint_url,
                        config=config,
                    )
                )
                self._count_attempts(client, target.name, region)
                self._clients.append(RegionClient(target.name, region, client))
        log.debug("clients_opened", regions=len(self._clients))

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()

    async def poll(
        self, open_task_ids: Mapping[RegionKey, frozenset[str]]
    ) -> list[RegionPoll]:
        """Poll every region once, at most ``concurrency`` at a time.

        ``open_task_ids`` holds, per region, the tasks the tracker still
        follows; those missing from the active listing are looked up by ID.
        """
        limit = asyncio.Semaphore(self._settings.concurrency)

        async def bounded(client: RegionClient) -> RegionPoll:
            async with limit:
                return await self.poll_region(
                    client, open_task_ids.get(client.key, frozenset())
                )

        return list(await asyncio.gather(*(bounded(c) for c in self._clients)))

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

    def _count_attempts(self, client: Any, account: str, region: str) -> None:
        def on_response(
            parsed_response: Mapping[str, Any] | None = None,
            exception: BaseException | None = None,
            **_: Any,
        ) -> None:
            self._record(
                account, region, OPERATION, classify(parsed_response, exception)
            )

        client.meta.events.register(f"response-received.ec2.{OPERATION}", on_response)


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
