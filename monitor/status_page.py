"""The status page at ``/``: every tracked task, readable without Grafana.

Plain HTML with a meta refresh, no JavaScript. Everything that came from the
API or the config goes through :func:`html.escape`, because task
descriptions are free text that anyone who can start an import controls.
"""

from __future__ import annotations

from html import escape

from monitor.events import iso_time
from monitor.model import COMPLETED, DELETED
from monitor.tracker import TrackedTask, TrackerState, estimate_eta

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
.bar { background: #eee; width: 12rem; height: .9rem; border-radius: .2rem; }
.fill { background: #3a7; height: 100%; border-radius: .2rem; }
tr.stalled { background: #fff4d6; } tr.failed { background: #fde2e2; }
tr.completed { color: #777; } .disks { font-size: .85rem; color: #555; }
.bad { color: #b00; font-weight: bold; }
"""


def render_status_page(state: TrackerState, now: float, refresh: int = 30) -> str:
    failing = [health for health in state.regions.values() if not health.ok]
    rows = "\n".join(
        _row(tracked, now)
        for _, tracked in sorted(
            state.tasks.items(),
            key=lambda item: (item[1].ended_at is not None, item[0]),
        )
    )
    regions = (
        f'<p class="bad">Polls failing in {len(failing)} region(s): '
        + ", ".join(escape(f"{h.account}/{h.region} ({h.error})") for h in failing)
        + "</p>"
        if failing
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>ec2-import-monitor</title><style>{STYLE}</style></head>
<body>
<h1>ec2-import-monitor</h1>
<p>{len(state.tasks)} task(s) in {len(state.regions)} region(s), as of
{escape(iso_time(now)) if now else "the first poll (pending)"}.
<a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> ·
<a href="/readyz">/readyz</a></p>
{regions}
<table>
<thead><tr><th>task</th><th>account / region</th><th>status</th><th>phase</th>
<th>progress</th><th>ETA</th><th>description</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def _row(tracked: TrackedTask, now: float) -> str:
    task = tracked.task
    css = ""
    if task.status == DELETED:
        css = "failed"
    elif task.status == COMPLETED:
        css = "completed"
    elif tracked.stalled:
        css = "stalled"

    eta = estimate_eta(tracked, now)
    status = task.status + (" (stalled)" if tracked.stalled else "")
    phase = task.phase or (task.status_message if task.status == DELETED else "")
    disks = "<br>".join(
        f"{escape(disk.device)}: {_percent(disk.progress)} "
        f"{escape(disk.status or '')} {_gib(disk.size_bytes)}"
        for disk in task.disks
    )
    return (
        f'<tr class="{css}"><td>{escape(task.task_id)}</td>'
        f"<td>{escape(tracked.account)} / {escape(tracked.region)}</td>"
        f"<td>{escape(status)}</td><td>{escape(phase or '')}</td>"
        f"<td>{_bar(task.progress)}<div class='disks'>{disks}</div></td>"
        f"<td>{_duration(eta)}</td><td>{escape(task.description or '')}</td></tr>"
    )


def _bar(progress: float | None) -> str:
    if progress is None:
        return ""
    width = round(progress * 100)
    return (
        f'<div class="bar" title="{width}%"><div class="fill" '
        f'style="width:{width}%"></div></div>{width}%'
    )


def _percent(progress: float | None) -> str:
    return "" if progress is None else f"{round(progress * 100)}%"


def _gib(size: float | None) -> str:
    return "" if not size else f"{size / 2**30:.1f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
