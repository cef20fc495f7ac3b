"""The shipped alert rules: promtool accepts them and their unit tests pass.

The rules and their promtool tests are YAML in config/prometheus/; these
tests run promtool on them as a user would, and check that every alert has a
unit test that sees it fire and a runbook section its link points at. They
also hold the unit tests to the HA contract: a task or region alert never
names an instance, and each is seen as one alert while two instances report
it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

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

#: Alerts about one monitor host, which name its ``instance``; every other
#: alert is one per task or region, whatever the number of instances.
PER_HOST_ALERTS = frozenset({"Ec2ImportMonitorDown", "Ec2ImportMonitorPollFailing"})

#: Fires when no instance exists at all, so it has no pair to aggregate.
NO_INSTANCE_ALERTS = frozenset({"Ec2ImportMonitorAbsent"})

ALERT_NAME = re.compile(r"^\s*- alert:\s*(\S+)\s*$", re.MULTILINE)
TEST_GROUP = re.compile(r"^  - name:", re.MULTILINE)
EVAL_TIME = re.compile(r"^\s*- eval_time:", re.MULTILINE)
ALERTNAME = re.compile(r"^\s*alertname:\s*(\S+)\s*$", re.MULTILINE)
EXP_LABELS = re.compile(r"^\s*- exp_labels:", re.MULTILINE)
INSTANCE_LABEL = re.compile(r"^\s*instance:", re.MULTILINE)
INSTANCE_FED = re.compile(r'\binstance="([^"]+)"')
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


class Expectation(NamedTuple):
    """One ``alert_rule_test`` case, with what its test group feeds in."""

    alert: str
    fed_instances: frozenset[str]
    alerts: int
    names_instance: bool


def expectations(test_text: str) -> Iterator[Expectation]:
    """Every alert_rule_test case of a promtool test file, in order."""
    for group in TEST_GROUP.split(test_text)[1:]:
        inputs, _, cases = group.partition("alert_rule_test:")
        fed = frozenset(INSTANCE_FED.findall(inputs))

        for case in EVAL_TIME.split(cases)[1:]:
            name = ALERTNAME.search(case)
            if name is None:
                continue
            yield Expectation(
                alert=name.group(1),
                fed_instances=fed,
                alerts=len(EXP_LABELS.findall(case)),
                names_instance=INSTANCE_LABEL.search(case) is not None,
            )


def all_expectations() -> list[Expectation]:
    """Every case of every promtool test file in config/prometheus/tests."""
    return [case for path in RULE_TESTS for case in expectations(path.read_text())]


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

    tested = {case.alert for case in all_expectations() if case.alerts}

    assert alerts, "no alerts found in the rules file"
    assert alerts - tested == set()


def test_only_the_per_host_alerts_are_expected_with_an_instance() -> None:
    """A task or region alert is never expected with an ``instance`` label.

    An HA pair reports every task twice; an alert that kept ``instance`` would
    page twice. The per-host alerts are about one instance and must name it.
    """
    cases = all_expectations()

    naming = {case.alert for case in cases if case.names_instance}

    assert naming == PER_HOST_ALERTS


def test_every_task_and_region_alert_fires_once_from_two_instances() -> None:
    """Each aggregated alert has a test fed by two or more instances, one alert.

    That is the HA contract the rules exist for: both instances of a pair
    report the same task or region, and Alertmanager gets one alert.
    """
    alerts = set(ALERT_NAME.findall(RULES.read_text()))
    aggregated = alerts - PER_HOST_ALERTS - NO_INSTANCE_ALERTS

    once_from_a_pair = {
        case.alert
        for case in all_expectations()
        if len(case.fed_instances) >= 2 and case.alerts == 1
    }

    assert aggregated, "no task or region alerts found in the rules file"
    assert aggregated - once_from_a_pair == set()


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
