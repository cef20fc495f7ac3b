"""Nothing secret leaves the daemon, and API free text cannot break its outputs.

The daemon runs as users run it, a subprocess at debug level, with AWS
credentials both in its environment and in a shared credentials file; every
line it writes, its /metrics and its status page are searched for the secret
keys and session tokens. Task descriptions are free text that whoever starts
an import controls, so HTML and terminal control characters in them are
rendered on the status page and in the exposition to check they stay inert.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import MonitorCounters, View, render
from monitor.model import ImportTask
from monitor.simulator import Simulator, serve
from monitor.status_page import render_status_page
from monitor.tracker import RegionKey, RegionPoll, Rules, TrackerState, observe
from tests.conftest import free_port
from tests.service_helpers import (
    WAIT,
    daemon_environment,
    fetch,
    poll_until,
    run_daemon,
    samples,
    toml_value,
)

# Three sets of credentials: the environment's, the profile AWS_PROFILE names,
# and the profile a target names. The secret halves must never show.
ENV_KEY = "AKIAENVIRONMENTKEY01"
ENV_SECRET = "env+Secret/9fK2LmQ7xVb3RtYp0WzN4cH8dJ6sGa1eU5oI"
ENV_TOKEN = "IQoJb3JpZ2luX2VjEnvSessionToken//////////wEaCXVzLWVhc3QtMSJH"
AMBIENT_KEY = "AKIAAMBIENTPROFILE01"
AMBIENT_SECRET = "ambient/Secret+Q2w3E4r5T6y7U8i9O0pAsDfGhJkL1zXc"
AMBIENT_TOKEN = "FwoGZXIvYXdzAmbientSessionToken////////////////ZDFhNjQ5"
PROFILE_KEY = "AKIATARGETPROFILE001"
PROFILE_SECRET = "target/Profile+Secret7Hk3Jm9Np2Qr5St8Vw1Xy4Za6Bc"
PROFILE_TOKEN = "IQoJb3JpZ2luX2VjTargetProfileToken////////////////wEaCXVz"
SECRETS = (
    ENV_SECRET,
    ENV_TOKEN,
    AMBIENT_SECRET,
    AMBIENT_TOKEN,
    PROFILE_SECRET,
    PROFILE_TOKEN,
)

PROFILED, AMBIENT = "us-east-1", "eu-west-1"

#: Markup, terminal escapes (CSI clear screen, an OSC title, BEL, the one-byte
#: C1 CSI, NUL), quotes, a backslash, a newline and a bidi override.
HOSTILE = (
    '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    "\x1b[2J\x1b]0;owned\x07\x9b31m\x00 & 'single' \"double\" back\\slash"
    "\nsecond line \u202eevil"
)

#: The markup of HOSTILE, which must never reach the page unescaped.
MARKUP = ("<script", "</script>", "<img", "onerror=alert(1)>")

#: C0 controls other than tab, newline and carriage return; DEL; C1 controls.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

T0 = 1_800_000_000.0
RULES = Rules(
    stall_threshold=lambda phase, size: 3600.0, max_age=43200.0, keep_ended=86400.0
)


def credentials_file(path: Path) -> Path:
    path.write_text(
        "[ambient]\n"
        f"aws_access_key_id = {AMBIENT_KEY}\n"
        f"aws_secret_access_key = {AMBIENT_SECRET}\n"
        f"aws_session_token = {AMBIENT_TOKEN}\n"
        "\n[readonly]\n"
        f"aws_access_key_id = {PROFILE_KEY}\n"
        f"aws_secret_access_key = {PROFILE_SECRET}\n"
        f"aws_session_token = {PROFILE_TOKEN}\n"
    )
    return path


def config_file(path: Path, endpoint: str, port: int, state: Path) -> Path:
    """Two targets on the simulator: one names a profile, one does not."""
    targets = (
        {"name": "profiled", "regions": [PROFILED], "profile": "readonly"},
        {"name": "ambient", "regions": [AMBIENT]},
    )
    lines: list[str] = []
    for target in targets:
        lines.append("[[targets]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in target.items())
        lines.append(f"endpoint_url = {toml_value(endpoint)}\n")
    lines += [
        "[poll]",
        'interval = "1s"',
        "max_attempts = 1",
        "[metrics]",
        f'listen = "127.0.0.1:{port}"',
        "[state]",
        f"path = {toml_value(state)}",
        "[log]",
        'level = "debug"',
        'format = "json"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class TestCredentialsStaySecret:
    """Secret keys and session tokens appear in no output of the daemon."""

    async def test_no_secret_in_logs_metrics_or_status_page(
        self, tmp_path: Path
    ) -> None:
        """At debug level, through failed polls and tracebacks, nothing leaks."""
        sim = Simulator(scenario="mixed", seed=5, tasks=3, speed=60.0)
        # Malformed answers in one region put tracebacks and errors in the log.
        sim.faults.for_region(AMBIENT).malformed_rate = 0.5
        port = free_port()
        env = {
            **daemon_environment(),
            "AWS_ACCESS_KEY_ID": ENV_KEY,
            "AWS_SECRET_ACCESS_KEY": ENV_SECRET,
            "AWS_SESSION_TOKEN": ENV_TOKEN,
            "AWS_PROFILE": "ambient",
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file(tmp_path / "creds")),
        }

        async with serve(sim) as endpoint:
            config = config_file(
                tmp_path / "config.toml", endpoint.url, port, tmp_path / "state.db"
            )
            async with run_daemon(config, port, env) as daemon:
                async with asyncio.timeout(WAIT):
                    await daemon.wait_event("monitor_started")
                    exposition = await poll_until(
                        lambda: _once_both_failed_and_worked(daemon.url), every=0.5
                    )
                    _, _, page = await fetch(daemon.url + "/")
                    code, _ = await daemon.stop()
            seen_keys = {(r.region, r.access_key) for r in sim.requests}

        assert code == 0
        assert (PROFILED, PROFILE_KEY) in seen_keys
        assert (AMBIENT, ENV_KEY) in seen_keys
        logged = [json.dumps(event) for event in daemon.events.items]
        assert any('"level": "debug"' in line for line in logged)
        assert daemon.named("poll_failed", region=AMBIENT)
        outputs = {
            "stdout": "\n".join([*logged, *daemon.other_lines]),
            "stderr": daemon.stderr.decode(errors="replace"),
            "/metrics": exposition,
            "/": page,
        }
        for where, text in outputs.items():
            for secret in SECRETS:
                assert secret not in text, f"a secret is in {where}"
                assert secret[8:24] not in text, f"part of a secret is in {where}"


async def _once_both_failed_and_worked(url: str) -> str | None:
    """The exposition, once a poll failed and one worked in the faulty region."""
    _, _, exposition = await fetch(url + "/metrics")
    polls = samples(exposition)
    failed = polls.get(_events_key("ambient", AMBIENT, "poll_failed"), 0.0)
    recovered = polls.get(_events_key("ambient", AMBIENT, "poll_recovered"), 0.0)
    profiled = polls.get(
        ("ec2_import_poll_success", (("account", "profiled"), ("region", PROFILED)))
    )
    return exposition if failed and recovered and profiled == 1.0 else None


def _events_key(
    account: str, region: str, name: str
) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = (("account", account), ("event", name), ("region", region))
    return ("ec2_import_events_total", labels)


def hostile_state() -> TrackerState:
    """One running and one failed task, their free text all HOSTILE."""
    disk = {"Description": HOSTILE, "Status": "active", "DiskImageSize": 1.0}
    running = _task(
        "import-ami-0aaaaaaaaaaaaaaa1",
        Status="active",
        StatusMessage="converting",
        Progress="30",
        SnapshotDetails=[disk],
    )
    failed = _task(
        "import-ami-0bbbbbbbbbbbbbbb2", Status="deleted", StatusMessage=HOSTILE
    )
    poll = RegionPoll("prod", "us-east-1", ok=True, active=(running, failed))
    state, _ = observe(TrackerState(), [poll], T0, RULES)
    return state


def _task(task_id: str, **fields: Any) -> ImportTask:
    task = ImportTask.from_api(
        {"ImportTaskId": task_id, "Description": HOSTILE, **fields}
    )
    assert task is not None
    return task


class TestHostileDescriptionsOnTheStatusPage:
    """Free text from the API is shown as text, never as markup or escapes."""

    def test_markup_is_escaped(self) -> None:
        """Tags and attributes in a description arrive as visible text."""
        html = render_status_page(hostile_state(), T0)

        for markup in MARKUP:
            assert markup not in html
        assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html

    def test_terminal_control_characters_do_not_reach_the_page(self) -> None:
        """A page read with curl in a terminal cannot clear it or set its title."""
        html = render_status_page(hostile_state(), T0)

        assert CONTROL.findall(html) == []
        assert "second line" in html


class TestHostileDescriptionsInTheExposition:
    """Label values carry free text exactly, in a file Prometheus accepts."""

    def test_the_parser_reads_the_description_back_exactly(self) -> None:
        """Quotes, backslashes and newlines are escaped, and nothing else changes."""
        state = hostile_state()
        counters = MonitorCounters([RegionKey("prod", "us-east-1")], ["Describe"])

        exposition = render(View(state, T0, RULES), counters).decode()

        families = {f.name: f for f in text_string_to_metric_families(exposition)}
        task_info = families["ec2_import_task_info"].samples
        disk_info = families["ec2_import_snapshot_info"].samples
        assert {s.labels["description"] for s in task_info} == {HOSTILE}
        assert [s.labels["description"] for s in disk_info] == [HOSTILE]
        failed = [s for s in task_info if s.labels["status_message"] == HOSTILE]
        assert len(failed) == 1

    @pytest.mark.promtool
    def test_promtool_finds_nothing_wrong(self, promtool: str) -> None:
        """promtool check metrics is clean: no error and no lint warning."""
        state = hostile_state()
        counters = MonitorCounters([RegionKey("prod", "us-east-1")], ["Describe"])
        exposition = render(View(state, T0, RULES), counters)

        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=exposition,
            capture_output=True,
            timeout=60,
            check=False,
        )

        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b""
        assert result.stderr == b""
