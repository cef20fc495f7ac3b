"""Settings: the TOML file, its environment overrides, and their errors.

Every key is optional and documented in ``config/ec2-import-monitor.toml``.
Unknown keys and unknown ``EC2_IMPORT_MONITOR_*`` variables are errors,
because a typo that silently falls back to a default is found only when an
import has already stalled unnoticed. Problems are collected, not raised one
at a time, so that one run of ``check-config`` shows all of them.

Standard AWS settings (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_EC2``, the shared files) are not read here: botocore
reads them itself, as it does for the AWS CLI.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails

from monitor.model import PHASES
from monitor.sharding import Shard
from monitor.webconfig import WebConfigSetting

DEFAULT_CONFIG_PATH = Path("/etc/ec2-import-monitor/config.toml")

#: sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus=78 relies on it.
EX_CONFIG = 78

ENV_PREFIX = "EC2_IMPORT_MONITOR_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"

#: The ``regions`` value that means every region enabled for the account.
ALL_REGIONS = "all"

GIB = 2.0**30

_PROGRAM = "ec2-import-monitor"


# Durations

_DURATION_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile("".join(f"(?:{_NUMBER}{unit})?" for unit, _ in _DURATION_UNITS))
_DURATION_HINT = '(use e.g. "90s", "45m", "2h")'


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"90s"``, ``"45m"``, ``"2h"``, ``"1h30m"``.

    Units are d, h, m and s, each at most once and largest first, so
    ``"30m1h"`` is refused as the slip it probably is. A bare number is
    refused too: ``"60"`` could mean seconds or minutes, and the wrong guess
    is a silent sixty-fold error.
    """
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        raise ValueError(f"{_show(text)} is not a duration {_DURATION_HINT}")

    return sum(
        float(count) * size
        for count, (_, size) in zip(match.groups(), _DURATION_UNITS, strict=True)
        if count is not None
    )


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration`, to the millisecond: 5400 -> "1h30m"."""
    remaining = max(seconds, 0.0)
    parts = []
    for unit, size in _DURATION_UNITS[:-1]:
        count = int(remaining // size)
        if count:
            parts.append(f"{count}{unit}")
            remaining -= count * size

    remaining = round(remaining, 3)
    if remaining or not parts:
        parts.append(f"{remaining:g}s")
    return "".join(parts)


def _duration_input(value: object, info: ValidationInfo) -> float:
    if isinstance(value, str):
        return parse_duration(value)

    # Python callers (tests, other modules) may pass seconds; a config file
    # may not, because `interval = 60` does not say which unit it means.
    from_config = isinstance(info.context, Mapping) and "source" in info.context
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not from_config and math.isfinite(seconds):
            return seconds

    raise ValueError(f"{_show(value)} is not a duration {_DURATION_HINT}")


#: Seconds, written in config as ``"90s"``, ``"45m"``, ``"2h"``, ``"1d"``, ``"1h30m"``.
Duration = Annotated[float, BeforeValidator(_duration_input)]


def _at_least(minimum: float) -> AfterValidator:
    def check(seconds: float) -> float:
        if seconds < minimum:
            raise ValueError(
                f"{format_duration(seconds)} is too short: "
                f"the minimum is {format_duration(minimum)}"
            )
        return seconds

    return AfterValidator(check)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
NonNegativeDuration = Annotated[Duration, _at_least(0.0)]


# Other value types


def _whole_number(value: object) -> object:
    # Environment values arrive as text; TOML's `true` must not pass as 1.
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{_show(value)} is not a whole number")


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _not_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"{_show(value)} is not a path")
    return value


def _whole_value_check(check: Callable[[object], str | None]) -> WrapValidator:
    """Run ``check`` on the raw value besides the usual validation of its items.

    Pydantic skips a list's after-validators once an item fails; running the
    check around it reports a repeated entry together with a bad one.
    """

    def validate(value: object, handler: ValidatorFunctionWrapHandler) -> Any:
        problem = check(value)
        try:
            result = handler(value)
        except ValidationError as error:
            if problem is None:
                raise
            details = [
                InitErrorDetails(
                    type=detail["type"],
                    loc=detail["loc"],
                    input=detail["input"],
                    ctx=detail.get("ctx", {}),
                )
                for detail in error.errors()
            ]
            details.append(
                InitErrorDetails(
                    type="value_error",
                    loc=(),
                    input=value,
                    ctx={"error": ValueError(problem)},
                )
            )
            raise ValidationError.from_exception_data(error.title, details) from None

        if problem is not None:
            raise ValueError(problem)
        return result

    return WrapValidator(validate)


# Targets

_TARGET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", re.ASCII)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


def _target_name(name: str) -> str:
    if not _TARGET_NAME.fullmatch(name):
        raise ValueError(
            f"{_show(name)} is not a target name (1 to 64 of A-Z a-z 0-9 _ . -)"
        )
    return name


def _region(region: str) -> str:
    if region != ALL_REGIONS and not _REGION.fullmatch(region):
        raise ValueError(f"{_show(region)} is not a region name")
    return region


def _region_list_problem(regions: object) -> str | None:
    if not isinstance(regions, list):
        return None
    if ALL_REGIONS in regions and len(regions) > 1:
        return f'"{ALL_REGIONS}" must be the only entry when it is used'

    texts = [region for region in regions if isinstance(region, str)]
    repeated = [region for region in dict.fromkeys(texts) if texts.count(region) > 1]
    if repeated:
        return (
            ", ".join(_show(region) for region in repeated) + " listed more than once"
        )
    return None


def _role_arn(arn: str) -> str:
    if not _ROLE_ARN.fullmatch(arn):
        raise ValueError(
            f"{_show(arn)} is not an IAM role ARN "
            "(like arn:aws:iam::123456789012:role/ImportWatcher)"
        )
    return arn


def _session_name(name: str) -> str:
    if not _SESSION_NAME.fullmatch(name):
        raise ValueError(
            f"{_show(name)} is not a role session name (2 to 64 of A-Z a-z 0-9 +=,.@_-)"
        )
    return name


def _endpoint_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        # .port raises ValueError for a port that is not a number in range.
        usable = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(
            f"{_show(url)} is not an http or https URL "
            '(like "https://ec2.eu-west-1.amazonaws.com")'
        )
    return url


Region = Annotated[str, AfterValidator(_region)]


def _at_most_12h(seconds: float) -> float:
    if seconds > 12 * 3600:
        raise ValueError(f"{format_duration(seconds)} is longer than 12h")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Section):
    """One account, as the ``account`` label, and the regions watched in it."""

    name: Annotated[str, AfterValidator(_target_name)]
    regions: Annotated[
        list[Region], Field(min_length=1), _whole_value_check(_region_list_problem)
    ]
    profile: Annotated[str, AfterValidator(_not_empty)] | None = None
    # Declared before external_id: the external_id check reads it.
    role_arn: Annotated[str, AfterValidator(_role_arn)] | None = None
    external_id: str | None = None
    role_session_name: Annotated[str, AfterValidator(_session_name)] = (
        "ec2-import-monitor"
    )
    # STS allows 15 minutes to 12 hours (bounded further by the role's own
    # maximum); the credentials are renewed 15 minutes before they expire.
    role_duration: Annotated[
        Duration, _at_least(900.0), AfterValidator(_at_most_12h)
    ] = parse_duration("1h")
    endpoint_url: Annotated[str, AfterValidator(_endpoint_url)] | None = None

    @field_validator("external_id")
    @classmethod
    def _external_id_needs_role(
        cls, external_id: str | None, info: ValidationInfo
    ) -> str | None:
        if external_id is None:
            return None
        if not _EXTERNAL_ID.fullmatch(external_id):
            raise ValueError("must be 2 to 1224 of A-Z a-z 0-9 +=,.@:/-")
        # A role_arn that failed its own check is missing from info.data and
        # is already reported; say nothing more about it here.
        if "role_arn" in info.data and info.data["role_arn"] is None:
            raise ValueError("only applies with role_arn, which is not set")
        return external_id


def default_targets(environ: Mapping[str, str] | None = None) -> list[Target]:
    """The target used when the config names none: the SDK's own region."""
    region = _default_region(os.environ if environ is None else environ)[1]
    return [Target(name="default", regions=[region])]


def _default_region(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(the variable it came from, the region), as the AWS SDKs choose it."""
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if environ.get(variable):
            return variable, environ[variable]
    return None, "us-east-1"


def _shard(text: str) -> str:
    return str(Shard.parse(text))


# Sections


class PollSettings(_Section):
    """How and how often DescribeImportImageTasks is called."""

    # Progress moves in steps of minutes and tasks run for hours, so a
    # minute loses nothing; it is one cheap call per region.
    interval: Annotated[Duration, _at_least(1.0)] = parse_duration("60s")
    # DescribeImportImageTasks documents no MaxResults bound; 500 is what we
    # ask for, so that a busy region still fits on one page.
    page_size: Annotated[WholeNumber, Field(ge=1, le=1000)] = 500
    concurrency: Annotated[WholeNumber, Field(ge=1, le=256)] = 8
    retry_mode: Annotated[Literal["standard", "adaptive"], BeforeValidator(_lower)] = (
        "standard"
    )
    # Counts the first try (botocore's total_max_attempts): one more than
    # standard mode's 3, for RequestLimitExceeded bursts.
    max_attempts: Annotated[WholeNumber, Field(ge=1, le=20)] = 4
    # botocore waits 60s for each by default, longer than a whole poll.
    connect_timeout: PositiveDuration = parse_duration("5s")
    read_timeout: PositiveDuration = parse_duration("20s")
    deadline: Annotated[Duration, _at_least(1.0)] | None = None
    # "i/n": this instance polls only the (target, region) pairs that
    # monitor.sharding assigns to shard i of n.
    shard: Annotated[str, AfterValidator(_shard)] = "1/1"

    @field_validator("deadline")
    @classmethod
    def _deadline_within_interval(
        cls, deadline: float | None, info: ValidationInfo
    ) -> float | None:
        interval = info.data.get("interval")
        if deadline is not None and interval is not None and deadline > interval:
            raise ValueError(
                f"{format_duration(deadline)} is longer than poll.interval "
                f"({format_duration(interval)}); a region's poll must end "
                "before the next one starts"
            )
        return deadline

    @property
    def region_deadline(self) -> float:
        """Seconds a region's poll may take before it counts as failed."""
        if self.deadline is not None:
            return self.deadline
        return 0.8 * self.interval


def _phase(name: str) -> str:
    if name not in PHASES:
        raise ValueError(f"{_show(name)} is not a phase (one of: {', '.join(PHASES)})")
    return name


Phase = Annotated[str, AfterValidator(_phase)]

# Conversion often holds one progress value for an hour or more on large
# disks, and a task can queue in pending while the service is busy.
_DEFAULT_PHASE_STALL = {"converting": "2h", "pending": "1h"}


def _with_default_phases(value: object) -> object:
    # Merged, so that setting one phase does not silently drop the others.
    if isinstance(value, Mapping):
        return {**_DEFAULT_PHASE_STALL, **value}
    return value


class StallSettings(_Section):
    """When an active task with no change counts as stalled."""

    after: PositiveDuration = parse_duration("45m")
    # Conversion time grows with disk size: 2 minutes per GiB gives a
    # 100 GiB import over three hours more before it is called stalled.
    per_gib: NonNegativeDuration = parse_duration("2m")
    phases: Annotated[
        dict[Phase, PositiveDuration], BeforeValidator(_with_default_phases)
    ] = Field(
        default_factory=lambda: {
            phase: parse_duration(text) for phase, text in _DEFAULT_PHASE_STALL.items()
        }
    )
    # Most imports end within a few hours; half a day is abnormal however
    # steadily it progresses.
    max_age: PositiveDuration = parse_duration("12h")

    def threshold(self, phase: str | None, total_size_bytes: float) -> float:
        """Seconds without change after which a task in ``phase`` is stalled."""
        base = self.after if phase is None else self.phases.get(phase, self.after)
        size = total_size_bytes if math.isfinite(total_size_bytes) else 0.0
        return base + self.per_gib * max(size, 0.0) / GIB


_LISTEN_HINT = '(use e.g. "127.0.0.1:8780" or "[::1]:8780")'


def _split_listen(text: str) -> tuple[str, int]:
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text.isdigit():
        raise ValueError(f"{_show(text)} is not HOST:PORT {_LISTEN_HINT}")

    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{_show(text)}: {_show(host)} is not an IPv6 address"
            ) from None
    elif ":" in host:
        raise ValueError(
            f"{_show(text)}: put an IPv6 address in brackets {_LISTEN_HINT}"
        )
    elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise ValueError(f"{_show(text)}: {_show(host)} is not a host name or address")

    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{_show(text)}: port {port} is not in 1..65535")
    return host, port


def _listen(text: str) -> str:
    _split_listen(text)
    return text


class MetricsSettings(_Section):
    """Where /metrics, the health checks and the status page are served."""

    # Loopback by default: the page shows account names and task details, and
    # nothing asks who is reading until a web_config adds TLS and basic auth;
    # exposing it takes both settings. The port is outside 9100-9999, where
    # most exporters already sit.
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8780"
    # TLS and basic auth, in the exporter-toolkit's format; none: plain HTTP.
    # The file, certificates and keys are loaded here, so check-config finds
    # every problem that would stop the server.
    web_config: WebConfigSetting | None = None

    @property
    def host(self) -> str:
        """The host to bind, IPv6 without brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


class StateSettings(_Section):
    """What survives a restart, and for how long."""

    path: Annotated[Path, BeforeValidator(_path)] = Path(
        "/var/lib/ec2-import-monitor/state.db"
    )
    # A day keeps a finished import on dashboards through the next shift.
    keep_ended: NonNegativeDuration = parse_duration("24h")
    keep_history: PositiveDuration = parse_duration("30d")


class LogSettings(_Section):
    """How much is logged, and in which format."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)
    ] = "info"
    # auto: JSON lines for journald, the console renderer on a terminal.
    format: Annotated[Literal["json", "console", "auto"], BeforeValidator(_lower)] = (
        "auto"
    )


def _repeated_names(targets: object) -> str | None:
    if not isinstance(targets, list):
        return None
    names = [
        item.name if isinstance(item, Target) else item.get("name")
        for item in targets
        if isinstance(item, Target | Mapping)
    ]
    for name in dict.fromkeys(names):
        if isinstance(name, str) and names.count(name) > 1:
            places = ", ".join(
                f"targets[{index}]"
                for index, other in enumerate(names)
                if other == name
            )
            return f"name {_show(name)} is used more than once ({places})"
    return None


class Settings(_Section):
    """The whole configuration; every key has a default."""

    poll: PollSettings = PollSettings()
    targets: Annotated[
        list[Target], Field(min_length=1), _whole_value_check(_repeated_names)
    ] = Field(default_factory=default_targets)
    stall: StallSettings = StallSettings()
    metrics: MetricsSettings = MetricsSettings()
    state: StateSettings = StateSettings()
    log: LogSettings = LogSettings()


# Loading


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` says why, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _sections() -> dict[str, type[BaseModel]]:
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type)
        and issubclass(field.annotation, BaseModel)
    }


