"""The web config file: opt-in TLS and basic auth for the HTTP endpoint.

The format is the Prometheus exporter-toolkit's ``--web.config.file``, so the
file that secures node_exporter on a host can secure this monitor too. The
whole file is checked when the settings are loaded, certificates and keys
included, so ``check-config`` finds whatever would stop the daemon serving.
What the toolkit accepts but Python's ssl module cannot do is refused by
name, never silently ignored.

The file is YAML, read by the strict subset parser in monitor/yamlsubset.py.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import PlainValidator, ValidationError
from pydantic_core import InitErrorDetails

from monitor.yamlsubset import (
    FALSE,
    NULLS,
    TRUE,
    YamlError,
    YamlList,
    YamlMap,
    YamlNode,
    YamlScalar,
    parse_yaml_subset,
    quoted,
)


class WebConfigError(Exception):
    """The web config cannot be used; ``problems`` says why, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# The schema


#: Go's crypto/tls names (tls.CipherSuites(), the suites the toolkit takes)
#: to OpenSSL's. TLS 1.3 suites map to None: Go ignores them in the list and
#: so does OpenSSL's cipher string, TLS 1.3 suites being fixed in both.
GO_CIPHER_SUITES: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
}

#: The toolkit's curve names to OpenSSL's.
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OLD_VERSIONS = ("TLS10", "TLS11")

#: client_auth_type -> verify mode. Python's ssl module verifies every
#: certificate it asks for, so the toolkit's two "ask but accept anything"
#: modes cannot be offered.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = (
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
)

#: The response headers the toolkit lets a web config set, and the values it
#: accepts where they are an enumeration.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TLS_KEYS = (
    *("cert_file", "key_file", "client_auth_type", "client_ca_file"),
    *("client_allowed_sans", "min_version", "max_version", "cipher_suites"),
    *("prefer_server_cipher_suites", "curve_preferences"),
)
_INLINE_PEM = {
    "cert": "inline PEM is not supported: put it in a file and use cert_file",
    "key": "inline PEM is not supported: put it in a file and use key_file",
    "client_ca": "inline PEM is not supported: put it in a file and use client_ca_file",
}
_SECTIONS = (
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
)

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY = b"PRIVATE KEY-----"
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_GO_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    **{"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3},
    **{"s": 1.0, "m": 60.0, "h": 3600.0},
}


@dataclass(frozen=True)
class RateLimit:
    """The toolkit's token bucket: one request per ``interval``, ``burst`` at once."""

    interval: float
    burst: int


@dataclass(frozen=True, eq=False)
class WebConfig:
    """A loaded web config: what the HTTP server applies at start-up."""

    path: Path
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    client_auth: str = "NoClientCert"
    #: Normalised SAN values a client certificate must show one of; empty: any.
    allowed_sans: frozenset[str] = frozenset()
    #: user -> bcrypt hash. Never logged or shown.
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


