"""The command line: every command is registered, documented and reachable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from monitor.cli import COMMANDS, build_parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_parses_its_own_help(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser(name)

    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([name, "--help"])

    assert exit_info.value.code == 0
    assert COMMANDS[name][1] in capsys.readouterr().out


def test_the_console_script_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize(
    "argv", [[], ["no-such-command"], ["once", "--no-such-flag"], ["wait"]]
)
def test_usage_errors_exit_64_not_a_commands_own_codes(argv: list[str]) -> None:
    """64 (EX_USAGE), so `wait`'s 2 (timeout) always means a timeout."""
    result = subprocess.run(
        [sys.executable, "-m", "monitor", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 64
    assert "usage:" in result.stderr
