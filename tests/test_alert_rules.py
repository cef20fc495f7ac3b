"""The shipped alert rules: promtool accepts them and their unit tests pass.

The rules and their promtool tests are YAML in config/prometheus/; these
tests run promtool on them as a user would, and check that every alert has a
unit test that sees it fire and a runbook section its link points at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "config" / "prometheus"
RULES = RULES_DIR / "ec2-import-alerts.yml"
RULE_TESTS = sorted((RULES_DIR / "tests").glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"

#: Where Debian's prometheus package puts it, for a PATH without /usr/bin.
DEBIAN_PROMTOOL = Path("/usr/bin/promtool")

#: promtool checks these files in well under a second; a minute means a hang.
PROMTOOL_TIMEOUT_SECONDS = 60

ALERT_NAME = re.compile(r"^\s*- alert:\s*(\S+)\s*$", re.MULTILINE)
RUNBOOK_URL = re.compile(r"^\s*runbook_url:\s*(\S+)\s*$", re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@pytest.fixture
def promtool() -> Path:
    """promtool's path; a skip where it is missing, but a failure under CI."""
    found = shutil.which("promtool")
    if found is not None:
        return Path(found)
    if os.access(DEBIAN_PROMTOOL, os.X_OK):
        return DEBIAN_PROMTOOL

    # CI installs promtool first, so missing there is a broken set-up that a
    # skip would hide; on a laptop it is just a tool not installed yet.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("promtool not found with CI=true: run scripts/install-test-tools")
    pytest.skip("promtool not found: scripts/install-test-tools installs it")


def run_promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )


def github_anchor(heading: str) -> str:
    """The fragment GitHub and most Markdown renderers give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def firing_tests(test_text: str) -> set[str]:
    """Alert names that some ``alert_rule_test`` expects to see firing."""
    names = set()
    for case in re.split(r"^\s*- eval_time:", test_text, flags=re.MULTILINE)[1:]:
        name = re.search(r"^\s*alertname:\s*(\S+)\s*$", case, re.MULTILINE)
        if name and re.search(r"^\s*- exp_labels:", case, re.MULTILINE):
            names.add(name.group(1))
    return names


@pytest.mark.promtool
def test_rules_pass_promtool_check(promtool: Path) -> None:
    """promtool check rules accepts the file, its lint checks included."""
    result = run_promtool(
        promtool, "check", "rules", "--lint=all", "--lint-fatal", RULES.name
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.promtool
def test_rule_unit_tests_pass(promtool: Path) -> None:
    """Every promtool unit test of the rules passes."""
    assert RULE_TESTS, "no *.test.yml under config/prometheus/tests"
    arguments = [str(path.relative_to(RULES_DIR)) for path in RULE_TESTS]

    result = run_promtool(promtool, "test", "rules", *arguments)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    """Each alert in the rules file is expected to fire in some promtool test."""
    alerts = set(ALERT_NAME.findall(RULES.read_text()))

    tested = set().union(*(firing_tests(path.read_text()) for path in RULE_TESTS))

    assert alerts, "no alerts found in the rules file"
    assert alerts - tested == set()


def test_every_runbook_url_points_at_its_alerts_runbook_section() -> None:
    """Each alert links to docs/runbook.md#<its name>, a heading that exists."""
    rules = RULES.read_text()
    alerts = ALERT_NAME.findall(rules)
    # A shell comment in a code block looks like a heading; it is not one.
    prose = CODE_BLOCK.sub("", RUNBOOK.read_text())
    anchors = {github_anchor(heading) for heading in HEADING.findall(prose)}

    urls = RUNBOOK_URL.findall(rules)

    assert urls == [f"docs/runbook.md#{name.lower()}" for name in alerts]
    assert [url for url in urls if url.partition("#")[2] not in anchors] == []
