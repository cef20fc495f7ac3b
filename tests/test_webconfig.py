"""The web config: its YAML subset, its checks, and TLS and basic auth served.

Certificates come from a throwaway CA made with the real openssl for this
module; the TLS tests talk to the real app on a loopback port with aiohttp's
client, and one test has a real Prometheus scrape it with client certificate
and basic auth, as an ops host would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from monitor.config import EX_CONFIG, Settings
from monitor.daemon import Daemon
from monitor.simulator import Simulator, serve
from monitor.web import (
    Authenticator,
    WebState,
    basic_credentials,
    bound_port,
    build_app,
    start_server,
)
from monitor.webconfig import GO_CIPHER_SUITES, WebConfigError, load_web_config
from tests.conftest import free_port, require_tool
from tests.e2e import use_test_credentials

OPENSSL = "/usr/bin/openssl"
REPOSITORY = Path(__file__).resolve().parent.parent

#: Cost 4, bcrypt's minimum, keeps the tests fast; the cache test uses 10.
PASSWORD = "right horse battery"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()

EXPOSITION = b"# TYPE ec2_import_test gauge\nec2_import_test 1\n"

#: Bounds on each wait: a request, a subprocess, Prometheus's first scrape.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
COMMAND_TIMEOUT = 30.0
SCRAPE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1, clients from it and a rogue CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    encrypted_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path
    rogue_cert: Path
    rogue_key: Path


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        [OPENSSL, *map(str, args)],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
    )


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
        *("-nodes", "-days", "1", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign"),
        *("-keyout", key, "-out", cert),
        cwd=directory,
    )
    return cert, key


def make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    request, extfile = directory / f"{name}.csr", directory / f"{name}.ext"
    extfile.write_text(extensions)
    openssl(
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
        *("-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", request),
        cwd=directory,
    )
    openssl(
        *("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1]),
        *("-CAcreateserial", "-days", "1", "-extfile", extfile, "-out", cert),
        cwd=directory,
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    rogue_ca = make_ca(directory, "rogue-ca")
    server = make_leaf(
        directory,
        "server",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client = make_leaf(
        directory,
        "client",
        ca,
        "subjectAltName=DNS:prometheus.example\nextendedKeyUsage=clientAuth\n",
    )
    stranger = make_leaf(
        directory,
        "stranger",
        ca,
        "subjectAltName=DNS:stranger.example\nextendedKeyUsage=clientAuth\n",
    )
    rogue = make_leaf(
        directory,
        "rogue",
        rogue_ca,
        "subjectAltName=DNS:prometheus.example\nextendedKeyUsage=clientAuth\n",
    )
    encrypted = directory / "encrypted.key"
    openssl(
        *("pkey", "-in", server[1], "-aes256", "-passout", "pass:secret"),
        *("-out", encrypted),
        cwd=directory,
    )
    return Pki(ca[0], *server, encrypted, *client, *stranger, *rogue)


def write(directory: Path, text: str, name: str = "web-config.yml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def tls_config(pki: Pki, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n"
        f"  key_file: {pki.server_key}\n" + extra
    )


def client_tls(
    pki: Pki, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client that trusts the test CA, with a certificate if given one."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str


async def fetch(
    url: str,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.get(url, ssl=context or False, headers=headers) as response,
    ):
        body = await response.text()
        return Reply(response.status, dict(response.headers), body)


async def refused(url: str, context: ssl.SSLContext | None = None) -> BaseException:
    """The client error a request ends with; a timeout would not count."""
    with pytest.raises(aiohttp.ClientError) as caught:
        await fetch(url, context)
    assert not isinstance(caught.value, TimeoutError), caught.value
    return caught.value


@asynccontextmanager
async def serving(path: Path) -> AsyncIterator[str]:
    """The real app with the web config at ``path``; yields host:port."""
    state = WebState(exposition=EXPOSITION, ready=lambda: True)
    runner = await start_server(build_app(state), "127.0.0.1", 0, load_web_config(path))
    try:
        yield f"127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


class TestFile:
    def test_a_toolkit_file_loads_with_paths_beside_it(
        self, pki: Pki, tmp_path: Path
    ) -> None:
        """The toolkit's own style (quotes, lists, comments) loads; relative
        certificate paths are read from the web config's directory."""
        for source in (pki.server_cert, pki.server_key, pki.ca):
            (tmp_path / source.name).write_bytes(source.read_bytes())
        path = write(
            tmp_path,
            "---\n"
            "# as node_exporter reads it\n"
            "tls_server_config:\n"
            '  cert_file: "server.crt"\n'
            "  key_file: server.key   # beside this file\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: 'ca.crt'\n"
            "  client_allowed_sans: [prometheus.example, '127.0.0.1']\n"
            "  min_version: TLS12\n"
            "  cipher_suites:\n"
            "  - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n"
            "  - TLS_AES_128_GCM_SHA256\n"
            "http_server_config:\n"
            "  http2: false\n"
            "  headers:\n"
            "    Content-Security-Policy: default-src 'self'\n"
            "basic_auth_users:\n"
            f"  alice: {HASH}\n"
            f'  "bob smith": "{HASH}"\n',
        )

        config = load_web_config(path)

        assert config.tls
        assert config.client_auth == "RequireAndVerifyClientCert"
        assert config.allowed_sans == {"prometheus.example", "127.0.0.1"}
        assert sorted(config.users) == ["alice", "bob smith"]
        assert config.headers == {"Content-Security-Policy": "default-src 'self'"}
        assert config.ssl_context is not None
        tls12 = {
            c["name"]
            for c in config.ssl_context.get_ciphers()
            if c["protocol"] == "TLSv1.2"
        }
        assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}

    def test_an_empty_file_serves_plain_http_without_auth(self, tmp_path: Path) -> None:
        """As in the toolkit, a file with no settings changes nothing."""
        path = write(tmp_path, "# nothing yet\n")

        config = load_web_config(path)

        assert (config.tls, dict(config.users)) == (False, {})

    def test_every_problem_is_one_line_with_its_line_number(
        self, tmp_path: Path
    ) -> None:
        """All problems are reported at once, in file order, each on one line."""
        path = write(
            tmp_path,
            "tls_server_config:\n"
            "  cert_fil: server.crt\n"
            "  client_auth_type: RequireAnyClientCert\n"
            "  min_version: TLS10\n"
            "basic_auth_users:\n"
            "  alice: hunter2\n"
            "http_server_config:\n"
            "  headers:\n"
            "    X-Frame-Options: allow\n",
        )

        with pytest.raises(WebConfigError) as caught:
            load_web_config(path)

        assert caught.value.problems == [
            f"{path}: line 1: tls_server_config: cert_file is needed to serve TLS",
            f"{path}: line 1: tls_server_config: key_file is needed to serve TLS",
            f"{path}: line 2: tls_server_config.cert_fil: unknown key "
            "(did you mean cert_file?)",
            f"{path}: line 3: tls_server_config.client_auth_type: "
            "RequireAnyClientCert is not supported: Python's ssl module verifies "
            "every client certificate it asks for (use RequireAndVerifyClientCert)",
            f"{path}: line 4: tls_server_config.min_version: TLS10 is not "
            "supported: Python refuses TLS before 1.2 (use TLS12)",
            f"{path}: line 6: basic_auth_users.alice: not a bcrypt hash (expected "
            "$2y$, $2b$ or $2a$, a cost, and 53 characters, as htpasswd -nBC 10 "
            "prints)",
            f'{path}: line 9: http_server_config.headers.X-Frame-Options: "allow" '
            "is not deny or sameorigin",
        ]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("a: &x 1\n", "line 1: anchors (&) are not supported"),
            ("a:\n\tb: 1\n", "line 2: a tab in the indentation"),
            ("a: |\n  x\n", "line 1: block scalars (| and >) are not supported"),
            ("rate_limit:\n  burst: 1\n  burst: 2\n", 'line 3: "burst" repeats'),
            ("a: {b: 1}\n", "line 1: flow mappings ({...}) are not supported"),
            ("a: 1\n---\nb: 2\n", "line 2: only one YAML document is allowed"),
            ("a: 'open\n", "line 1: the quoted value does not end on its line"),
            ("a: [b, c\n", "line 1: the [...] list does not end on its line"),
            ("a: b: c\n", 'line 1: a value holding ": " must be quoted'),
            ("a:\n  b: 1\n   c: 2\n", "line 3: unexpected indentation"),
            ("- a\n", "line 1: the file must hold keys, not a list"),
        ],
    )
    def test_yaml_outside_the_subset_is_refused_by_line(
        self, tmp_path: Path, text: str, problem: str
    ) -> None:
        """Constructs the parser does not take are named, never half read."""
        path = write(tmp_path, text)

        with pytest.raises(WebConfigError) as caught:
            load_web_config(path)

        assert len(caught.value.problems) == 1
        assert caught.value.problems[0].startswith(f"{path}: {problem}")

    def test_go_cipher_names_match_openssl(self) -> None:
        """Each Go suite name maps to the OpenSSL suite of the same IANA name."""
        listing = subprocess.run(
            [OPENSSL, "ciphers", "-stdname", "ALL:@SECLEVEL=0"],
            check=True,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        ).stdout
        iana = {fields[2]: fields[0] for fields in map(str.split, listing.splitlines())}

        mismatched = {
            go: openssl_name
            for go, openssl_name in GO_CIPHER_SUITES.items()
            if iana.get(openssl_name or go) != go
        }

        assert mismatched == {}


