"""The HTTP endpoints serve what the last poll prepared."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest

from monitor.web import WebState, bound_port, build_app, start_server

TEXT = b"# HELP ec2_import_tasks Tracked tasks\nec2_import_tasks 1.0\n"


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    state = WebState(
        exposition=TEXT,
        exposition_gzip=gzip.compress(TEXT),
        ready=lambda: True,
    )
    runner = await start_server(build_app(state), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


async def test_metrics_are_gzipped_for_a_scraper_that_accepts_it(base_url: str) -> None:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.get(base_url + "/metrics", headers={"Accept-Encoding": "gzip"}) as reply,
    ):
        body = await reply.read()

    assert reply.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT


async def test_metrics_are_plain_text_otherwise(base_url: str) -> None:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.get(
            base_url + "/metrics", headers={"Accept-Encoding": "identity"}
        ) as reply,
    ):
        body = await reply.read()

    assert "Content-Encoding" not in reply.headers
    assert body == TEXT
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")


async def test_a_large_uncompressed_exposition_arrives_whole() -> None:
    """Bodies bigger than a write chunk are streamed, byte for byte."""
    big = b"".join(
        b'ec2_import_task_progress_ratio{task_id="import-ami-%08d"} 0.5\n' % n
        for n in range(60_000)
    )
    state = WebState(exposition=big, ready=lambda: True)
    runner = await start_server(build_app(state), "127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{bound_port(runner)}/metrics") as reply,
        ):
            body = await reply.read()
    finally:
        await runner.cleanup()

    assert len(big) > 3 * 2**20
    assert int(reply.headers["Content-Length"]) == len(big)
    assert body == big
