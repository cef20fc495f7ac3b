"""Settings: durations, the TOML file, environment overrides, error lines."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from monitor import config
from monitor.config import (
    CONFIG_ENV,
    EX_CONFIG,
    GIB,
    ConfigError,
    PollSettings,
    Settings,
    StallSettings,
    Target,
    default_targets,
    environment_variables,
    format_duration,
    load_or_exit,
    load_settings,
    parse_duration,
    validate_settings,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "ec2-import-monitor.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ)
    return caught.value.problems


@pytest.fixture
def no_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points the default config path at a file that does not exist."""
    missing = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", missing)
    return missing


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90.0),
            ("45m", 2700.0),
            ("2h", 7200.0),
            ("1d", 86400.0),
            ("1h30m", 5400.0),
            ("1d2h3m4s", 93784.0),
            ("1.5h", 5400.0),
            (" 30s ", 30.0),
            ("0s", 0.0),
        ],
    )
    def test_accepts_units_and_compounds(self, text: str, seconds: float) -> None:
        """Each unit, and units combined largest first, add up to seconds."""
        result = parse_duration(text)

        assert result == seconds

    @pytest.mark.parametrize(
        "text", ["90", "", "90x", "30m1h", "h", "-5m", "1h 30m", "1 h", "5 minutes"]
    )
    def test_rejects_bare_numbers_and_garbage(self, text: str) -> None:
        """Anything but number+unit parts fails with the accepted form shown."""
        with pytest.raises(ValueError, match="is not a duration") as caught:
            parse_duration(text)

        assert 'use e.g. "90s", "45m", "2h"' in str(caught.value)

    @given(st.integers(min_value=0, max_value=10**8))
    def test_format_is_the_inverse(self, seconds: int) -> None:
        """A formatted duration parses back to the same number of seconds."""
        text = format_duration(seconds)

        assert parse_duration(text) == seconds

    def test_format_is_compact(self) -> None:
        """Formatting uses the largest units: 5400 seconds is 1h30m."""
        assert [format_duration(s) for s in (5400, 90, 0.5, 0)] == [
            "1h30m",
            "1m30s",
            "0.5s",
            "0s",
        ]


class TestDurationField:
    def test_bare_number_in_file_is_refused(self, tmp_path: Path) -> None:
        """`interval = 60` could mean seconds or minutes, so a file may not say it."""
        path = write(tmp_path, "[poll]\ninterval = 60\n")

        problems = problems_of(path, {})

        assert problems == [
            f'{path}: poll.interval: 60 is not a duration (use e.g. "90s", "45m", "2h")'
        ]

    def test_python_callers_may_pass_seconds(self) -> None:
        """Code that builds settings directly can give plain seconds."""
        settings = PollSettings(interval=30, read_timeout=2.5)

        assert (settings.interval, settings.read_timeout) == (30.0, 2.5)

    def test_minimum_is_stated(self, tmp_path: Path) -> None:
        """A duration under its minimum says what the minimum is."""
        path = write(tmp_path, '[poll]\ninterval = "0.5s"\n')

        problems = problems_of(path, {})

        assert problems == [
            f"{path}: poll.interval: 0.5s is too short: the minimum is 1s"
        ]


class TestFindingTheFile:
    def test_no_file_anywhere_means_defaults(self, no_default_file: Path) -> None:
        """Without a named file or the default one, every key has its default."""
        settings = load_settings(None, {})

        assert settings == Settings(targets=default_targets({}))

    def test_default_path_is_read_when_present(self, no_default_file: Path) -> None:
        """The file at the default path is used when nothing else is named."""
        no_default_file.parent.mkdir()
        no_default_file.write_text('[poll]\ninterval = "2m"\n')

        settings = load_settings(None, {})

        assert settings.poll.interval == 120.0

    def test_variable_names_the_file(
        self, tmp_path: Path, no_default_file: Path
    ) -> None:
        """EC2_IMPORT_MONITOR_CONFIG names the file when no path is passed."""
        path = write(tmp_path, '[poll]\ninterval = "3m"\n')

        settings = load_settings(None, {CONFIG_ENV: str(path)})

        assert settings.poll.interval == 180.0

    def test_named_file_that_is_missing_is_an_error(self, tmp_path: Path) -> None:
        """A file someone named must exist; defaults would hide the mistake."""
        path = tmp_path / "nope.toml"

        problems = problems_of(path, {})

        assert problems == [f"{path}: cannot read: No such file or directory"]

    def test_toml_syntax_error_gives_line_and_column(self, tmp_path: Path) -> None:
        """A file that is not TOML is reported with where it went wrong."""
        path = write(tmp_path, '[poll]\ninterval = "60s"\npage_size = = 3\n')

        problems = problems_of(path, {})

        assert len(problems) == 1
        assert re.fullmatch(
            rf"{re.escape(str(path))}: line 3, column \d+: .+", problems[0]
        )

    def test_text_that_is_not_utf8_is_an_error(self, tmp_path: Path) -> None:
        """TOML is UTF-8; other bytes are reported, not guessed at."""
        path = tmp_path / "latin1.toml"
        path.write_bytes(b'[log]\nlevel = "\xe9"\n')

        problems = problems_of(path, {})

        assert problems == [f"{path}: line 2: not UTF-8 text"]