class TestCheckConfig:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            pytest.param(
                None, "{web}: cannot read: No such file or directory", id="missing"
            ),
            pytest.param(
                "basic_auth_user:\n  alice: x\n",
                "{web}: line 1: basic_auth_user: unknown key "
                "(did you mean basic_auth_users?)",
                id="unknown key",
            ),
            pytest.param(
                "basic_auth_users:\n  alice: correct-horse\n",
                "{web}: line 2: basic_auth_users.alice: not a bcrypt hash",
                id="bad hash",
            ),
            pytest.param(
                "tls_server_config:\n  cert_file: gone.crt\n  key_file: {key}\n",
                "{web}: line 2: tls_server_config.cert_file: {dir}/gone.crt: "
                "cannot read: No such file or directory",
                id="missing cert",
            ),
            pytest.param(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {other}\n",
                "{web}: line 3: tls_server_config.key_file: {other} is not the "
                "key of {cert}",
                id="key of another cert",
            ),
            pytest.param(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n",
                "{web}: line 3: tls_server_config.key_file: {cert} holds no PEM "
                "private key",
                id="not a key",
            ),
            pytest.param(
                "tls_server_config:\n  cert_file: {cert}\n  key_file: {encrypted}\n",
                "{web}: line 3: tls_server_config.key_file: {encrypted} is "
                "encrypted and a service cannot type its passphrase",
                id="encrypted key",
            ),
            pytest.param(
                "basic_auth_users:\n  alice: &hash x\n",
                "{web}: line 2: anchors (&) are not supported",
                id="outside the subset",
            ),
        ],
    )
    def test_a_bad_web_config_is_one_line_and_exit_78(
        self, pki: Pki, tmp_path: Path, text: str | None, problem: str
    ) -> None:
        """check-config names the file, the line and the problem, on one line."""
        web = tmp_path / "web-config.yml"
        fields = {
            "web": web,
            "dir": tmp_path,
            "cert": pki.server_cert,
            "key": pki.server_key,
            "other": pki.client_key,
            "encrypted": pki.encrypted_key,
        }
        if text is not None:
            write(tmp_path, text.format(**fields))
        config = write(tmp_path, monitor_toml(web), "config.toml")

        code, _, stderr = check_config(config)

        assert code == EX_CONFIG
        prefix = f"ec2-import-monitor: config error: {config}: metrics.web_config: "
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith(prefix + problem.format(**fields)), lines[0]
        assert "correct-horse" not in stderr

    def test_a_good_web_config_passes(self, pki: Pki, tmp_path: Path) -> None:
        """A file with TLS, client certificates and users is accepted."""
        web = write(
            tmp_path,
            tls_config(
                pki,
                "  client_auth_type: RequireAndVerifyClientCert\n"
                f"  client_ca_file: {pki.ca}\n",
            )
            + f"basic_auth_users:\n  prometheus: {HASH}\n",
        )
        config = write(tmp_path, monitor_toml(web), "config.toml")

        code, stdout, stderr = check_config(config)

        assert (code, stderr) == (0, "")
        assert stdout.startswith(f"config OK: {config}")


