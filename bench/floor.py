"""The floor: the same pages with aiohttp and xml.etree, and nothing else.

No SDK: each request is a hand-built Query form, signed with SigV4 by the
standard library (the simulator does not check signatures, but real EC2
does, so the floor pays for signing), and each page is parsed by
``xml.etree`` into plain dicts of the fields the monitor keeps. Regions are
fetched concurrently with the same bound as the monitor. It has no retries,
no error handling beyond failing: it is what the work costs, not a client.

Prints JSON like ``boto3_loop.py``: the session is made before the first
round, so a round is the listing alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import aiohttp

NAMESPACE = "{http://ec2.amazonaws.com/doc/2016-11-15/}"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def form(page_size: int, token: str | None) -> bytes:
    """The DescribeImportImageTasks request body for one page of active tasks."""
    fields = [
        ("Action", "DescribeImportImageTasks"),
        ("Version", "2016-11-15"),
        ("Filters.1.Name", "task-state"),
        ("Filters.1.Value.1", "active"),
        ("MaxResults", str(page_size)),
    ]
    if token is not None:
        fields.append(("NextToken", token))
    return "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in fields).encode()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_headers(host: str, region: str, body: bytes) -> dict[str, str]:
    """SigV4 headers for a POST of ``body`` to ``/`` on ``host``."""
    access_key = os.environ["AWS_ACCESS_KEY_ID"]
    secret_key = os.environ["AWS_SECRET_ACCESS_KEY"]
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]

    signed = "content-type;host;x-amz-date"
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\n",
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/ec2/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, "ec2", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": CONTENT_TYPE,
        "X-Amz-Date": amz_date,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        ),
    }


def _fields(element: ElementTree.Element) -> dict[str, Any]:
    """Leaf children as name -> text; lists (``...Set``) as lists of dicts."""
    out: dict[str, Any] = {}
    for child in element:
        name = child.tag[len(NAMESPACE) :]
        if len(child):
            out[name] = [_fields(item) for item in child]
        else:
            out[name] = child.text
    return out


def parse_page(body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The tasks of one page, and its NextToken."""
    # The answer comes from our own simulator on loopback, and botocore
    # parses it with the same module.
    root = ElementTree.fromstring(body)  # noqa: S314
    tasks = root.find(NAMESPACE + "importImageTaskSet")
    token = root.findtext(NAMESPACE + "nextToken")
    items = [] if tasks is None else [_fields(item) for item in tasks]
    return items, token


async def fetch_region(
    session: aiohttp.ClientSession, url: str, region: str, page_size: int
) -> tuple[int, int]:
    """(tasks, pages) of one region's active tasks."""
    host = urlsplit(url).netloc
    tasks = pages = 0
    token: str | None = None
    while True:
        body = form(page_size, token)
        async with session.post(
            url, data=body, headers=signed_headers(host, region, body)
        ) as response:
            payload = await response.read()
            response.raise_for_status()
        items, token = parse_page(payload)
        tasks += len(items)
        pages += 1
        if not token:
            return tasks, pages


async def fetch_all(
    session: aiohttp.ClientSession,
    url: str,
    regions: list[str],
    page_size: int,
    concurrency: int,
) -> tuple[int, int]:
    limit = asyncio.Semaphore(concurrency)

    async def bounded(region: str) -> tuple[int, int]:
        async with limit:
            return await fetch_region(session, url, region, page_size)

    counts = await asyncio.gather(*(bounded(region) for region in regions))
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    tasks = pages = 0
    timeout = aiohttp.ClientTimeout(total=120)
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        setup = time.perf_counter() - started
        for _ in range(args.rounds):
            started, cpu_started = time.perf_counter(), time.process_time()
            tasks, pages = await fetch_all(
                session,
                args.endpoint_url,
                args.regions,
                args.page_size,
                args.concurrency,
            )
            rounds.append(
                {
                    "seconds": time.perf_counter() - started,
                    "cpu_seconds": time.process_time() - cpu_started,
                }
            )
    return {"tasks": tasks, "pages": pages, "setup_seconds": setup, "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("regions", nargs="+")
    args = parser.parse_args()

    json.dump(asyncio.run(run(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
