"""The HTTP side: /metrics, /healthz, /readyz and a landing page at /.

Handlers only read what the daemon already prepared: the exposition is
rendered once per poll, off the event loop, so a scrape costs a memory copy
however many tasks there are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from monitor.status_page import render_status_page
from monitor.tracker import TrackerState


@dataclass
class WebState:
    """What the handlers serve; the daemon replaces the fields after each poll."""

    exposition: bytes = b""
    tracker: TrackerState = field(default_factory=TrackerState)
    now: float = 0.0
    ready: Callable[[], bool] = lambda: False


def build_app(state: WebState) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=state.exposition, headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if state.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: first poll pending\n")

    async def index(_: web.Request) -> web.Response:
        # Thousands of rows take a tenth of a second to build: off the loop.
        html = await asyncio.to_thread(render_status_page, state.tracker, state.now)
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving; the caller cleans the runner up on shutdown."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound, for ``listen = "...:0"`` in tests."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP server is not listening")