def monitor_toml(web_config: Path, listen: str = "127.0.0.1:8780") -> str:
    return (
        '[[targets]]\nname = "t"\nregions = ["us-east-1"]\n\n'
        f'[metrics]\nlisten = "{listen}"\nweb_config = "{web_config}"\n'
    )


def check_config(config: Path) -> tuple[int, str, str]:
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("EC2_IMPORT_MONITOR_")
    }
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", "--config", str(config)],
        cwd=REPOSITORY,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    return done.returncode, done.stdout, done.stderr


class TestTls:
    async def test_a_client_trusting_the_ca_is_served(
        self, pki: Pki, tmp_path: Path
    ) -> None:
        """With cert_file and key_file the endpoint is HTTPS."""
        path = write(tmp_path, tls_config(pki))

        async with serving(path) as address:
            reply = await fetch(f"https://{address}/metrics", client_tls(pki))

        assert (reply.status, reply.body) == (200, EXPOSITION.decode())

    async def test_plain_http_on_the_tls_port_fails(
        self, pki: Pki, tmp_path: Path
    ) -> None:
        """Nothing is served in clear text on a TLS port."""
        path = write(tmp_path, tls_config(pki))

        async with serving(path) as address:
            await refused(f"http://{address}/metrics")

    async def test_min_version_refuses_older_clients(
        self, pki: Pki, tmp_path: Path
    ) -> None:
        """min_version TLS13 turns a TLS 1.2 client away at the handshake."""
        path = write(tmp_path, tls_config(pki, "  min_version: TLS13\n"))
        old_client = client_tls(pki)
        old_client.maximum_version = ssl.TLSVersion.TLSv1_2

        async with serving(path) as address:
            await refused(f"https://{address}/metrics", old_client)

    @pytest.mark.parametrize(
        ("client", "served"),
        [("none", False), ("from the CA", True), ("from another CA", False)],
    )
    async def test_required_client_certificates_must_come_from_the_ca(
        self, pki: Pki, tmp_path: Path, client: str, served: bool
    ) -> None:
        """RequireAndVerifyClientCert serves only clients the CA vouches for."""
        path = write(
            tmp_path,
            tls_config(
                pki,
                "  client_auth_type: RequireAndVerifyClientCert\n"
                f"  client_ca_file: {pki.ca}\n",
            ),
        )
        context = {
            "none": client_tls(pki),
            "from the CA": client_tls(pki, pki.client_cert, pki.client_key),
            "from another CA": client_tls(pki, pki.rogue_cert, pki.rogue_key),
        }[client]

        async with serving(path) as address:
            url = f"https://{address}/metrics"
            if served:
                assert (await fetch(url, context)).status == 200
            else:
                await refused(url, context)

    @pytest.mark.parametrize(("who", "status"), [("client", 200), ("stranger", 403)])
    async def test_allowed_sans_pick_clients_of_the_ca(
        self, pki: Pki, tmp_path: Path, who: str, status: int
    ) -> None:
        """A certificate from the CA without an allowed SAN gets 403."""
        path = write(
            tmp_path,
            tls_config(
                pki,
                "  client_auth_type: RequireAndVerifyClientCert\n"
                f"  client_ca_file: {pki.ca}\n"
                "  client_allowed_sans:\n"
                "    - prometheus.example\n",
            ),
        )
        cert, key = {
            "client": (pki.client_cert, pki.client_key),
            "stranger": (pki.stranger_cert, pki.stranger_key),
        }[who]

        async with serving(path) as address:
            reply = await fetch(
                f"https://{address}/metrics", client_tls(pki, cert, key)
            )

        assert reply.status == status


