"""The HTTP side: /metrics, /healthz, /readyz and a landing page at /.

Handlers only read what the daemon already prepared: the exposition is
rendered once per poll, off the event loop, so a scrape costs a memory copy
however many tasks there are.

With a web config (see :mod:`monitor.webconfig`) the server speaks TLS and a
guard runs before every handler: the rate limit, the client certificate's
allowed SANs, then basic auth on every path but /healthz, which stays open
so that load balancers and systemd can probe liveness without a password.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

# The classic text format, which every Prometheus understands; the client
# library's "latest" names a 1.0.0 text format older servers do not know.
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from monitor.status_page import render_status_page
from monitor.tracker import TrackerState
from monitor.webconfig import RateLimit, WebConfig, normalise_san

log = structlog.get_logger(__name__)

#: Paths served without basic auth: liveness only, which reveals nothing.
OPEN_PATHS = frozenset({"/healthz"})

#: Slice of an uncompressed /metrics body written before waiting to drain.
CHUNK_BYTES = 1 << 20

#: How long a verified (user, password) pair is trusted without bcrypt again.
#: Two minutes spans two scrapes at Prometheus's default 1m interval, so a
#: steady scrape load costs one bcrypt check per credential every two minutes.
AUTH_CACHE_SECONDS = 120.0

#: The realm browsers show when they ask for a password.
REALM = "ec2-import-monitor"


@dataclass
class WebState:
    """What the handlers serve; the daemon replaces the fields after each poll."""

    exposition: bytes = b""
    #: The same exposition gzipped, for scrapers that accept it (Prometheus
    #: does): a tenth of the bytes, and of the memory each connection holds.
    exposition_gzip: bytes = b""
    tracker: TrackerState = field(default_factory=TrackerState)
    now: float = 0.0
    ready: Callable[[], bool] = lambda: False


def build_app(state: WebState) -> web.Application:
    async def metrics(request: web.Request) -> web.StreamResponse:
        if state.exposition_gzip and "gzip" in request.headers.get(
            "Accept-Encoding", ""
        ):
            return web.Response(
                body=state.exposition_gzip,
                headers={
                    "Content-Type": CONTENT_TYPE_PLAIN_0_0_4,
                    "Content-Encoding": "gzip",
                    "Vary": "Accept-Encoding",
                },
            )
        # Uncompressed, the exposition can be tens of MiB: written whole, each
        # slow reader would hold its own copy in the transport's buffer.
        # Chunks that wait for the socket to drain keep one copy in memory.
        response = web.StreamResponse(
            headers={
                "Content-Type": CONTENT_TYPE_PLAIN_0_0_4,
                "Vary": "Accept-Encoding",
            }
        )
        body = memoryview(state.exposition)
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), CHUNK_BYTES):
            await response.write(body[start : start + CHUNK_BYTES])
        await response.write_eof()
        return response

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


async def start_server(
    app: web.Application,
    host: str,
    port: int,
    web_config: WebConfig | None = None,
) -> web.AppRunner:
    """Start serving; the caller cleans the runner up on shutdown.

    ``web_config`` adds TLS, client certificates, basic auth, response
    headers and the rate limit it sets; without one the server is plain HTTP
    open to anyone who can reach ``host``.
    """
    if web_config is not None:
        secure(app, web_config)
        _describe(web_config, host)

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        host,
        port,
        reuse_address=True,
        ssl_context=None if web_config is None else web_config.ssl_context,
    )
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound, for ``listen = "...:0"`` in tests."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP server is not listening")


# The web config at request time


def secure(app: web.Application, config: WebConfig) -> None:
    """Add the web config's guard and headers to an app not yet started."""
    app.middlewares.append(_guard(config))

    if config.headers:

        async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(config.headers)

        app.on_response_prepare.append(add_headers)


def _guard(config: WebConfig) -> Middleware:
    limiter = (
        None
        if config.rate_limit is None
        else TokenBucket(config.rate_limit, time.monotonic())
    )
    authenticator = Authenticator(config.users) if config.users else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if limiter is not None and not limiter.allow(time.monotonic()):
            raise web.HTTPTooManyRequests()

        # Python's ssl cannot check SANs during the handshake, so a client
        # outside the list completes it and is refused here, on every request.
        if config.allowed_sans:
            transport = request.transport
            peercert = (
                None if transport is None else transport.get_extra_info("peercert")
            )
            if not peer_sans(peercert) & config.allowed_sans:
                log.info("http_client_refused", peer=request.remote, reason="san")
                raise web.HTTPForbidden(text="client certificate not allowed\n")

        if authenticator is not None and request.path not in OPEN_PATHS:
            await _authenticate(request, authenticator)
        return await handler(request)

    return guard