@dataclass
class _Reader:
    """Collects every problem of one file, each as one line."""

    base: Path
    problems: list[tuple[int, str]] = field(default_factory=list)

    def problem(self, line: int, where: str, message: str) -> None:
        self.problems.append((line, f"line {line}: {where}: {message}"))

    def table(
        self, line: int, node: YamlNode, where: str
    ) -> dict[str, tuple[int, YamlNode]]:
        if node is None:
            return {}
        if isinstance(node, YamlMap):
            return node.entries
        self.problem(line, where, f"expected keys under it, not {_kind(node)}")
        return {}

    def known(
        self,
        entries: Mapping[str, tuple[int, YamlNode]],
        keys: tuple[str, ...],
        where: str,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        for key, (line, _) in entries.items():
            if refused and key in refused:
                self.problem(line, _dotted(where, key), refused[key])
            elif key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.problem(line, _dotted(where, key), "unknown key" + hint)

    def text(
        self, entries: Mapping[str, tuple[int, YamlNode]], key: str, where: str
    ) -> YamlScalar | None:
        """The key's one value; None when absent or empty, as in the toolkit."""
        if key not in entries:
            return None
        line, node = entries[key]
        if _is_null(node):
            return None
        if not isinstance(node, YamlScalar):
            self.problem(
                line, _dotted(where, key), f"expected one value, not {_kind(node)}"
            )
            return None
        return node

    def texts(
        self, entries: Mapping[str, tuple[int, YamlNode]], key: str, where: str
    ) -> list[YamlScalar]:
        if key not in entries:
            return []
        line, node = entries[key]
        if _is_null(node):
            return []
        if not isinstance(node, YamlList):
            self.problem(
                line, _dotted(where, key), f"expected a list, not {_kind(node)}"
            )
            return []
        return list(node.items)

    def flag(
        self,
        entries: Mapping[str, tuple[int, YamlNode]],
        key: str,
        where: str,
        default: bool,
    ) -> bool:
        value = self.text(entries, key, where)
        if value is None:
            return default
        if value.plain and value.text in TRUE | FALSE:
            return value.text in TRUE
        self.problem(value.line, _dotted(where, key), "expected true or false")
        return default

    def path(
        self, entries: Mapping[str, tuple[int, YamlNode]], key: str, where: str
    ) -> tuple[Path, int] | None:
        value = self.text(entries, key, where)
        if value is None:
            return None
        # Relative to the web config's own directory, as the toolkit does.
        return self.base / value.text, value.line


def load_web_config(path: Path) -> WebConfig:
    """Read, check and load a web config; :class:`WebConfigError` lists problems.

    Each problem is one line starting with the file's path.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise WebConfigError(
            [f"{path}: cannot read: {error.strerror or error}"]
        ) from None

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise WebConfigError([f"{path}: line {line}: not UTF-8 text"]) from None

    try:
        root = parse_yaml_subset(text)
    except YamlError as error:
        raise WebConfigError([f"{path}: {error}"]) from None

    reader = _Reader(path.parent)
    config = _read(root, path, reader)
    if reader.problems or config is None:
        ordered = sorted(reader.problems, key=lambda problem: problem[0])
        raise WebConfigError([f"{path}: {text}" for _, text in ordered])
    return config


def _read(root: YamlMap, path: Path, reader: _Reader) -> WebConfig | None:
    reader.known(root.entries, _SECTIONS, "")
    sections = {
        name: reader.table(*root.entries.get(name, (root.line, None)), name)
        for name in _SECTIONS
    }
    tls_line = root.entries.get("tls_server_config", (root.line, None))[0]

    users = _read_users(sections["basic_auth_users"], reader)
    headers = _read_headers(sections["http_server_config"], reader)
    rate_limit = _read_rate_limit(sections["rate_limit"], reader)
    tls = _read_tls(sections["tls_server_config"], tls_line, reader)
    if reader.problems:
        return None

    context, client_auth, sans = tls
    return WebConfig(
        path=path,
        ssl_context=context,
        client_auth=client_auth,
        allowed_sans=sans,
        users=users,
        headers=headers,
        rate_limit=rate_limit,
    )


def _read_users(
    entries: Mapping[str, tuple[int, YamlNode]], reader: _Reader
) -> dict[str, bytes]:
    users = {}
    for user, (line, node) in entries.items():
        where = _dotted("basic_auth_users", user)
        if not user:
            reader.problem(line, where, "a user name cannot be empty")
            continue
        if ":" in user:
            reader.problem(
                line, where, 'a user name cannot hold ":": basic auth splits there'
            )
            continue

        # The value is never shown: it may be a password pasted by mistake.
        hashed = node.text if isinstance(node, YamlScalar) else ""
        found = _BCRYPT_HASH.fullmatch(hashed)
        if found is None or not 4 <= int(found.group(1)) <= 31:
            reader.problem(
                line,
                where,
                "not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost, and 53 "
                "characters, as htpasswd -nBC 10 prints)",
            )
            continue
        users[user] = hashed.encode("ascii")
    return users


def _read_headers(
    entries: Mapping[str, tuple[int, YamlNode]], reader: _Reader
) -> dict[str, str]:
    where = "http_server_config"
    reader.known(entries, ("http2", "headers"), where)
    # HTTP/2 is accepted and has no effect: aiohttp serves HTTP/1.1, which
    # every client that offers HTTP/2 also speaks.
    reader.flag(entries, "http2", where, default=True)

    headers = {}
    line, node = entries.get("headers", (0, None))
    table = reader.table(line, node, f"{where}.headers")
    for name in table:
        key_where = _dotted(f"{where}.headers", name)
        if name not in HEADERS:
            close = difflib.get_close_matches(name, HEADERS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            reader.problem(
                table[name][0], key_where, "this header cannot be set" + hint
            )
            continue

        value = reader.text(table, name, f"{where}.headers")
        if value is None or not value.text:
            continue  # blank: header unset, as in the toolkit
        allowed = HEADERS[name]
        if allowed and value.text not in allowed:
            choices = " or ".join(allowed)
            reader.problem(
                value.line, key_where, f"{quoted(value.text)} is not {choices}"
            )
        elif any(ord(char) < 32 or ord(char) == 127 for char in value.text):
            reader.problem(value.line, key_where, "control characters are not allowed")
        else:
            headers[name] = value.text
    return headers


def _read_rate_limit(
    entries: Mapping[str, tuple[int, YamlNode]], reader: _Reader
) -> RateLimit | None:
    where = "rate_limit"
    reader.known(entries, ("interval", "burst"), where)
    interval_text = reader.text(entries, "interval", where)
    burst_text = reader.text(entries, "burst", where)

    interval = 0.0
    if interval_text is not None:
        seconds = parse_go_duration(interval_text.text)
        if seconds is None:
            reader.problem(
                interval_text.line,
                f"{where}.interval",
                f"{quoted(interval_text.text)} is not a duration"
                ' (like "1s" or "100ms")',
            )
        else:
            interval = seconds
    if interval == 0.0:
        return None  # "0s", or absent: no rate limit, as in the toolkit

    burst = 0
    if burst_text is not None and burst_text.plain and burst_text.text.isdigit():
        burst = int(burst_text.text)
    if burst < 1:
        line = burst_text.line if burst_text else entries["interval"][0]
        reader.problem(
            line,
            f"{where}.burst",
            "must be a whole number of at least 1: with 0 every request is refused",
        )
    return RateLimit(interval, burst)


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration such as ``"1s"`` or ``"1m30s"``; None if not one."""
    if text == "0":
        return 0.0
    if not _GO_DURATION.fullmatch(text):
        return None
    return sum(
        float(number) * _GO_UNITS[unit]
        for number, unit in _GO_DURATION_PART.findall(text)
    )


def _read_tls(
    entries: Mapping[str, tuple[int, YamlNode]], line: int, reader: _Reader
) -> tuple[ssl.SSLContext | None, str, frozenset[str]]:
    where = "tls_server_config"
    reader.known(entries, _TLS_KEYS, where, refused=_INLINE_PEM)
    if all(_is_null(node) for _, node in entries.values()):
        return None, "NoClientCert", frozenset()
    before = len(reader.problems)

    # Every file is read even when other keys are wrong, so that one run of
    # check-config reports them all.
    cert = _pem(entries, "cert_file", _PEM_CERTIFICATE, reader)
    key = _pem(entries, "key_file", _PEM_KEY, reader)
    ca = _pem(entries, "client_ca_file", _PEM_CERTIFICATE, reader)
    # The toolkit serves plain HTTP when only, say, min_version is set; a
    # file that mentions TLS but would not serve it is refused instead.
    for name in ("cert_file", "key_file"):
        if _is_null(entries.get(name, (0, None))[1]):
            reader.problem(line, where, f"{name} is needed to serve TLS")

    client_auth, mode = _client_auth(entries, where, reader)
    has_ca = not _is_null(entries.get("client_ca_file", (0, None))[1])
    if has_ca and mode == ssl.CERT_NONE:
        reader.problem(
            entries["client_ca_file"][0],
            f"{where}.client_ca_file",
            "set, but client_auth_type is NoClientCert: set it to "
            "RequireAndVerifyClientCert",
        )
    if not has_ca and mode is not None and mode != ssl.CERT_NONE:
        reader.problem(
            line,
            where,
            f"client_auth_type {client_auth} needs client_ca_file, the CA that "
            "signs client certificates",
        )
    sans = _allowed_sans(entries, where, mode, reader)

    lowest = _version(entries, "min_version", where, "TLS12", reader)
    highest = _version(entries, "max_version", where, "TLS13", reader)
    if lowest > highest:
        reader.problem(line, where, "min_version is above max_version")
    ciphers = _ciphers(entries, where, reader)
    curve = _curve(entries, where, reader)
    prefer_server = reader.flag(entries, "prefer_server_cipher_suites", where, True)

    if len(reader.problems) > before or not (cert and key and mode is not None):
        return None, client_auth, sans

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = lowest, highest
    if not prefer_server:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError:
            reader.problem(
                entries["cipher_suites"][0],
                f"{where}.cipher_suites",
                "none of these suites is in this build of OpenSSL",
            )
    if curve is not None:
        context.set_ecdh_curve(curve)
    _load_pair(context, cert, key, reader)
    if ca is not None:
        _load_client_ca(context, ca, reader)
        context.verify_mode = mode
    return context, client_auth, sans


def _client_auth(
    entries: Mapping[str, tuple[int, YamlNode]], where: str, reader: _Reader
) -> tuple[str, ssl.VerifyMode | None]:
    """The type's name and verify mode; None for a type that cannot be used."""
    value = reader.text(entries, "client_auth_type", where)
    if value is None:
        return "NoClientCert", ssl.CERT_NONE
    if value.text in CLIENT_AUTH:
        return value.text, CLIENT_AUTH[value.text]

    if value.text in _UNVERIFIED_CLIENT_AUTH:
        message = (
            f"{value.text} is not supported: Python's ssl module verifies every "
            "client certificate it asks for (use RequireAndVerifyClientCert)"
        )
    else:
        message = f"{quoted(value.text)} is not one of {', '.join(CLIENT_AUTH)}"
    reader.problem(value.line, f"{where}.client_auth_type", message)
    return value.text, None


def _allowed_sans(
    entries: Mapping[str, tuple[int, YamlNode]],
    where: str,
    mode: ssl.VerifyMode | None,
    reader: _Reader,
) -> frozenset[str]:
    sans = reader.texts(entries, "client_allowed_sans", where)
    if sans and mode not in (ssl.CERT_REQUIRED, None):
        reader.problem(
            sans[0].line,
            f"{where}.client_allowed_sans",
            "needs client_auth_type RequireAndVerifyClientCert: with any other "
            "type a client may send no certificate to match",
        )
    return frozenset(normalise_san(san.text) for san in sans)


def normalise_san(value: str) -> str:
    """A SAN as compared: IP addresses in their canonical form, the rest as is."""
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _version(
    entries: Mapping[str, tuple[int, YamlNode]],
    key: str,
    where: str,
    default: str,
    reader: _Reader,
) -> ssl.TLSVersion:
    value = reader.text(entries, key, where)
    name = default if value is None else value.text
    if name in _VERSIONS:
        return _VERSIONS[name]

    assert value is not None
    if name in _OLD_VERSIONS:
        message = f"{name} is not supported: Python refuses TLS before 1.2 (use TLS12)"
    else:
        message = f"{quoted(name)} is not one of TLS12, TLS13"
    reader.problem(value.line, f"{where}.{key}", message)
    return _VERSIONS[default]


def _ciphers(
    entries: Mapping[str, tuple[int, YamlNode]], where: str, reader: _Reader
) -> list[str]:
    names = []
    for item in reader.texts(entries, "cipher_suites", where):
        if item.text not in GO_CIPHER_SUITES:
            close = difflib.get_close_matches(item.text, GO_CIPHER_SUITES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            reader.problem(
                item.line,
                f"{where}.cipher_suites",
                f"unknown cipher suite {quoted(item.text)}{hint}",
            )
            continue
        openssl_name = GO_CIPHER_SUITES[item.text]
        if openssl_name is not None:
            names.append(openssl_name)
    return names


def _curve(
    entries: Mapping[str, tuple[int, YamlNode]], where: str, reader: _Reader
) -> str | None:
    curves = reader.texts(entries, "curve_preferences", where)
    for item in curves:
        if item.text not in CURVES:
            reader.problem(
                item.line,
                f"{where}.curve_preferences",
                f"{quoted(item.text)} is not one of {', '.join(CURVES)}",
            )
            return None
    if len(curves) > 1:
        reader.problem(
            curves[1].line,
            f"{where}.curve_preferences",
            "Python's ssl module can set only one curve: list one, or none for "
            "OpenSSL's defaults",
        )
        return None
    return CURVES[curves[0].text] if curves else None


@dataclass(frozen=True)
class _File:
    key: str
    path: Path
    line: int
    data: bytes


def _pem(
    entries: Mapping[str, tuple[int, YamlNode]],
    key: str,
    marker: bytes,
    reader: _Reader,
) -> _File | None:
    """The named file's bytes, if it can be read and holds the PEM block."""
    where = f"tls_server_config.{key}"
    found = reader.path(entries, key, "tls_server_config")
    if found is None:
        return None

    path, line = found
    try:
        data = path.read_bytes()
    except OSError as error:
        reader.problem(line, where, f"{path}: cannot read: {error.strerror or error}")
        return None
    if marker not in data:
        what = "certificate" if marker == _PEM_CERTIFICATE else "private key"
        reader.problem(line, where, f"{path} holds no PEM {what}")
        return None
    return _File(key, path, line, data)


class _Encrypted(Exception):
    pass


def _no_passphrase() -> str:
    # Called only for an encrypted key; without it OpenSSL would prompt on
    # the terminal, which a service does not have.
    raise _Encrypted


def _load_pair(
    context: ssl.SSLContext, cert: _File, key: _File, reader: _Reader
) -> None:
    where = "tls_server_config.key_file"
    try:
        context.load_cert_chain(cert.path, key.path, password=_no_passphrase)
    except _Encrypted:
        reader.problem(
            key.line,
            where,
            f"{key.path} is encrypted and a service cannot type its passphrase "
            "(decrypt it with openssl pkey)",
        )
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            message = f"{key.path} is not the key of {cert.path}"
        else:
            message = f"{cert.path} with {key.path}: {error.reason or error}"
        reader.problem(key.line, where, message)


def _load_client_ca(context: ssl.SSLContext, ca: _File, reader: _Reader) -> None:
    try:
        context.load_verify_locations(cadata=ca.data.decode("ascii", "replace"))
    except ssl.SSLError as error:
        reader.problem(
            ca.line,
            "tls_server_config.client_ca_file",
            f"{ca.path}: {error.reason or error}",
        )


def _is_null(node: YamlNode) -> bool:
    """A key with no value, or YAML's null: unset, as the toolkit reads it."""
    return node is None or (
        isinstance(node, YamlScalar) and node.plain and node.text in NULLS
    )


def _kind(node: YamlNode) -> str:
    if isinstance(node, YamlMap):
        return "keys"
    if isinstance(node, YamlList):
        return "a list"
    return "a single value"


def _dotted(where: str, key: str) -> str:
    shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else quoted(key)
    return f"{where}.{shown}" if where else shown


# Settings integration


def _from_setting(value: object) -> WebConfig:
    """Pydantic's side: a path in the settings becomes a loaded WebConfig."""
    if isinstance(value, WebConfig):
        return value
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    if not isinstance(value, str | Path):
        raise ValueError("expected the path of a web config file")

    try:
        return load_web_config(Path(value))
    except WebConfigError as error:
        details = [
            InitErrorDetails(
                type="value_error",
                loc=(),
                input=str(value),
                ctx={"error": ValueError(problem)},
            )
            for problem in error.problems
        ]
        raise ValidationError.from_exception_data("web_config", details) from None


#: The ``[metrics] web_config`` setting: a path in, a loaded WebConfig out.
WebConfigSetting = Annotated[WebConfig, PlainValidator(_from_setting)]
