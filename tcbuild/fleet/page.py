"""`fleet --serve`'s page: the fleet report as one HTML page, with an SVG chart, no script.

Pure: `page(report)` is the same bytes for the same report (no clock, no order of a set).
Everything a node, a log or the tree said is escaped; the page refreshes itself every
`REFRESH` seconds (a meta tag, so it works without JavaScript).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from .overview import FleetReport

REFRESH = 10
ROLLING = ("draining", "rebooting", "booted", "reverting")  # a host's steps under way
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse}th,td{padding:.2em .6em;text-align:left;vertical-align:top}
th{background:#eee}tr:nth-child(even) td{background:#f8f8f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}code,.mono{font-family:monospace}
.mono{white-space:nowrap}td.time{min-width:6em}
.state{font-weight:600;border-radius:3px;padding:0 .4em;white-space:nowrap}
.current{background:#cfc}.stale{background:#fc9}.unknown{background:#ddd}
.never-seen{background:#eee;color:#777}.new{background:#cdf}.rolling-out{background:#ff9}
.error{color:#a00}.summary span{margin-right:1em}
td.error,td.note{min-width:12em;max-width:30em;overflow-wrap:anywhere}
"""
WIDTH, LABEL, ROW = 720, 250, 26  # the chart: its width, the release names' column, a row


def state_of(host: Mapping[str, Any], rollout: Mapping[str, Any] | None) -> str:
    """The state the page shows: `rolling out` while a rollout takes the host through its
    steps, else the view's (current, stale, unknown, never seen)."""
    mine = host.get("rollout")
    if rollout is not None and mine is not None and mine["state"] in ROLLING:
        return "rolling out"
    return str(host["state"])


def page(report: FleetReport) -> bytes:
    """The whole page, UTF-8."""
    shown = report.as_json()
    hosts: list[dict[str, Any]] = shown["hosts"]
    rollout = shown["rollout"]
    states = [state_of(h, rollout) for h in hosts] + ["new"] * len(shown["new"])
    counts = {s: states.count(s) for s in sorted(set(states))}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        "<title>tcbuild fleet</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>tcbuild fleet</h1>",
        '<p class="summary" id="summary">'
        + "".join(f"<span>{n} {escape(s)}</span>" for s, n in counts.items())
        + f"<span>{len(hosts)} hosts</span></p>",
        *_rollout(rollout), *_nodes(hosts, states), *_new(report),
        *_releases(shown["releases"], hosts), *_chart(shown["releases"], hosts),
        '<p><a href="/api/fleet">/api/fleet</a> (JSON) · <a href="/metrics">/metrics</a> '
        "(Prometheus)</p>", "</body></html>", ""]
    return "\n".join(parts).encode()


def _cell(value: object, css: str = "") -> str:
    text = "" if value is None else escape(str(value))
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def _when(iso: str | None) -> str | None:
    """2026-11-30T09:03:00Z as 2026-11-30 09:03:00Z: a cell may wrap between day and time."""
    return iso.replace("T", " ", 1) if iso else iso


def _state(state: str) -> str:
    return f'<span class="state {state.replace(" ", "-").lower()}">{escape(state)}</span>'


def _rollout(rollout: Mapping[str, Any] | None) -> list[str]:
    if rollout is None:
        return []
    return [f'<p id="rollout">Rollout of release <code>{escape(rollout["release"])}</code>: '
            f'{escape(rollout["phase"])}, wave {rollout["wave"]} of {rollout["waves"]}</p>']


def _nodes(hosts: Sequence[Mapping[str, Any]], states: Sequence[str]) -> list[str]:
    rows = ['<h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>address</th>'
            "<th>state</th><th>build</th><th>release</th><th>booted</th><th>boot (s)</th>"
            "<th>last seen</th><th>last error</th><th>note</th></tr></thead><tbody>"]
    for host, state in zip(hosts, states, strict=False):
        error = host["last_error"]
        mine = host.get("rollout")
        note = host["note"] or ""
        if mine is not None:
            note = f"rollout wave {mine['wave']}: {mine['state']}" + (
                f" ({mine['note']})" if mine["note"] else "") + (f"; {note}" if note else "")
        elif host["state"] == "stale" and host["named"]:
            note = f"{host['named']['config']} names {host['named']['release']}"
        seconds = host["boot_seconds"]
        rows.append(
            f'<tr data-host="{escape(host["name"])}" data-state="{escape(state)}">'
            + _cell(host["name"]) + _cell(host["ip"], "mono") + f"<td>{_state(state)}</td>"
            + _cell(host["build"], "mono") + _cell(host["release"], "mono")
            + _cell(_when(host["booted"]), "time")
            + _cell(f"{seconds:.1f}" if seconds is not None else "", "num")
            + _cell(_when(host["last_seen"]), "time")
            + (_cell(f"{_when(error['time'])} {error['line']}", "error") if error else _cell(""))
            + _cell(note, "note") + "</tr>")
    return [*rows, "</tbody></table>"]


