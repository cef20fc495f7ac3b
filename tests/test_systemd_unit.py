"""The systemd unit: it parses, it is locked down, and Python runs inside it."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "ec2-import-monitor.service"
INSTALLED_BINARY = "/opt/ec2-import-monitor/bin/ec2-import-monitor"
MAX_EXPOSURE = 1.5
COMMAND_TIMEOUT = 60

# prctl(2) constants from linux/prctl.h (Linux 6.3 and later).
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    """The systemd-analyze binary; CI must have it, a laptop may not."""
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not os.access(found, os.X_OK):
        reason = "systemd-analyze is missing (Debian: apt-get install systemd)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=COMMAND_TIMEOUT,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
    )


def service_settings(text: str) -> dict[str, list[str]]:
    """The [Service] section as key -> values, in the order they appear."""
    settings: defaultdict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings[key].append(value)
    return dict(settings)


class TestUnitFile:
    def test_verify_finds_nothing_wrong(
        self, systemd_analyze: str, tmp_path: Path
    ) -> None:
        """systemd-analyze verify reports no problem with the unit.

        verify also checks that ExecStart's binary exists, and the one in
        /opt exists only on an installed host. The copy under test runs the
        same console script from the development virtualenv instead; every
        other line is verified exactly as shipped.
        """
        console_script = Path(sys.executable).with_name("ec2-import-monitor")
        assert console_script.exists(), f"{console_script}: run `make` first"
        shipped = UNIT.read_text(encoding="utf-8")
        assert shipped.count(f"ExecStart={INSTALLED_BINARY} ") == 1
        copy = tmp_path / UNIT.name
        copy.write_text(
            shipped.replace(INSTALLED_BINARY, str(console_script)), encoding="utf-8"
        )

        result = run(systemd_analyze, "verify", str(copy))

        # verify exits 0 even for lines it could not parse and ignored, so
        # any message that names our unit counts as a failure.
        output = result.stdout + result.stderr
        complaints = [line for line in output.splitlines() if UNIT.name in line]
        assert result.returncode == 0, output
        assert complaints == []

    def test_exposure_score_is_low(self, systemd_analyze: str) -> None:
        """systemd-analyze security rates the sandbox 1.5 or better."""
        result = run(systemd_analyze, "security", "--offline=true", str(UNIT))

        match = re.search(
            r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout
        )
        assert match is not None, result.stdout + result.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout

    def test_keeps_the_contract_with_the_daemon(self) -> None:
        """Notify type, watchdog, SIGHUP reload and no restart on exit 78."""
        settings = service_settings(UNIT.read_text(encoding="utf-8"))

        assert settings["Type"] == ["notify"]
        assert settings["NotifyAccess"] == ["main"]
        assert settings["WatchdogSec"] != ["0"]
        assert "78" in settings["RestartPreventExitStatus"][0].split()
        assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert settings["ExecStart"][0].split()[1:3] == ["run", "--config"]


# Runs in a process that cannot map memory writable and executable: it
# proves the restriction holds, then drives the libraries the daemon uses
# (aiohttp both ways, botocore's XML parser, pydantic-core, TLS set-up).
MDWE_WORKLOAD = textwrap.dedent(
    """
    import asyncio, mmap, ssl

    import aioboto3, apscheduler, prometheus_client, pydantic, structlog
    from aiohttp import ClientSession, web

    from monitor.model import ImportTask

    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        raise SystemExit("a W+X mapping was allowed: MDWE is not in force")

    REPLY = (
        '<DescribeImportImageTasksResponse'
        ' xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<requestId>r-1</requestId><importImageTaskSet><item>"
        "<importTaskId>import-ami-0123</importTaskId><status>active</status>"
        "<statusMessage>converting</statusMessage><progress>28</progress>"
        "</item></importImageTaskSet></DescribeImportImageTasksResponse>"
    )

    class Probe(pydantic.BaseModel):
        interval: float

    async def ec2(request):
        return web.Response(text=REPLY, content_type="text/xml")

    async def main():
        ssl.create_default_context()
        Probe.model_validate({"interval": "60"})
        prometheus_client.generate_latest(prometheus_client.CollectorRegistry())
        structlog.get_logger().info("probe")

        app = web.Application()
        app.router.add_route("*", "/", ec2)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"

        async with ClientSession() as http, http.get(url) as reply:
            assert reply.status == 200
        session = aioboto3.Session(
            aws_access_key_id="AKIDPROBE",
            aws_secret_access_key="probe",
            region_name="us-east-1",
        )
        async with session.client("ec2", endpoint_url=url) as client:
            page = await client.describe_import_image_tasks()
        await runner.cleanup()

        task = ImportTask.from_api(page["ImportImageTasks"][0])
        print(task.task_id, task.phase, task.progress)

    asyncio.run(asyncio.wait_for(main(), 30))
    """
)

MDWE_LAUNCHER = textwrap.dedent(
    f"""
    import ctypes, os, sys

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
        sys.exit(100 + ctypes.get_errno())
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
    """
)


class TestMemoryDenyWriteExecute:
    def test_the_python_stack_runs_without_writable_code(self) -> None:
        """The daemon's libraries work when W+X memory is refused.

        This uses the kernel's own MDWE flag (Linux 6.3+), which systemd 253
        and later apply for MemoryDenyWriteExecute=. systemd 252 enforces the
        setting with a seccomp filter instead, which also refuses adding
        PROT_EXEC to an existing mapping; nothing in this stack does that.
        """
        result = subprocess.run(
            [sys.executable, "-c", MDWE_LAUNCHER, MDWE_WORKLOAD],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

        if result.returncode == 100 + errno.EINVAL:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "import-ami-0123 converting 0.28"
