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