def environment_variables() -> dict[str, tuple[str, str]]:
    """``EC2_IMPORT_MONITOR_<SECTION>_<KEY>`` -> (section, key), scalars only."""
    names = {}
    for section, model in _sections().items():
        for key, field in model.model_fields.items():
            if get_origin(field.annotation) in (dict, list):
                continue  # a table such as stall.phases: only in the file
            names[f"{ENV_PREFIX}{section.upper()}_{key.upper()}"] = (section, key)
    return names


def config_path(
    path: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """The file :func:`load_settings` reads, or ``None`` for all defaults."""
    if path is not None:
        return path
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])

    try:
        DEFAULT_CONFIG_PATH.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        pass  # there but not reachable: reading it reports why
    return DEFAULT_CONFIG_PATH


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Settings:
    """Read the config file, apply environment overrides, validate it all.

    Raises :class:`ConfigError` listing every problem found.
    """
    source = config_path(path, environ)
    problems = []
    data: dict[str, Any] = {}
    if source is not None:
        data, problem = _read_toml(source)
        if problem:
            problems.append(problem)

    owners, env_problems = _apply_environment(data, environ)
    problems.extend(env_problems)

    if "targets" not in data:
        variable, region = _default_region(environ)
        data["targets"] = [{"name": "default", "regions": [region]}]
        if variable is not None:
            owners[("targets",)] = variable

    label = str(source) if source is not None else "defaults"
    try:
        settings = Settings.model_validate(data, context={"source": label})
    except ValidationError as error:
        problems.extend(_problem_lines(error, label, owners))
        raise ConfigError(problems) from None

    if problems:
        raise ConfigError(problems)
    return settings