async def _authenticate(request: web.Request, authenticator: Authenticator) -> None:
    """Return if the request carries a valid user and password; else 401."""
    header = request.headers.get("Authorization")
    credentials = None if header is None else basic_credentials(header)
    if credentials is not None and await authenticator.verify(*credentials):
        return

    # Which user failed is not logged: a password typed into the user field
    # would end up in the journal.
    if header is not None:
        log.info("http_auth_failed", peer=request.remote, path=request.path)
    raise web.HTTPUnauthorized(
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        text="401: Unauthorized\n",
    )


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` value, else None."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # bad base64 or UTF-8 alike
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class TokenBucket:
    """The toolkit's rate limit: ``burst`` requests at once, refilled steadily."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now

    def allow(self, now: float) -> bool:
        elapsed = max(now - self.updated, 0.0)
        self.updated = now
        self.tokens = min(self.tokens + elapsed / self.limit.interval, self.limit.burst)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Authenticator:
    """Basic auth against bcrypt hashes, cheap for a steady scrape load.

    bcrypt is slow on purpose (about 80 ms at cost 10 here), so each verified
    (user, password, hash) is remembered for :data:`AUTH_CACHE_SECONDS` under
    an HMAC with a key made at start-up: memory holds no fast hash of a
    password. Checks run one at a time in a worker thread, which bounds the
    CPU a flood of wrong passwords can burn to one core, and a request that
    waited re-reads the cache first, so fifty scrapers arriving together
    cost one check. Failures are not cached, so there is at most one entry
    per user (bcrypt 5 refuses passwords over 72 bytes, so one hash has one
    password).
    """

    def __init__(self, users: Mapping[str, bytes], ttl: float = AUTH_CACHE_SECONDS):
        self.users = dict(users)
        self.ttl = ttl
        #: bcrypt checks run so far, for tests and measurements.
        self.checks = 0
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, float] = {}
        self._lock = asyncio.Lock()
        self._decoy: bytes | None = None

    async def verify(self, user: str, password: str) -> bool:
        """Whether the pair matches; never raises for odd input."""
        secret = password.encode("utf-8", "replace")
        hashed = self.users.get(user)
        cache_key = self._cache_key(user, hashed, secret)
        if hashed is not None and self._fresh(cache_key):
            return True

        async with self._lock:
            if hashed is not None and self._fresh(cache_key):
                return True
            if hashed is None:
                # An unknown user costs a check too, so response times do not
                # tell which user names exist.
                await asyncio.to_thread(self._check_decoy, secret)
                return False
            matched = await asyncio.to_thread(self._check, secret, hashed)

        if matched:
            now = time.monotonic()
            self._verified = {k: t for k, t in self._verified.items() if t > now}
            self._verified[cache_key] = now + self.ttl
        return matched

    def _cache_key(self, user: str, hashed: bytes | None, secret: bytes) -> bytes:
        name = user.encode("utf-8", "replace")
        message = len(name).to_bytes(4, "big") + name + (hashed or b"") + secret
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _fresh(self, cache_key: bytes) -> bool:
        expires = self._verified.get(cache_key)
        return expires is not None and expires > time.monotonic()

    def _check(self, secret: bytes, hashed: bytes) -> bool:
        self.checks += 1
        try:
            return bool(bcrypt.checkpw(secret, hashed))
        except ValueError:
            return False  # over 72 bytes: bcrypt 5 refuses rather than truncates

    def _check_decoy(self, secret: bytes) -> None:
        if self._decoy is None:
            # At the cost of a real hash, so that both take as long.
            some = next(iter(self.users.values()), b"$2b$10$")
            cost = int(some[4:6])
            self._decoy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._check(secret, self._decoy)


def peer_sans(peercert: Any) -> set[str]:
    """The DNS, e-mail, IP and URI SANs of a certificate from ``getpeercert()``."""
    if not isinstance(peercert, dict):
        return set()
    return {
        normalise_san(str(value))
        for kind, value in peercert.get("subjectAltName", ())
        if kind in ("DNS", "email", "IP Address", "URI")
    }


def _describe(config: WebConfig, host: str) -> None:
    log.info(
        "web_config_loaded",
        path=str(config.path),
        tls=config.tls,
        client_auth=config.client_auth,
        users=len(config.users),
        rate_limit=config.rate_limit is not None,
    )
    if config.users and not config.tls and not _is_loopback(host):
        log.warning(
            "basic_auth_without_tls",
            listen=host,
            reason="passwords cross the network in clear text",
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