def _new(report: FleetReport) -> list[str]:
    if not report.new:
        return []
    rows = ['<h2>New machines</h2><table id="new"><thead><tr><th>MAC</th><th>address</th>'
            "<th>state</th><th>first seen</th><th>last seen</th><th>hardware</th></tr>"
            "</thead><tbody>"]
    for machine in report.new:
        m = machine.as_json()
        rows.append(f'<tr data-mac="{escape(m["mac"])}">' + _cell(m["mac"], "mono")
                    + _cell(m["ip"], "mono") + f"<td>{_state('new')}</td>"
                    + _cell(m["first_seen"]) + _cell(m["last_seen"])
                    + _cell(machine.report.summary()) + "</tr>")
    return [*rows, "</tbody></table>"]


def _releases(releases: Sequence[Mapping[str, Any]],
              hosts: Sequence[Mapping[str, Any]]) -> list[str]:
    if not releases:
        return ["<h2>Releases</h2><p>No TFTP root given (<code>--tftp</code>): no releases.</p>"]
    rows = ['<h2>Releases</h2><table id="releases"><thead><tr><th>release</th><th>recipe</th>'
            "<th>published</th><th>configs booting it</th><th>nodes on it</th></tr></thead>"
            "<tbody>"]
    for release in reversed(releases):  # newest first
        on = sum(1 for h in hosts if h["release"] == release["id"])
        rows.append(f'<tr data-release="{escape(release["id"])}">'
                    + _cell(release["id"], "mono") + _cell(release["recipe"])
                    + _cell(release["time"]) + _cell(", ".join(release["configs"]) or "none")
                    + _cell(on, "num") + "</tr>")
    return [*rows, "</tbody></table>"]


def _chart(releases: Sequence[Mapping[str, Any]],
           hosts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each release's boot durations: a dot per node, a bar at the median."""
    order = [r["id"] for r in releases]
    durations: dict[str, list[tuple[float, str]]] = {}
    for h in hosts:
        if h["boot_seconds"] is not None:
            durations.setdefault(h["release"] or "unknown", []).append(
                (float(h["boot_seconds"]), h["name"]))
    rows = [r for r in order if r in durations] + sorted(set(durations) - set(order))
    title = "<h2>Boot durations by release</h2>"
    if not rows:
        return [title, "<p>No node said how long its boot took (images before uptime=).</p>"]
    top = _ceiling(max(s for values in durations.values() for s, _ in values))
    span = WIDTH - LABEL - 20
    height = ROW * len(rows) + 30
    svg = [f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
           'aria-label="boot durations by release" font-family="monospace" font-size="11">']
    for i, release in enumerate(rows):
        y = ROW * i + ROW // 2
        values = sorted(durations[release])
        median = statistics.median(s for s, _ in values)
        svg.append(f'<text x="{LABEL - 8}" y="{y + 4}" text-anchor="end">'
                   f"{escape(release[-32:])}</text>")
        svg.append(f'<line x1="{LABEL}" y1="{y}" x2="{LABEL + span}" y2="{y}" stroke="#ddd"/>')
        x = LABEL + span * median / top
        svg.append(f'<rect x="{x - 1.5:.1f}" y="{y - 9}" width="3" height="18" fill="#36c">'
                   f"<title>median {median:.1f} s</title></rect>")
        for seconds, name in values:
            svg.append(f'<circle cx="{LABEL + span * seconds / top:.1f}" cy="{y}" r="4" '
                       f'fill="#e63" fill-opacity="0.6"><title>{escape(name)}: {seconds:.1f} s'
                       "</title></circle>")
    axis = ROW * len(rows) + 4
    svg.append(f'<line x1="{LABEL}" y1="{axis}" x2="{LABEL + span}" y2="{axis}" stroke="#888"/>')
    for tick in (0.0, top / 2, top):
        x = LABEL + span * tick / top
        svg.append(f'<text x="{x:.1f}" y="{axis + 16}" text-anchor="middle">{tick:g} s</text>')
    return [title, *svg, "</svg>"]


def _ceiling(seconds: float) -> float:
    """A round scale above `seconds`: 1, 2 or 5 times a power of ten."""
    scale = 1.0
    while scale * 10 <= seconds:
        scale *= 10
    while scale > 0.1 and scale / 10 > seconds:
        scale /= 10
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= seconds) if seconds > 0 else 1.0