class TestProblems:
    def test_every_problem_is_reported_on_its_own_line(self, tmp_path: Path) -> None:
        """Several bad keys give one line each, naming the file and dotted key."""
        path = write(
            tmp_path,
            """
            [poll]
            interval = "90x"
            page_size = 0

            [[targets]]
            name = "prod"
            regions = ["us-east-1"]

            [[targets]]
            name = "dev"
            regions = ["us-east"]

            [metrics]
            listen = "8780"

            [log]
            colour = "yes"
            """,
        )

        problems = problems_of(path, {"EC2_IMPORT_MONITOR_LOG_LEVEL": "loud"})

        assert problems == [
            f'{path}: poll.interval: "90x" is not a duration '
            '(use e.g. "90s", "45m", "2h")',
            f"{path}: poll.page_size: 0 is too small: the minimum is 1",
            f'{path}: targets[1].regions[0]: "us-east" is not a region name',
            f'{path}: metrics.listen: "8780" is not HOST:PORT '
            '(use e.g. "127.0.0.1:8780" or "[::1]:8780")',
            'EC2_IMPORT_MONITOR_LOG_LEVEL: "loud" is not one of '
            '"debug", "info", "warning" or "error"',
            f"{path}: log.colour: unknown key",
        ]

    def test_unknown_key_suggests_a_near_one(self, tmp_path: Path) -> None:
        """A misspelt key names the key it probably meant."""
        path = write(tmp_path, '[pol]\n[[targets]]\nnmae = "x"\nregions = ["all"]\n')

        problems = problems_of(path, {})

        assert problems == [
            f"{path}: targets[0].name: required key is missing",
            f"{path}: targets[0].nmae: unknown key (did you mean name?)",
            f"{path}: pol: unknown key (did you mean poll?)",
        ]

    def test_a_section_that_is_not_a_table(self, tmp_path: Path) -> None:
        """A section given as a value is reported as such, not as a crash."""
        path = write(tmp_path, 'poll = 5\nlog = "debug"\n')

        problems = problems_of(path, {"EC2_IMPORT_MONITOR_POLL_INTERVAL": "2m"})

        assert problems == [
            f"{path}: poll: expected a table, not 5",
            f'{path}: log: expected a table, not "debug"',
        ]

    def test_wrong_types(self, tmp_path: Path) -> None:
        """Values of the wrong TOML type are named with the value given."""
        path = write(
            tmp_path,
            "[poll]\nconcurrency = true\nmax_attempts = 2.5\n"
            '[[targets]]\nname = 7\nregions = "us-east-1"\n',
        )

        problems = problems_of(path, {})

        assert problems == [
            f"{path}: poll.concurrency: true is not a whole number",
            f"{path}: poll.max_attempts: 2.5 is not a whole number",
            f"{path}: targets[0].name: expected a string, not 7",
            f'{path}: targets[0].regions: expected a list, not "us-east-1"',
        ]

    def test_lines_never_carry_pydantic_dumps(self, tmp_path: Path) -> None:
        """Each problem is one line in our words, without pydantic's wording."""
        path = write(tmp_path, "[state]\npath = 3\n[[targets]]\nregions = []\n")

        problems = problems_of(path, {})

        assert problems
        for line in problems:
            assert "\n" not in line
            assert "Input should" not in line
            assert "pydantic" not in line


