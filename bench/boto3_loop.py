"""The cron-script baseline: boto3's paginator, one region after another.

Prints JSON: tasks and pages seen, the seconds spent creating the clients,
and the seconds and CPU seconds of each round. The clients are created
before the first round, so a round is the listing alone; the process as a
whole is what a cron run costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import boto3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("regions", nargs="+")
    args = parser.parse_args()

    started = time.perf_counter()
    clients: dict[str, Any] = {
        region: boto3.client("ec2", region_name=region, endpoint_url=args.endpoint_url)
        for region in args.regions
    }
    setup = time.perf_counter() - started

    rounds = []
    tasks = pages = 0
    for _ in range(args.rounds):
        started, cpu_started = time.perf_counter(), time.process_time()
        tasks = pages = 0
        for client in clients.values():
            paginator = client.get_paginator("describe_import_image_tasks")
            for page in paginator.paginate(
                Filters=[{"Name": "task-state", "Values": ["active"]}],
                PaginationConfig={"PageSize": args.page_size},
            ):
                tasks += len(page.get("ImportImageTasks", []))
                pages += 1
        rounds.append(
            {
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started,
            }
        )

    output = {"tasks": tasks, "pages": pages, "setup_seconds": setup, "rounds": rounds}
    json.dump(output, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
