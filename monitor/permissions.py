"""``check-config --permissions``: may each target call what the monitor calls?

Every target and region is asked ``DescribeImportImageTasks`` with
``DryRun=True``: EC2 answers ``DryRunOperation`` when the call would be
allowed and ``UnauthorizedOperation`` when it would not, without doing
anything. A target with a role assumes it first, so a trust policy or an
external ID that does not match shows up here too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from monitor.config import ALL_REGIONS, Settings, Target
from monitor.credentials import session_for

ALLOWED = "allowed"
DENIED = "denied"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class Verdict:
    account: str
    region: str
    operation: str
    outcome: str
    detail: str = ""


async def check_permissions(settings: Settings) -> list[Verdict]:
    """One verdict per target, region and operation the monitor would call."""
    config = AioConfig(
        retries={"mode": settings.poll.retry_mode, "total_max_attempts": 2},
        connect_timeout=settings.poll.connect_timeout,
        read_timeout=settings.poll.read_timeout,
    )
    checks = [
        _dry_run(target, region, config)
        for target in settings.targets
        for region in _regions(target)
    ]
    return list(await asyncio.gather(*checks))


def _regions(target: Target) -> list[str]:
    # With "all", the regions are not known before DescribeRegions is allowed;
    # us-east-1 stands in for them.
    return ["us-east-1"] if target.regions == [ALL_REGIONS] else list(target.regions)


async def _dry_run(target: Target, region: str, config: AioConfig) -> Verdict:
    operation = "DescribeImportImageTasks"
    client = session_for(target).client(
        "ec2", region_name=region, endpoint_url=target.endpoint_url, config=config
    )
    try:
        async with client as ec2:
            await ec2.describe_import_image_tasks(DryRun=True, MaxResults=5)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "DryRunOperation":
            return Verdict(target.name, region, operation, ALLOWED)
        if code in ("UnauthorizedOperation", "AccessDenied", "AuthFailure"):
            return Verdict(target.name, region, operation, DENIED, f"{code}: {message}")
        return Verdict(target.name, region, operation, ERROR, f"{code}: {message}")
    except (BotoCoreError, OSError, RuntimeError) as error:
        return Verdict(target.name, region, operation, ERROR, str(error))
    # A DryRun that succeeds outright is not EC2 behaviour; say so.
    return Verdict(target.name, region, operation, ERROR, "DryRun was not honoured")