class TestTargets:
    @pytest.mark.parametrize(
        ("target", "problem"),
        [
            ('name = "a b"\nregions = ["us-east-1"]', 'targets[0].name: "a b" is not'),
            ('name = "a"\nregions = []', "targets[0].regions: must not be empty"),
            (
                'name = "a"\nregions = ["all", "eu-west-1"]',
                'targets[0].regions: "all" must be the only entry',
            ),
            (
                'name = "a"\nregions = ["eu-west-1", "us-east-1", "eu-west-1"]',
                'targets[0].regions: "eu-west-1" listed more than once',
            ),
            (
                'name = "a"\nregions = ["us-east-1"]\n'
                'role_arn = "arn:aws:iam::12:role/x"',
                'targets[0].role_arn: "arn:aws:iam::12:role/x" is not an IAM role ARN',
            ),
            (
                'name = "a"\nregions = ["us-east-1"]\nexternal_id = "abc"',
                "targets[0].external_id: only applies with role_arn",
            ),
            (
                'name = "a"\nregions = ["us-east-1"]\nendpoint_url = "ftp://host"',
                'targets[0].endpoint_url: "ftp://host" is not an http or https URL',
            ),
            (
                'name = "a"\nregions = ["us-east-1"]\nendpoint_url = "http://h:99999"',
                'targets[0].endpoint_url: "http://h:99999" is not an http or https URL',
            ),
            (
                'name = "a"\nregions = ["us-east-1"]\nrole_session_name = "x"',
                'targets[0].role_session_name: "x" is not a role session name',
            ),
            ('name = "a"\nregions = ["us-east-1"]\nprofile = ""', "must not be empty"),
        ],
    )
    def test_bad_target(self, tmp_path: Path, target: str, problem: str) -> None:
        """Each kind of bad target entry has its own message."""
        path = write(tmp_path, f"[[targets]]\n{target}\n")

        problems = problems_of(path, {})

        assert len(problems) == 1
        assert problems[0].startswith(f"{path}: ")
        assert problem in problems[0]

    def test_full_target(self, tmp_path: Path) -> None:
        """A profile may assume a role, with an external ID and an endpoint."""
        path = write(
            tmp_path,
            """
            [[targets]]
            name = "prod"
            regions = ["us-gov-west-1", "eu-central-2"]
            profile = "ops"
            role_arn = "arn:aws-us-gov:iam::123456789012:role/path/ImportWatcher"
            external_id = "ops-imports"
            endpoint_url = "http://127.0.0.1:8787"
            """,
        )

        settings = load_settings(path, {})

        assert settings.targets == [
            Target(
                name="prod",
                regions=["us-gov-west-1", "eu-central-2"],
                profile="ops",
                role_arn="arn:aws-us-gov:iam::123456789012:role/path/ImportWatcher",
                external_id="ops-imports",
                endpoint_url="http://127.0.0.1:8787",
            )
        ]

    def test_names_are_unique_and_reported_with_other_problems(
        self, tmp_path: Path
    ) -> None:
        """A repeated name is reported even when a target also has a bad key."""
        path = write(
            tmp_path,
            '[[targets]]\nname = "a"\nregions = ["us-east-1"]\n'
            '[[targets]]\nname = "a"\nregions = ["nowhere"]\n',
        )

        problems = problems_of(path, {})

        assert problems == [
            f'{path}: targets[1].regions[0]: "nowhere" is not a region name',
            f'{path}: targets: name "a" is used more than once '
            "(targets[0], targets[1])",
        ]

    @pytest.mark.parametrize(
        ("environ", "region"),
        [
            ({}, "us-east-1"),
            ({"AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),
            (
                {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"},
                "ap-south-1",
            ),
        ],
    )
    def test_default_target_follows_the_sdk_region(
        self, no_default_file: Path, environ: dict[str, str], region: str
    ) -> None:
        """With no [[targets]], one target named default watches the SDK's region."""
        settings = load_settings(None, environ)

        assert settings.targets == [Target(name="default", regions=[region])]

    def test_bad_sdk_region_names_the_variable(self, no_default_file: Path) -> None:
        """A bad AWS_REGION behind the default target is blamed on AWS_REGION."""
        problems = problems_of(None, {"AWS_REGION": "nowhere"})

        assert problems == ['AWS_REGION: "nowhere" is not a region name']


class TestEnvironment:
    #: a valid, non-default value for every variable
    VALUES: ClassVar[dict[str, tuple[str, object]]] = {
        "EC2_IMPORT_MONITOR_POLL_INTERVAL": ("2m", 120.0),
        "EC2_IMPORT_MONITOR_POLL_PAGE_SIZE": ("100", 100),
        "EC2_IMPORT_MONITOR_POLL_CONCURRENCY": ("3", 3),
        "EC2_IMPORT_MONITOR_POLL_RETRY_MODE": ("adaptive", "adaptive"),
        "EC2_IMPORT_MONITOR_POLL_MAX_ATTEMPTS": ("7", 7),
        "EC2_IMPORT_MONITOR_POLL_CONNECT_TIMEOUT": ("2s", 2.0),
        "EC2_IMPORT_MONITOR_POLL_READ_TIMEOUT": ("9s", 9.0),
        "EC2_IMPORT_MONITOR_POLL_DEADLINE": ("1m", 60.0),
        "EC2_IMPORT_MONITOR_POLL_SHARD": ("2/3", "2/3"),
        "EC2_IMPORT_MONITOR_STALL_AFTER": ("1h", 3600.0),
        "EC2_IMPORT_MONITOR_STALL_PER_GIB": ("0s", 0.0),
        "EC2_IMPORT_MONITOR_STALL_MAX_AGE": ("1d", 86400.0),
        "EC2_IMPORT_MONITOR_METRICS_LISTEN": ("[::1]:9000", "[::1]:9000"),
        "EC2_IMPORT_MONITOR_METRICS_WEB_CONFIG": ("", None),
        "EC2_IMPORT_MONITOR_STATE_PATH": ("/tmp/s.db", Path("/tmp/s.db")),
        "EC2_IMPORT_MONITOR_STATE_KEEP_ENDED": ("0s", 0.0),
        "EC2_IMPORT_MONITOR_STATE_KEEP_HISTORY": ("7d", 7 * 86400.0),
        "EC2_IMPORT_MONITOR_LOG_LEVEL": ("debug", "debug"),
        "EC2_IMPORT_MONITOR_LOG_FORMAT": ("json", "json"),
    }

    def test_every_scalar_key_can_be_set(self, no_default_file: Path) -> None:
        """Each scalar key of every section has a variable, and it takes effect."""
        environ = {name: text for name, (text, _) in self.VALUES.items()}

        settings = load_settings(None, environ)

        assert set(environment_variables()) == set(self.VALUES)
        for name, (section, key) in environment_variables().items():
            assert getattr(getattr(settings, section), key) == self.VALUES[name][1]

    def test_environment_wins_over_the_file(self, tmp_path: Path) -> None:
        """A variable overrides the file's value; the file's other keys stay."""
        path = write(tmp_path, '[poll]\ninterval = "60s"\nconcurrency = 2\n')

        settings = load_settings(path, {"EC2_IMPORT_MONITOR_POLL_INTERVAL": "5m"})

        assert (settings.poll.interval, settings.poll.concurrency) == (300.0, 2)

    def test_unknown_variable_is_an_error(self, no_default_file: Path) -> None:
        """A misspelt variable is an error that suggests the right name."""
        environ = {"EC2_IMPORT_MONITOR_POLL_INTERVL": "2m", "EC2_IMPORT_MONITOR_X": ""}

        problems = problems_of(None, environ)

        assert problems == [
            "EC2_IMPORT_MONITOR_POLL_INTERVL: unknown variable "
            "(did you mean EC2_IMPORT_MONITOR_POLL_INTERVAL?)",
            "EC2_IMPORT_MONITOR_X: unknown variable",
        ]

    def test_tables_are_not_set_from_the_environment(
        self, no_default_file: Path
    ) -> None:
        """stall.phases is a table, so its variable is refused with the reason."""
        problems = problems_of(None, {"EC2_IMPORT_MONITOR_STALL_PHASES": "x"})

        assert problems == [
            "EC2_IMPORT_MONITOR_STALL_PHASES: stall.phases is a table "
            "and can only be set in the file"
        ]

    def test_bad_value_names_the_variable(self, tmp_path: Path) -> None:
        """A bad value from the environment is blamed on its variable, not the file."""
        path = write(tmp_path, '[poll]\ninterval = "60s"\n')

        problems = problems_of(path, {"EC2_IMPORT_MONITOR_POLL_INTERVAL": "90x"})

        assert problems == [
            'EC2_IMPORT_MONITOR_POLL_INTERVAL: "90x" is not a duration '
            '(use e.g. "90s", "45m", "2h")'
        ]

    def test_empty_value_unsets_an_optional_key(self, tmp_path: Path) -> None:
        """An empty variable returns an optional key to its default of none."""
        path = write(tmp_path, '[poll]\ndeadline = "30s"\n')

        settings = load_settings(path, {"EC2_IMPORT_MONITOR_POLL_DEADLINE": ""})

        assert settings.poll.deadline is None

    def test_choices_ignore_case(self, no_default_file: Path) -> None:
        """LOG_LEVEL=DEBUG works as well as debug."""
        settings = load_settings(None, {"EC2_IMPORT_MONITOR_LOG_LEVEL": "DEBUG"})

        assert settings.log.level == "debug"


class TestPoll:
    def test_region_deadline_defaults_to_most_of_the_interval(self) -> None:
        """Without a deadline, a region's poll gets 80 % of the interval."""
        settings = PollSettings(interval=90)

        assert settings.region_deadline == pytest.approx(72.0)

    def test_region_deadline_is_the_deadline_when_set(self) -> None:
        """An explicit deadline is used as it is."""
        settings = PollSettings(interval=90, deadline=30)

        assert settings.region_deadline == 30.0

    def test_deadline_may_not_exceed_interval(self, tmp_path: Path) -> None:
        """A poll that may outlast the interval would overlap the next one."""
        path = write(tmp_path, '[poll]\ninterval = "1m"\ndeadline = "90s"\n')

        problems = problems_of(path, {})

        assert problems == [
            f"{path}: poll.deadline: 1m30s is longer than poll.interval (1m); "
            "a region's poll must end before the next one starts"
        ]


class TestListen:
    @pytest.mark.parametrize(
        ("listen", "host", "port"),
        [
            ("127.0.0.1:8780", "127.0.0.1", 8780),
            ("[::1]:9000", "::1", 9000),
            ("[::]:8780", "::", 8780),
            ("0.0.0.0:1", "0.0.0.0", 1),
            ("localhost:65535", "localhost", 65535),
        ],
    )
    def test_host_and_port(
        self, tmp_path: Path, listen: str, host: str, port: int
    ) -> None:
        """HOST:PORT splits into the host to bind (IPv6 unbracketed) and the port."""
        path = write(tmp_path, f'[metrics]\nlisten = "{listen}"\n')

        metrics = load_settings(path, {}).metrics

        assert (metrics.host, metrics.port) == (host, port)

    @pytest.mark.parametrize(
        ("listen", "problem"),
        [
            ("8780", "is not HOST:PORT"),
            ("127.0.0.1", "is not HOST:PORT"),
            (":8780", "is not HOST:PORT"),
            ("127.0.0.1:http", "is not HOST:PORT"),
            ("127.0.0.1:0", "port 0 is not in 1..65535"),
            ("127.0.0.1:65536", "port 65536 is not in 1..65535"),
            ("::1:8780", "put an IPv6 address in brackets"),
            ("[nothost]:80", '"nothost" is not an IPv6 address'),
            ("a b:80", '"a b" is not a host name or address'),
        ],
    )
    def test_bad_listen(self, tmp_path: Path, listen: str, problem: str) -> None:
        """Each malformed address says what is wrong with it."""
        path = write(tmp_path, f'[metrics]\nlisten = "{listen}"\n')

        problems = problems_of(path, {})

        assert len(problems) == 1
        assert problems[0].startswith(f"{path}: metrics.listen: ")
        assert problem in problems[0]


class TestStallThreshold:
    def test_base_threshold_without_a_phase(self) -> None:
        """A task with no phase and no size stalls after `after`."""
        stall = StallSettings()

        assert stall.threshold(None, 0.0) == 45 * 60.0

    def test_phase_overrides_the_base(self) -> None:
        """A phase with its own threshold uses it instead of `after`."""
        stall = StallSettings()

        assert stall.threshold("converting", 0.0) == 2 * 3600.0
        assert stall.threshold("pending", 0.0) == 3600.0
        assert stall.threshold("booting", 0.0) == 45 * 60.0

    def test_time_is_added_per_gib(self) -> None:
        """Each GiB of disk adds per_gib, on top of the phase's threshold."""
        stall = StallSettings(after=600, per_gib=30, phases={"converting": 3600})

        assert stall.threshold("validating", 10 * GIB) == 600 + 10 * 30
        assert stall.threshold("converting", 0.5 * GIB) == 3600 + 15

    @pytest.mark.parametrize("size", [-5.0, math.nan, math.inf])
    def test_nonsense_sizes_add_nothing(self, size: float) -> None:
        """A negative or non-finite size counts as no size at all."""
        stall = StallSettings()

        assert stall.threshold(None, size) == 45 * 60.0

    def test_phases_merge_over_the_defaults(self, tmp_path: Path) -> None:
        """Setting one phase keeps the default thresholds of the others."""
        path = write(tmp_path, '[stall.phases]\nbooting = "30m"\nconverting = "3h"\n')

        phases = load_settings(path, {}).stall.phases

        assert phases == {"converting": 10800.0, "pending": 3600.0, "booting": 1800.0}

    def test_unknown_phase_is_an_error(self, tmp_path: Path) -> None:
        """A phase the API does not have is refused, with the list of phases."""
        path = write(
            tmp_path, '[stall.phases]\n"preparing to boot" = "1h"\nboot = "1h"\n'
        )

        problems = problems_of(path, {})

        assert len(problems) == 1
        assert problems[0].startswith(
            f'{path}: stall.phases.boot: "boot" is not a phase'
        )
        assert "preparing to boot" in problems[0]


class TestExample:
    def test_example_equals_the_defaults_but_for_its_target(self) -> None:
        """The example sets every key to its default; only the target is pinned."""
        environ = {"AWS_REGION": "eu-west-1"}

        example = load_settings(EXAMPLE, environ)

        defaults = Settings(targets=default_targets(environ))
        assert example.targets == [Target(name="default", regions=["us-east-1"])]
        assert example.model_copy(update={"targets": defaults.targets}) == defaults

    def test_example_documents_every_key(self) -> None:
        """Every field appears in the example under a comment giving its default."""
        lines = EXAMPLE.read_text(encoding="utf-8").splitlines()

        undocumented = [
            key for key in _all_keys(Settings) if not _documented(lines, key)
        ]

        assert undocumented == []


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        inner = getattr(field.annotation, "__args__", (field.annotation,))[0]
        for candidate in (field.annotation, inner):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys.extend(_all_keys(candidate, f"{prefix}{name}."))
                break
        else:
            keys.append(prefix + name)
    return keys


def _documented(lines: list[str], dotted: str) -> bool:
    """Whether the key is set (or shown commented out) under a comment block
    that states its default."""
    key = dotted.rsplit(".", 1)[-1]
    pattern = re.compile(rf"^(?:# )?(?:{re.escape(key)} =|\[{re.escape(dotted)}\])")
    for index, line in enumerate(lines):
        if not pattern.match(line):
            continue
        block = []
        above = index - 1
        while above >= 0 and lines[above].startswith("#"):
            block.append(lines[above])
            above -= 1
        if any("default" in comment.lower() for comment in block):
            return True
    return False


class TestLoadOrExit:
    def test_exits_78_with_each_problem_on_stderr(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Commands that need settings stop with EX_CONFIG and readable lines."""
        for name in list(os.environ):
            if name.startswith("EC2_IMPORT_MONITOR_"):
                monkeypatch.delenv(name)
        path = write(tmp_path, '[poll]\ninterval = "x"\n[log]\nlevel = "loud"\n')

        with pytest.raises(SystemExit) as caught:
            load_or_exit(path)

        assert caught.value.code == EX_CONFIG
        assert capsys.readouterr().err.splitlines() == [
            f'ec2-import-monitor: config error: {path}: poll.interval: "x" is not a '
            'duration (use e.g. "90s", "45m", "2h")',
            f'ec2-import-monitor: config error: {path}: log.level: "loud" is not one '
            'of "debug", "info", "warning" or "error"',
        ]


class TestValidateSettings:
    def test_data_in_hand_is_validated_like_a_file(self) -> None:
        """A command's own dict gives the same one-line problems as a file."""
        data = {"poll": {"interval": 5}, "targets": [{"name": "demo", "regions": []}]}

        with pytest.raises(ConfigError) as caught:
            validate_settings(data, "demo")

        assert caught.value.problems == [
            'demo: poll.interval: 5 is not a duration (use e.g. "90s", "45m", "2h")',
            "demo: targets[0].regions: must not be empty",
        ]

    def test_good_data_gives_settings(self) -> None:
        """Valid data comes back as settings, defaults filled in."""
        data = {
            "poll": {"interval": "5s"},
            "targets": [{"name": "demo", "regions": ["all"]}],
        }

        settings = validate_settings(data, "demo")

        assert settings.poll.interval == 5.0
        assert settings.stall == StallSettings()