class TestBasicAuth:
    @pytest.mark.parametrize(
        ("credentials", "status"),
        [
            (None, 401),
            (("prometheus", "wrong"), 401),
            (("nobody", PASSWORD), 401),
            (("prometheus", PASSWORD), 200),
        ],
    )
    async def test_metrics_need_the_right_user_and_password(
        self,
        pki: Pki,
        tmp_path: Path,
        credentials: tuple[str, str] | None,
        status: int,
    ) -> None:
        """/metrics answers 401 with a Basic challenge unless the pair matches."""
        path = write(
            tmp_path, tls_config(pki) + f"basic_auth_users:\n  prometheus: {HASH}\n"
        )
        headers = None if credentials is None else basic(*credentials)

        async with serving(path) as address:
            reply = await fetch(f"https://{address}/metrics", client_tls(pki), headers)

        assert reply.status == status
        if status == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")
        else:
            assert reply.body == EXPOSITION.decode()

    @pytest.mark.parametrize(
        ("path", "status"), [("/healthz", 200), ("/readyz", 401), ("/", 401)]
    )
    async def test_only_healthz_is_open(
        self, tmp_path: Path, path: str, status: int
    ) -> None:
        """Liveness stays open for load balancers; every other page needs auth."""
        config = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")

        async with serving(config) as address:
            reply = await fetch(f"http://{address}{path}")

        assert reply.status == status

    async def test_headers_are_set_on_every_response(self, tmp_path: Path) -> None:
        """http_server_config.headers reach refusals as well as pages."""
        config = write(
            tmp_path,
            "http_server_config:\n"
            "  headers:\n"
            "    X-Content-Type-Options: nosniff\n"
            "    X-Frame-Options: deny\n"
            f"basic_auth_users:\n  prometheus: {HASH}\n",
        )

        async with serving(config) as address:
            refused_reply = await fetch(f"http://{address}/metrics")
            served = await fetch(f"http://{address}/healthz")

        for reply in (refused_reply, served):
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert reply.headers["X-Frame-Options"] == "deny"

    async def test_rate_limit_refuses_beyond_the_burst(self, tmp_path: Path) -> None:
        """rate_limit lets ``burst`` requests through, then answers 429."""
        config = write(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 2\n")

        async with serving(config) as address:
            statuses = [
                (await fetch(f"http://{address}/healthz")).status for _ in range(3)
            ]

        assert statuses == [200, 200, 429]


class TestAuthenticator:
    async def test_fifty_scrapers_cost_one_bcrypt_check(self) -> None:
        """Concurrent requests with the same credentials share one check."""
        hashed = bcrypt.hashpw(b"scrape", bcrypt.gensalt(10))
        authenticator = Authenticator({"prometheus": hashed})

        async with asyncio.timeout(30):
            results = await asyncio.gather(
                *(authenticator.verify("prometheus", "scrape") for _ in range(50))
            )

        assert results == [True] * 50
        assert authenticator.checks == 1

    async def test_wrong_passwords_are_checked_every_time(self) -> None:
        """Only successes are cached, so a guess never rides on the cache."""
        authenticator = Authenticator({"prometheus": HASH.encode()})

        async with asyncio.timeout(10):
            results = [await authenticator.verify("prometheus", "guess") for _ in "ab"]

        assert (results, authenticator.checks) == ([False, False], 2)

    async def test_an_expired_entry_is_checked_again(self) -> None:
        """With no time to live every request pays for bcrypt again."""
        authenticator = Authenticator({"prometheus": HASH.encode()}, ttl=0.0)

        async with asyncio.timeout(10):
            for _ in range(2):
                assert await authenticator.verify("prometheus", PASSWORD)

        assert authenticator.checks == 2

    @pytest.mark.parametrize(
        ("header", "credentials"),
        [
            ("Basic " + base64.b64encode(b"a:b:c").decode(), ("a", "b:c")),
            ("basic " + base64.b64encode("é:ü".encode()).decode(), ("é", "ü")),
            ("Basic " + base64.b64encode(b"no colon").decode(), None),
            ("Basic !!!", None),
            ("Bearer abc", None),
        ],
    )
    def test_basic_credentials_are_decoded_strictly(
        self, header: str, credentials: tuple[str, str] | None
    ) -> None:
        """The password may hold colons; anything malformed is no credentials."""
        assert basic_credentials(header) == credentials


class TestDaemon:
    async def test_the_daemon_serves_its_web_config(
        self, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``[metrics] web_config`` reaches the running daemon's server."""
        use_test_credentials(monkeypatch)
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        web = write(tmp_path, tls_config(pki) + f"basic_auth_users:\n  ops: {HASH}\n")

        async with serve(Simulator(scenario="mixed", tasks=2, speed=0.0)) as endpoint:
            settings = Settings.model_validate(
                {
                    "targets": [
                        {
                            "name": "t",
                            "regions": ["us-east-1"],
                            "endpoint_url": endpoint.url,
                        }
                    ],
                    "metrics": {
                        "listen": f"127.0.0.1:{free_port()}",
                        "web_config": str(web),
                    },
                    "state": {"path": str(tmp_path / "state.db")},
                }
            )
            daemon = Daemon(settings)
            listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            running = asyncio.create_task(daemon.run(listening.set_result))
            try:
                async with asyncio.timeout(20):
                    port = await listening
                    url = f"https://127.0.0.1:{port}/metrics"
                    anonymous = await fetch(url, client_tls(pki))
                    ops = await fetch(url, client_tls(pki), basic("ops", PASSWORD))
            finally:
                daemon.stop.set()
                async with asyncio.timeout(20):
                    await running

        assert anonymous.status == 401
        assert ops.status == 200
        assert "ec2_import_monitor_build_info" in ops.body


class TestPrometheus:
    async def test_prometheus_scrapes_with_client_certificate_and_password(
        self, pki: Pki, tmp_path: Path
    ) -> None:
        """A real Prometheus with tls_config and basic_auth sees the target up."""
        prometheus = require_tool("prometheus", "/usr/bin/prometheus")
        web = write(
            tmp_path,
            tls_config(
                pki,
                "  client_auth_type: RequireAndVerifyClientCert\n"
                f"  client_ca_file: {pki.ca}\n",
            )
            + f"basic_auth_users:\n  prometheus: {HASH}\n",
        )

        async with serving(web) as address:
            health = await first_scrape(prometheus, address, pki, tmp_path)

        assert health == ("up", "")


async def first_scrape(
    prometheus: str, target: str, pki: Pki, tmp_path: Path
) -> tuple[str, str]:
    """The target's health and last error after Prometheus's first scrape."""
    port = free_port()
    config = write(
        tmp_path,
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: monitor\n"
        "    scheme: https\n"
        "    basic_auth:\n"
        "      username: prometheus\n"
        f"      password: '{PASSWORD}'\n"
        "    tls_config:\n"
        f"      ca_file: {pki.ca}\n"
        f"      cert_file: {pki.client_cert}\n"
        f"      key_file: {pki.client_key}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n",
        "prometheus.yml",
    )
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=log,
        )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            while True:
                try:
                    targets = json.loads((await fetch(f"{api}/targets")).body)
                except (aiohttp.ClientError, ValueError):
                    targets = {}
                active = targets.get("data", {}).get("activeTargets", [])
                if active and active[0]["health"] != "unknown":
                    return str(active[0]["health"]), str(active[0]["lastError"])
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"Prometheus never scraped: {log_path.read_text()[-2000:]}")
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except TimeoutError:
            process.kill()
            await process.wait()
