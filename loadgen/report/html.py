"""``report.html``: one self-contained page that says how a run went.

Self-contained means the page opens from a mail attachment, a CI artefact or an air-gapped lab
machine exactly as it was written: the plots are PNGs embedded as ``data:`` URIs, the CSS is
inline, and there is no script, web font or link to fetch. PNG rather than SVG keeps the size
bounded whatever the number of points (an SVG of a 10-minute run grows with every interval).

The page is built from the summary (tables) and the results folder (plots), the same inputs
``loadgen report`` has after a kill, so a rebuilt report differs from the original only by its
"not finished" banner. Every value is HTML-escaped: campaign names and threshold expressions
come from user files.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any, Final

from loadgen.report.console import threshold_value
from loadgen.report.plots import Plot, build_plots
from loadgen.report.results import LoadedRun
from loadgen.report.summary import NORTH_PHASES, OPERATION_KEYS, PHASES

__all__ = ["REPORT_NAME", "render_html", "render_report"]

REPORT_NAME: Final = "report.html"
FIGURES: Final = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"),
                  ("max", "max"), ("mean", "mean"))  # fmt: skip

CSS: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 1.5em auto; max-width: 1240px; color: #222; padding: 0 1em; }
.wide { overflow-x: auto; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1em; margin: 1.2em 0 0.3em; }
.meta { color: #555; }
.banner { padding: 0.6em 0.9em; margin: 0.8em 0; border-radius: 4px; font-weight: 600; }
.banner.warn { background: #fff3cd; border: 1px solid #e0c36b; }
.banner.bad { background: #f8d7da; border: 1px solid #d9838c; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; }
th { background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.pass { color: #1a7f37; font-weight: 700; }
td.fail { color: #c62828; font-weight: 700; }
th.twin, td.twin { background: #fafafa; color: #555; }
.note { color: #777; font-style: italic; }
img { max-width: 100%; height: auto; display: block; }
details { margin: 0.5em 0; }
"""


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cells(values: Iterable[object], cls: str = "n") -> str:
    return "".join(f'<td class="{cls}">{escape(_fmt(v))}</td>' for v in values)


