"""The status page at ``/``: every tracked task, readable without Grafana.

Plain HTML and CSS with a meta refresh, no JavaScript. Everything that came
from the API or the config goes through :func:`html.escape`, because task
descriptions and failure messages are free text that anyone who can start an
import controls, and account names come from a config file.

The page is built per request, in a worker thread (web.py): 4,000 active
three-disk tasks take about 0.1 s and make 5.6 MB.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.model import ACTIVE, COMPLETED, DELETED, DELETING, SnapshotDisk
from monitor.tracker import RegionHealth, TrackedTask, TrackerState, estimate_eta

#: Control characters but tab and newline: free text must not drive a terminal
#: (someone may read the page with curl).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: str, quote: bool = True) -> str:
    """HTML-escape ``text``, each control character shown as U+FFFD."""
    return html.escape(_CONTROL.sub("\ufffd", text), quote)


#: Seconds between reloads of the page in the browser.
REFRESH_SECONDS = 30

#: Ended tasks listed, newest first. Each stays tracked for a day by default,
#: so a busy account would otherwise make the page megabytes long; the older
#: ones are counted but only /metrics shows them.
MAX_ENDED_ROWS = 200

STALLED = "stalled"
FAILED = "failed"
RUNNING = "active"
DONE = "completed"
OTHER = "other"

_BADGES = {
    RUNNING: ("Active", "running"),
    STALLED: ("Stalled", "no change for longer than the stall threshold"),
    FAILED: ("Failed", "ended without an image: failed or cancelled"),
    DONE: ("Completed", "the image is ready"),
    OTHER: ("Unknown", "a status the monitor does not know"),
}

STYLE = """
:root {
  --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa;
  --blue: #0969da; --ok: #1a7f37; --warn: #9a6700; --warn-line: #d4a72c;
  --warn-bg: #fff8c5; --bad: #cf222e; --bad-line: #ff8182; --bad-bg: #ffebe9;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
header {
  display: flex; align-items: center; justify-content: space-between;
  flex-wrap: wrap; gap: .5rem 2rem; padding: .9rem 1.5rem;
  border-bottom: 1px solid var(--line); background: var(--soft);
}
header h1 { margin: 0; font-size: 1.2rem; font-weight: 600; }
header .asof { color: var(--muted); }
nav a { margin-left: 1.1rem; color: var(--blue); text-decoration: none; }
nav a:hover { text-decoration: underline; }
main { padding: 1.25rem 1.5rem 1rem; }
.summary { display: flex; flex-wrap: wrap; gap: .75rem; margin-bottom: 1.25rem; }
.card {
  min-width: 9rem; padding: .55rem .9rem; border: 1px solid var(--line);
  border-radius: 6px;
}
.card .n { display: block; font-size: 1.6rem; font-weight: 600; line-height: 1.25; }
.card .label {
  color: var(--muted); font-size: .75rem; text-transform: uppercase;
  letter-spacing: .04em;
}
.card.active .n { color: var(--blue); }
.card.completed .n { color: var(--ok); }
.card.lit { border-color: var(--bad-line); background: var(--bad-bg); }
.card.lit .n { color: var(--bad); }
.card.stalled.lit { border-color: var(--warn-line); background: var(--warn-bg); }
.card.stalled.lit .n { color: var(--warn); }
.alert {
  margin-bottom: 1.25rem; padding: .7rem 1rem; border: 1px solid var(--bad-line);
  border-radius: 6px; background: var(--bad-bg); color: #82071e;
}
.alert ul { margin: .35rem 0 0; padding-left: 1.2rem; }
.alert .since { color: var(--muted); }
h2 { font-size: 1rem; font-weight: 600; margin: 1.6rem 0 .5rem; }
h2 .count { color: var(--muted); font-weight: 400; }
table { border-collapse: collapse; width: 100%; }
table.tasks { table-layout: fixed; }
th {
  text-align: left; font-size: .8rem; font-weight: 600; color: var(--muted);
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  padding: .4rem .6rem; border-bottom: 2px solid var(--line);
}
td {
  padding: .55rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; overflow-wrap: anywhere;
}
tr.task > td:first-child { border-left: 4px solid transparent; }
tr.task.stalled > td { background: var(--warn-bg); }
tr.task.stalled > td:first-child { border-left-color: var(--warn-line); }
tr.task.failed > td { background: var(--bad-bg); }
tr.task.failed > td:first-child { border-left-color: var(--bad); }
tr.task.completed > td:first-child { border-left-color: #4ac26b; }
.id { font-family: var(--mono); font-size: .8rem; }
.desc, .where { color: var(--muted); }
.desc { margin-top: .1rem; }
tr.failed .message { color: #82071e; }
.num { white-space: nowrap; font-variant-numeric: tabular-nums; }
.badge {
  display: inline-block; margin: 0 .25rem .25rem 0; padding: 0 .55rem;
  border: 1px solid var(--line); border-radius: 999px; background: var(--soft);
  font-size: .75rem; font-weight: 600; line-height: 1.4rem; white-space: nowrap;
}
.badge.active { color: var(--blue); border-color: #54aeff; background: #ddf4ff; }
.badge.stalled { color: var(--warn); border-color: var(--warn-line);
  background: #fff; }
.badge.failed { color: var(--bad); border-color: var(--bad-line);
  background: #fff; }
.badge.completed, .badge.ok { color: var(--ok); border-color: #4ac26b;
  background: #dafbe1; }
.badge.overdue { color: #8250df; border-color: #c297ff; background: #fbefff; }
.bars {
  display: grid; align-items: center; gap: .2rem .5rem;
  grid-template-columns: 2.6rem minmax(3rem, 1fr) 2.9rem 4.9rem;
}
.bar { height: .35rem; border-radius: 999px; background: #e1e4e8;
  overflow: hidden; }
.bar.main { grid-column: 1 / 3; height: .6rem; margin: .25rem 0; }
.fill { height: 100%; border-radius: 999px; background: #54aeff; }
.bar.main .fill { background: var(--blue); }
tr.task.stalled .bar .fill { background: var(--warn-line); }
tr.task.failed .bar .fill { background: var(--bad); }
tr.task.completed .bar .fill, tr.task .bar.disk.done .fill {
  background: #4ac26b;
}
.pct { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.pct.main { font-weight: 600; }
.dev, .pct.disk, .meta { color: var(--muted); font-size: .78rem; }
.dev { font-family: var(--mono); }
.meta { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .n small { font-size: .9rem; font-weight: 400; color: var(--muted); }
.muted { color: var(--muted); }
.empty { color: var(--muted); text-align: center; padding: 1.25rem; }
tr.region.failed > td { background: var(--bad-bg); }
tr.region.failed .message { color: #82071e; }
footer { color: var(--muted); font-size: .8rem; padding: .5rem 1.5rem 1.5rem; }
.done { color: var(--ok); }
.gone { color: var(--bad); }
"""


@dataclass(frozen=True, slots=True)
class Summary:
    """The counts at the top of the page."""

    active: int
    stalled: int
    failed: int
    completed: int
    regions: int
    failing_regions: tuple[RegionHealth, ...]


def summarize(state: TrackerState) -> Summary:
    """Count tasks by what a person cares about, and find failing regions.

    ``active`` includes the stalled tasks; ``failed`` includes tasks still
    ``deleting``, since they are on their way to ending without an image.
    """
    kinds = [kind_of(tracked) for tracked in state.tasks.values()]
    failing = tuple(
        health for _, health in sorted(state.regions.items()) if not health.ok
    )
    return Summary(
        active=sum(tracked.task.status == ACTIVE for tracked in state.tasks.values()),
        stalled=kinds.count(STALLED),
        failed=kinds.count(FAILED),
        completed=kinds.count(DONE),
        regions=len(state.regions),
        failing_regions=failing,
    )


def kind_of(tracked: TrackedTask) -> str:
    """How a task is shown: stalled, failed, active, completed or other."""
    status = tracked.task.status
    if status in (DELETING, DELETED):
        return FAILED
    if status == COMPLETED:
        return DONE
    if status == ACTIVE:
        return STALLED if tracked.stalled else RUNNING
    return OTHER


def render_status_page(
    state: TrackerState, now: float, refresh: int = REFRESH_SECONDS
) -> str:
    """The whole page for ``state`` as of ``now`` (0 before the first poll)."""
    summary = summarize(state)
    running = sorted(
        (t for t in state.tasks.values() if t.ended_at is None),
        key=_attention_order,
    )
    ended = sorted(
        (t for t in state.tasks.values() if t.ended_at is not None),
        key=lambda t: (-(t.ended_at or 0.0), t.task.task_id),
    )
    hidden = max(0, len(ended) - MAX_ENDED_ROWS)

    as_of = f"as of {_clock(now)}" if now else "waiting for the first poll"
    ended_note = (
        f'<p class="muted">{hidden} older ended task(s) not listed; '
        '<a href="/metrics">/metrics</a> has them all.</p>'
        if hidden
        else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{int(refresh)}">
<title>{_title(summary)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<div><h1>EC2 import tasks</h1></div>
<div class="asof">{as_of} · refreshes every {int(refresh)} s</div>
<nav><a href="/metrics">Metrics</a><a href="/healthz">Health</a><a
href="/readyz">Readiness</a></nav>
</header>
<main>
{_summary(summary)}
{_failing_banner(summary.failing_regions, now)}
<h2>In progress <span class="count">({len(running)})</span></h2>
{_table(running, now, "No import is in progress.", ended=False)}
<h2>Ended <span class="count">({len(ended)})</span></h2>
{_table(ended[:MAX_ENDED_ROWS], now, "No import has ended recently.", ended=True)}
{ended_note}
<h2>Polled regions <span class="count">({summary.regions})</span></h2>
{_regions(state, now)}
</main>
<footer>Values come from the last poll. Times are UTC.</footer>
</body>
</html>
"""


def _attention_order(tracked: TrackedTask) -> tuple[int, float, str]:
    rank = {STALLED: 0, FAILED: 1, OTHER: 2}.get(kind_of(tracked), 3)
    if rank == 3 and tracked.overdue:
        rank = 2
    return rank, tracked.first_seen, tracked.task.task_id


def _title(summary: Summary) -> str:
    """The tab title, so a pinned tab shows trouble without being opened."""
    parts = [f"{summary.active} active"]
    if summary.stalled:
        parts.append(f"{summary.stalled} stalled")
    if summary.failing_regions:
        parts.append(f"{len(summary.failing_regions)} region(s) failing")
    return f"{', '.join(parts)} · EC2 import tasks"


def _summary(summary: Summary) -> str:
    failing = len(summary.failing_regions)
    cards = (
        ("active", str(summary.active), "Active", False),
        ("stalled", str(summary.stalled), "Stalled", summary.stalled > 0),
        ("failed", str(summary.failed), "Failed", summary.failed > 0),
        ("completed", str(summary.completed), "Completed", False),
        (
            "regions",
            f"{failing}<small> / {summary.regions}</small>",
            "Regions failing",
            failing > 0,
        ),
    )
    return (
        '<section class="summary" aria-label="summary">'
        + "".join(
            f'<div class="card {css}{" lit" if lit else ""}">'
            f'<span class="n">{count}</span><span class="label">{label}</span></div>'
            for css, count, label, lit in cards
        )
        + "</section>"
    )


def _failing_banner(failing: Iterable[RegionHealth], now: float) -> str:
    items = [
        f"<li><strong>{escape(health.account)} / {escape(health.region)}</strong>: "
        f"{escape(health.error or 'no detail')} "
        f'<span class="since">({_failing_for(health, now)})</span></li>'
        for health in failing
    ]
    if not items:
        return ""
    return (
        '<div class="alert" role="alert"><strong>Polls are failing in '
        f"{len(items)} region(s).</strong> Their tasks show the last known "
        f"state, and no stall is judged there.<ul>{''.join(items)}</ul></div>"
    )


def _failing_for(health: RegionHealth, now: float) -> str:
    since = (
        f"failing for {_duration(now - health.failing_since)}"
        if health.failing_since is not None and now
        else "failing"
    )
    if health.last_success is None:
        return f"{since}; no poll has succeeded yet"
    return f"{since}; last success {_ago(now, health.last_success)}"


#: Task table columns as (heading, percent of the width). Both tables share
#: the first five, so their columns line up on the page.
_LEAD_COLUMNS = (
    ("Task", 21),
    ("Account / region", 12),
    ("Status", 9),
    ("Phase / outcome", 13),
    ("Progress", 24),
)
_RUNNING_COLUMNS = (*_LEAD_COLUMNS, ("Age", 6), ("Last change", 9), ("ETA", 6))
_ENDED_COLUMNS = (*_LEAD_COLUMNS, ("Ran for", 9), ("Ended", 12))


def _table(tasks: list[TrackedTask], now: float, empty: str, ended: bool) -> str:
    columns = _ENDED_COLUMNS if ended else _RUNNING_COLUMNS
    widths = "".join(f'<col style="width:{width}%">' for _, width in columns)
    head = "".join(f"<th>{name}</th>" for name, _ in columns)
    if tasks:
        body = "\n".join(_row(tracked, now) for tracked in tasks)
    else:
        body = f'<tr><td class="empty" colspan="{len(columns)}">{empty}</td></tr>'
    return (
        f'<table class="tasks"><colgroup>{widths}</colgroup>'
        f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
    )


def _row(tracked: TrackedTask, now: float) -> str:
    task = tracked.task
    kind = kind_of(tracked)
    label, hint = _BADGES[kind]
    if task.status == DELETING:
        label, hint = "Deleting", "failed or cancelled; AWS is cleaning up"
    badges = f'<span class="badge {kind}" title="{escape(hint)}">{label}</span>'
    if tracked.overdue:
        badges += (
            ' <span class="badge overdue" title="older than the maximum age">'
            "Overdue</span>"
        )

    if kind == FAILED:
        detail = f'<div class="message">{escape(task.status_message or "")}</div>'
    elif kind == DONE:
        detail = f'<span class="id">{escape(task.image_id or "")}</span>'
    else:
        detail = escape(task.phase or task.status_message or "")

    description = (
        f'<div class="desc">{escape(task.description)}</div>'
        if task.description
        else ""
    )
    first_seen = f"first seen {_clock(tracked.first_seen)}"
    if tracked.ended_at is None:
        times = (
            f'<td class="num" title="{first_seen}">'
            f"{_duration(now - tracked.first_seen) if now else ''}</td>"
            f'<td class="num" title="{_clock(tracked.last_change)}">'
            f"{_ago(now, tracked.last_change)}</td>"
            f'<td class="num">{_eta(tracked, now)}</td>'
        )
    else:
        times = (
            f'<td class="num" title="{first_seen}">'
            f"{_duration(tracked.ended_at - tracked.first_seen)}</td>"
            f'<td class="num" title="{_clock(tracked.ended_at)}">'
            f"{_ago(now, tracked.ended_at)}</td>"
        )
    return (
        f'<tr class="task {kind}">'
        f'<td><div class="id">{escape(task.task_id)}</div>{description}</td>'
        f'<td class="where">{escape(tracked.account)}<br>{escape(tracked.region)}</td>'
        f"<td>{badges}</td>"
        f"<td>{detail}</td>"
        f'<td><div class="bars">{_task_bar(tracked, kind)}{_disk_bars(task.disks)}'
        f"</div></td>{times}</tr>"
    )


def _task_bar(tracked: TrackedTask, kind: str) -> str:
    progress = tracked.task.progress
    if kind == DONE:
        progress = 1.0
    elif progress is None and kind == FAILED and tracked.progress_history:
        # The API drops Progress once a task fails; where it stopped is what
        # a person looking at a failure wants to know.
        progress = tracked.progress_history[-1][1]
    size = _size(tracked.task.total_size_bytes)
    return f'{_bar(progress, "main")}<span class="meta">{size}</span>'


def _disk_bars(disks: tuple[SnapshotDisk, ...]) -> str:
    parts = []
    for disk in disks:
        done = disk.status == COMPLETED
        progress = 1.0 if done else disk.progress
        bar = _bar(progress, "disk done" if done else "disk")
        parts.append(
            f'<span class="dev">{escape(disk.device)}</span>{bar}'
            f'<span class="meta disk">{_size(disk.size_bytes)} '
            f"{_disk_status(disk.status)}</span>"
        )
    return "".join(parts)


def _disk_status(status: str | None) -> str:
    """A mark for a disk that is done or gone; the word for anything else."""
    if status in (None, ACTIVE):
        return ""
    if status == COMPLETED:
        return '<span class="done" title="completed">&#10003;</span>'
    if status in (DELETING, DELETED):
        return f'<span class="gone" title="{escape(status)}">&#10007;</span>'
    return escape(status)


def _bar(progress: float | None, css: str) -> str:
    """A bar and its percentage; an empty bar and a dash when unknown."""
    if progress is None:
        return (
            f'<div class="bar {css}" title="no progress reported"></div>'
            f'<span class="pct {css} muted">&ndash;</span>'
        )
    percent = round(min(max(progress, 0.0), 1.0) * 100)
    return (
        f'<div class="bar {css}" role="progressbar" aria-valuenow="{percent}" '
        f'aria-valuemin="0" aria-valuemax="100">'
        f'<div class="fill" style="width:{percent}%"></div></div>'
        f'<span class="pct {css}">{percent}%</span>'
    )


def _eta(tracked: TrackedTask, now: float) -> str:
    seconds = estimate_eta(tracked, now) if now else None
    if seconds is None:
        return '<span class="muted">&ndash;</span>'
    return f'<span title="around {_clock(now + seconds)}">{_duration(seconds)}</span>'


def _regions(state: TrackerState, now: float) -> str:
    head = (
        "<thead><tr><th>Account / region</th><th>Status</th>"
        "<th>Last success</th><th>Poll took</th><th>Error</th></tr></thead>"
    )
    rows = []
    for _, health in sorted(state.regions.items()):
        badge = (
            '<span class="badge ok">OK</span>'
            if health.ok
            else '<span class="badge failed">Failing</span>'
        )
        success = (
            _ago(now, health.last_success) if health.last_success is not None else ""
        )
        rows.append(
            f'<tr class="region{"" if health.ok else " failed"}">'
            f'<td class="where">{escape(health.account)} / {escape(health.region)}'
            f"</td><td>{badge}</td>"
            f'<td class="num">{success or "never"}</td>'
            f'<td class="num">{health.duration:.2f} s</td>'
            f'<td class="message">{escape(health.error or "")}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td class="empty" colspan="5">No poll has run yet.</td></tr>')
    return f"<table>{head}<tbody>{''.join(rows)}</tbody></table>"


def _size(size: float | None) -> str:
    if not size:
        return ""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def _ago(now: float, then: float) -> str:
    if not now:
        return ""
    return f"{_duration(max(now - then, 0.0))} ago"


def _duration(seconds: float) -> str:
    """A short human duration: 45s, 12m, 2h 05m, 3d 4h."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
