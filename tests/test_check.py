"""The check-config command: a summary and 0, or every problem and 78."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor import check, config
from monitor.config import EX_CONFIG

GOOD = """
[poll]
interval = "2m"

[[targets]]
name = "prod"
regions = ["us-east-1", "eu-west-1"]

[[targets]]
name = "dev"
regions = ["eu-central-2"]
"""

BAD = """
[poll]
interval = "90x"

[[targets]]
name = "prod"
regions = ["us-east"]

[log]
colour = "yes"
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No EC2_IMPORT_MONITOR_* or region variables, and no default file."""
    for name in list(os.environ):
        if name.startswith("EC2_IMPORT_MONITOR_") or name in (
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def run_check(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    return check.main(parser.parse_args(argv))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestMain:
    def test_good_file_prints_a_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A valid file exits 0 and says how many targets and regions it has."""
        path = write(tmp_path, GOOD)

        code = run_check("--config", str(path))

        assert code == 0
        assert capsys.readouterr().out == f"config OK: {path}: 2 targets, 3 regions\n"

    def test_defaults_are_named_as_such(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With no file at all, the summary says the defaults were checked."""
        code = run_check()

        assert code == 0
        assert capsys.readouterr().out == "config OK: defaults: 1 target, 1 region\n"

    def test_variable_names_the_file(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Without --config, EC2_IMPORT_MONITOR_CONFIG is the file checked."""
        path = write(tmp_path, GOOD)
        monkeypatch.setenv("EC2_IMPORT_MONITOR_CONFIG", str(path))

        code = run_check()

        assert code == 0
        assert capsys.readouterr().out.startswith(f"config OK: {path}: ")

    def test_all_regions_are_counted_apart(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A target watching every region is not counted as one region."""
        path = write(
            tmp_path,
            GOOD + '\n[[targets]]\nname = "sandbox"\nregions = ["all"]\n',
        )

        run_check("--config", str(path))

        assert capsys.readouterr().out == (
            f"config OK: {path}: 3 targets, 3 regions "
            "+ every enabled region of 1 target\n"
        )

    def test_bad_file_lists_every_problem_and_exits_78(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each problem is its own prefixed line on stderr; the exit is EX_CONFIG."""
        path = write(tmp_path, BAD)

        code = run_check("--config", str(path))

        captured = capsys.readouterr()
        assert code == EX_CONFIG
        assert captured.out == ""
        assert captured.err.splitlines() == [
            f'ec2-import-monitor: config error: {path}: poll.interval: "90x" is not '
            'a duration (use e.g. "90s", "45m", "2h")',
            f"ec2-import-monitor: config error: {path}: targets[0].regions[0]: "
            '"us-east" is not a region name',
            f"ec2-import-monitor: config error: {path}: log.colour: unknown key",
        ]

    def test_environment_problems_are_reported_too(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A bad variable fails the check even when the file is fine."""
        path = write(tmp_path, GOOD)
        monkeypatch.setenv("EC2_IMPORT_MONITOR_LOG_LEVL", "debug")

        code = run_check("--config", str(path))

        assert code == EX_CONFIG
        assert capsys.readouterr().err == (
            "ec2-import-monitor: config error: EC2_IMPORT_MONITOR_LOG_LEVL: unknown "
            "variable (did you mean EC2_IMPORT_MONITOR_LOG_LEVEL?)\n"
        )


class TestCommandLine:
    """Through ``python -m monitor``, as systemd and deploy scripts run it."""

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        environ = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("EC2_IMPORT_MONITOR_")
        }
        return subprocess.run(
            [sys.executable, "-m", "monitor", "check-config", *argv],
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
            check=False,
        )

    def test_good_file_exits_0(self, tmp_path: Path) -> None:
        """The real command accepts a valid file with status 0."""
        path = write(tmp_path, GOOD)

        result = self.run("--config", str(path))

        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"config OK: {path}: 2 targets, 3 regions\n"

    def test_bad_file_exits_78(self, tmp_path: Path) -> None:
        """The real command exits EX_CONFIG, so systemd stops restarting."""
        path = write(tmp_path, BAD)

        result = self.run("--config", str(path))

        assert result.returncode == EX_CONFIG
        lines = result.stderr.splitlines()
        assert len(lines) == 3
        assert all(
            line.startswith("ec2-import-monitor: config error: ") for line in lines
        )

    def test_example_file_passes(self) -> None:
        """The shipped example is a valid configuration."""
        example = (
            Path(__file__).resolve().parent.parent / "config/ec2-import-monitor.toml"
        )

        result = self.run("--config", str(example))

        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"config OK: {example}: 1 target, 1 region\n"


class TestPermissions:
    """`check-config --permissions` asks EC2 with DryRun, region by region."""

    async def test_allowed_and_denied_regions_are_reported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from monitor.simulator import Simulator, serve
        from tests.e2e import ACCESS_KEY, use_test_credentials

        use_test_credentials(monkeypatch)
        sim = Simulator(scenario="empty", speed=0.0)
        sim.denied.add((ACCESS_KEY, "DescribeImportImageTasks"))
        async with serve(sim) as endpoint:
            allowed = tmp_path / "allowed.toml"
            allowed.write_text(
                f'[[targets]]\nname = "ops"\nregions = ["us-east-1", "eu-west-1"]\n'
                f'endpoint_url = "{endpoint.url}"\n'
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "monitor",
                "check-config",
                "--config",
                str(allowed),
                "--permissions",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(60):
                out, _ = await process.communicate()
            denied_code = process.returncode

            sim.denied.clear()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "monitor",
                "check-config",
                "--config",
                str(allowed),
                "--permissions",
                stdout=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(60):
                out_ok, _ = await process.communicate()

        assert denied_code == 1
        assert "ops/us-east-1: DescribeImportImageTasks: denied" in out.decode()
        assert process.returncode == 0
        assert "ops/eu-west-1: DescribeImportImageTasks: allowed" in out_ok.decode()
        dry_runs = [r for r in sim.requests if r.params.get("DryRun") == "true"]
        assert len(dry_runs) == 4