def _table(head: Sequence[str], rows: Iterable[str]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _banners(run: LoadedRun, summary: Mapping[str, Any]) -> list[str]:
    out = []
    if not run.finished:
        out.append(
            '<div class="banner bad">NOT FINISHED: the run was killed or crashed before its end. '
            "This report was rebuilt from the intervals on disk and covers the first "
            f"{escape(_fmt(summary.get('duration_s'), 1))} s.</div>"
        )
    elif summary.get("interrupted"):
        out.append(
            '<div class="banner warn">INTERRUPTED: the run was stopped before the end of its '
            "schedule.</div>"
        )
    generator = summary.get("generator") or {}
    if generator.get("saturated"):
        reasons = "; ".join(str(r) for r in generator.get("reasons", []))
        out.append(
            '<div class="banner bad">GENERATOR SATURATED: these numbers describe the load '
            f"generator, not the target{escape(f' ({reasons})' if reasons else '')}.</div>"
        )
    return out


def _header(run: LoadedRun, summary: Mapping[str, Any]) -> str:
    campaign = summary.get("campaign") or run.run.get("campaign") or run.directory.name
    meta = [
        f"started {summary.get('started_at') or '-'} (UTC)",
        f"duration {_fmt(summary.get('duration_s'), 1)} s",
    ]
    if summary.get("load_duration_s") not in (None, summary.get("duration_s")):
        meta.append(f"load window {_fmt(summary.get('load_duration_s'), 1)} s")
    meta.append(f"results {run.directory}")
    return (
        f"<h1>loadgen report: {escape(str(campaign))}</h1>"
        f'<p class="meta">{escape(" · ".join(meta))}</p>' + "".join(_banners(run, summary))
    )


def _thresholds(summary: Mapping[str, Any]) -> str:
    thresholds: Sequence[Mapping[str, Any]] = summary.get("thresholds") or []
    if not thresholds:
        return '<h2>Thresholds</h2><p class="note">No thresholds were set for this run.</p>'
    rows = []
    for threshold in thresholds:
        ok = bool(threshold.get("ok"))
        rows.append(
            "<tr>"
            + f'<td class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</td>'
            + f"<td><code>{escape(str(threshold.get('expression', '')))}</code></td>"
            + _cells(
                threshold_value(str(threshold.get("expression", "")), threshold.get(key))
                for key in ("actual", "limit")
            )
            + f"<td>{escape(str(threshold.get('reason') or ''))}</td></tr>"
        )
    failed = sum(1 for t in thresholds if not t.get("ok"))
    verdict = f"{failed} of {len(thresholds)} failed" if failed else "all passed"
    return f"<h2>Thresholds ({verdict})</h2>" + _table(
        ("result", "expression", "actual", "limit", "reason"), rows
    )


def _operations(summary: Mapping[str, Any]) -> str:
    ops: Mapping[str, int] = summary.get("operations") or {}
    counts = _table(
        OPERATION_KEYS, [f"<tr>{_cells(ops.get(key, 0) for key in OPERATION_KEYS)}</tr>"]
    )
    error_rate = summary.get("error_rate")
    rates = _table(
        ("offered / s", "sent / s", "achieved / s", "error rate"),
        [
            "<tr>"
            + _cells(
                (
                    summary.get("offered_rate"),
                    summary.get("sent_rate"),
                    summary.get("achieved_rate"),
                    None if error_rate is None else f"{error_rate * 100:.3f} %",
                )
            )
            + "</tr>"
        ],
    )
    return "<h2>Operations</h2>" + counts + rates


def _latency_row(name: str, intended: Mapping[str, Any], service: Mapping[str, Any] | None) -> str:
    twin = service or {}
    return (
        f"<tr><td>{escape(name)}</td>"
        + _cells([intended.get("count")])
        + _cells(intended.get(key) for key, _ in FIGURES)
        + _cells((twin.get(key) for key, _ in FIGURES), cls="n twin")
        + "</tr>"
    )


def _latency(summary: Mapping[str, Any]) -> str:
    latency: Mapping[str, Mapping[str, Any]] = summary.get("latency_ms") or {}
    service: Mapping[str, Mapping[str, Any]] = summary.get("service_ms") or {}
    rows = [
        _latency_row(phase, latency[phase], service.get(phase))
        for phase in (*PHASES, *NORTH_PHASES)
        if (latency.get(phase) or {}).get("count")
    ]
    by_name: Mapping[str, Mapping[str, Any]] = summary.get("latency_by_operation_ms") or {}
    by_operation = summary.get("by_operation") or {}
    rows += [
        _latency_row(f"complete: {name}", figures, (by_operation.get(name) or {}).get("service_ms"))
        for name, figures in sorted(by_name.items())
        if figures.get("count")
    ]
    if not rows:
        return '<h2>Latency (ms)</h2><p class="note">No latencies were recorded.</p>'
    labels = "".join(f"<th>{label}</th>" for _, label in FIGURES)
    twin_labels = "".join(f'<th class="twin">{label}</th>' for _, label in FIGURES)
    n = len(FIGURES)
    return (
        "<h2>Latency (ms)</h2>"
        '<p class="meta">Intended: from the time the operation was scheduled to be sent '
        "(coordinated omission corrected). Service time: from the time it was actually sent.</p>"
        '<div class="wide"><table><tr><th rowspan="2">phase</th><th rowspan="2">count</th>'
        f'<th colspan="{n}">intended</th><th class="twin" colspan="{n}">service time</th></tr>'
        f"<tr>{labels}{twin_labels}</tr>{''.join(rows)}</table></div>"
    )


def _outcomes(summary: Mapping[str, Any]) -> str:
    """Errors grouped by cause with the first message, and the outcomes per operation name."""
    parts = []
    causes = summary.get("errors_by_cause") or []
    if causes:
        rows = [
            f"<tr><td>{escape(str(c['cause']))}</td>{_cells([c['count']])}"
            f"<td>{escape(str(c.get('first') or ''))}</td></tr>"
            for c in causes
        ]
        parts.append("<h3>Errors by cause</h3>" + _table(("cause", "count", "first message"), rows))
    names = summary.get("by_operation") or {}
    if len(names) > 1:
        rows = [
            f"<tr><td>{escape(name)}</td>"
            + _cells(row.get(key) for key in ("count", "failed", "timed_out", "errors"))
            + "</tr>"
            for name, row in sorted(names.items())
        ]
        parts.append(
            "<h3>Outcomes by operation</h3>"
            + _table(("operation", "ended", "failed", "timed out", "errors"), rows)
        )
    return "".join(parts)


def _jobs(summary: Mapping[str, Any]) -> str:
    """A north run (issue 10): the jobs' accounting and the split per hop."""
    jobs: Mapping[str, int] = summary.get("jobs") or {}
    if not jobs:
        return ""
    north = (summary.get("extra") or {}).get("north") or {}
    counts = _table(
        ("created", "closed", "timed out", "errors", "rejected", "correlation", "closed by"),
        [
            "<tr>"
            + _cells(jobs.get(k) for k in ("created", "closed", "timed_out", "errors", "rejected"))
            + _cells((north.get("correlation"), north.get("close_by")), cls="")
            + "</tr>"
        ],
    )
    hops: Mapping[str, Mapping[str, Any]] = summary.get("hops_ms") or {}
    rows = [
        f"<tr><td>{escape(label)}</td>"
        + _cells((hops.get(key) or {}).get(k) for k in ("count", "p50", "p90", "p99"))
        + "</tr>"
        for key, label in (
            ("platform_dispatch", "platform dispatch"),
            ("device_work", "device work"),
            ("platform_close", "platform close"),
        )
    ]
    return (
        "<h2>Jobs (north API)</h2>" + counts + "<h3>Per hop (ms)</h3>"
        "<p class=\"meta\">Platform dispatch: from the job's intended creation to the device's "
        "receipt of its operation. Device work: receipt to final answer. Platform close: final "
        "answer to the application told (callback or poll). Each is a per-job gap.</p>"
        + _table(("hop", "count", "p50", "p90", "p99"), rows)
    )


def _generator(summary: Mapping[str, Any]) -> str:
    generator: Mapping[str, Any] = summary.get("generator") or {}
    rows = [
        f"<tr><td>{escape(label)}</td>" + _cells(figures.get(key) for key, _ in FIGURES) + "</tr>"
        for label, figures in (
            ("send lateness", generator.get("lateness_ms") or {}),
            ("event-loop lag", generator.get("loop_lag_ms") or {}),
        )
        if figures.get("count")
    ]
    if not rows:
        return ""
    return "<h3>Generator health (ms)</h3>" + _table(
        ("measure", *(label for _, label in FIGURES)), rows
    )


def _counters(summary: Mapping[str, Any]) -> str:
    counters: Mapping[str, int] = summary.get("counters") or {}
    if not counters:
        return ""
    rows = [
        f"<tr><td>{escape(name)}</td>{_cells([value])}</tr>"
        for name, value in sorted(counters.items())
    ]
    return (
        f"<details><summary>All counters ({len(counters)})</summary>"
        + _table(("counter", "value"), rows)
        + "</details>"
    )


def _plot(plot: Plot) -> str:
    title = f"<h3>{escape(plot.title)}</h3>"
    if plot.png is None:
        return f'{title}<p class="note">Not drawn: {escape(plot.note)}.</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    return f'{title}<img alt="{escape(plot.title)}" src="data:image/png;base64,{data}">'


def render_html(run: LoadedRun, summary: Mapping[str, Any]) -> str:
    """The whole page as a string (``render_report`` writes it)."""
    campaign = summary.get("campaign") or run.directory.name
    written = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    body = [
        _header(run, summary),
        _thresholds(summary),
        _operations(summary),
        _jobs(summary),
        _latency(summary),
        _outcomes(summary),
        _generator(summary),
        _counters(summary),
        "<h2>Plots</h2>",
        *(_plot(plot) for plot in build_plots(run, summary)),
        f'<p class="meta">Written {escape(written)} by loadgen.</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>loadgen report: {escape(str(campaign))}</title>"
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )


def render_report(run: LoadedRun, summary: Mapping[str, Any], out: Path) -> Path:
    """Write the report to ``out`` (a file, or ``out/report.html`` when ``out`` is a folder)."""
    path = out / REPORT_NAME if out.is_dir() else out
    path.write_text(render_html(run, summary), encoding="utf-8")
    return path
