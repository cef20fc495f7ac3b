"""`ec2-import-monitor demo`: the README's first command, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp

from tests.conftest import free_port


async def test_demo_streams_events_and_serves_task_and_disk_metrics() -> None:
    port = free_port()
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "demo",
        "--listen",
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert demo.stdout is not None
    try:
        # Events stream within seconds, as JSON lines off a terminal.
        discovered: list[dict[str, str]] = []
        async with asyncio.timeout(60):
            while not discovered:
                line = await demo.stdout.readline()
                assert line, "the demo ended early"
                record = json.loads(line)
                if record["event"] == "task_discovered":
                    discovered.append(record)
        assert discovered[0]["account"] == "demo"

        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                exposition = await response.text()
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                page = await response.text()

        assert f'task_id="{discovered[0]["task_id"]}"' in exposition
        assert "ec2_import_task_progress_ratio{" in exposition
        assert "ec2_import_snapshot_disk_size_bytes{" in exposition
        assert discovered[0]["task_id"] in page

        demo.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await demo.wait() == 0
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