def validate_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Settings from data already in hand (a command's flags, a test's dict).

    Validated as a file would be, so durations need their units; problems
    come as :class:`ConfigError` lines naming ``source``.
    """
    try:
        return Settings.model_validate(dict(data), context={"source": source})
    except ValidationError as error:
        raise ConfigError(_problem_lines(error, source, {})) from None


def print_problems(error: ConfigError, stream: TextIO | None = None) -> None:
    """Each problem on its own line, as ``check-config`` and ``run`` show them."""
    out = sys.stderr if stream is None else stream
    for problem in error.problems:
        print(f"{_PROGRAM}: config error: {problem}", file=out)


def load_or_exit(path: Path | None = None) -> Settings:
    """:func:`load_settings`, or the problems on stderr and exit status 78."""
    try:
        return load_settings(path)
    except ConfigError as error:
        print_problems(error)
        raise SystemExit(EX_CONFIG) from None


def _read_toml(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        return {}, f"{path}: cannot read: {error.strerror or error}"

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return {}, f"{path}: line {line}: not UTF-8 text"

    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as error:
        return {}, f"{path}: {_toml_position(error)}"


def _toml_position(error: tomllib.TOMLDecodeError) -> str:
    # Python 3.11's TOMLDecodeError has only its message, which ends with the
    # position; put the position first, as compilers do.
    message = str(error)
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
    if found:
        reason, line, column = found.groups()
        return f"line {line}, column {column}: {reason}"
    found = re.fullmatch(r"(.*) \(at end of document\)", message, re.DOTALL)
    if found:
        return f"at end of file: {found.group(1)}"
    return message


def _apply_environment(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[tuple[str | int, ...], str], list[str]]:
    """Merge overrides into ``data``; return who set what, and the problems."""
    known = environment_variables()
    owners: dict[tuple[str | int, ...], str] = {}
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name not in known:
            problems.append(f"{name}: {_unknown_variable(name, known)}")
            continue

        section, key = known[name]
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the file's section is not a table: reported as such
        value = environ[name]
        optional = _sections()[section].model_fields[key].default is None
        table[key] = None if optional and value == "" else value
        owners[(section, key)] = name
    return owners, problems


def _unknown_variable(name: str, known: Mapping[str, tuple[str, str]]) -> str:
    for section, model in _sections().items():
        for key in model.model_fields:
            if name == f"{ENV_PREFIX}{section.upper()}_{key.upper()}":
                return f"{section}.{key} is a table and can only be set in the file"

    # Compared without the shared prefix, which would make any two look alike.
    suffixes = [
        known_name.removeprefix(ENV_PREFIX) for known_name in [*known, CONFIG_ENV]
    ]
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
    hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
    return "unknown variable" + hint


def _problem_lines(
    error: ValidationError, label: str, owners: Mapping[tuple[str | int, ...], str]
) -> list[str]:
    lines = []
    for detail in error.errors(include_url=False):
        loc = tuple(part for part in detail["loc"] if part != "[key]")
        message = _explain(detail, loc)
        owner = owners.get(loc[:2]) or owners.get(loc[:1])
        if owner is not None:
            lines.append(f"{owner}: {message}")
        else:
            lines.append(f"{label}: {_dotted(loc)}: {message}")
    return lines


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            text += f".{part}" if text else part
        else:
            text += f".{json.dumps(part)}" if text else json.dumps(part)
    return text


def _explain(detail: ErrorDetails, loc: Sequence[str | int]) -> str:
    """One line for one pydantic error, in the config file's terms."""
    kind = detail["type"]
    context = detail.get("ctx", {})
    value = detail["input"]

    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(context.get("error", detail["msg"]))
    if kind == "literal_error":
        expected = str(context.get("expected", "")).replace("'", '"')
        return f"{_show(value)} is not one of {expected}"
    if kind == "greater_than_equal":
        return f"{_show(value)} is too small: the minimum is {context.get('ge')}"
    if kind == "less_than_equal":
        return f"{_show(value)} is too large: the maximum is {context.get('le')}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "string_type":
        return f"expected a string, not {_show(value)}"
    if kind == "list_type":
        return f"expected a list, not {_show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a table, not {_show(value)}"
    return str(detail["msg"]).splitlines()[0]


def _keys_at(loc: Sequence[str | int]) -> list[str]:
    """The keys the model accepts at ``loc``, for did-you-mean hints."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        else:
            return []
    return list(model.model_fields)


def _show(value: object) -> str:
    """A value as it would be written in TOML, kept short."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:76] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return repr(value)[:80]
