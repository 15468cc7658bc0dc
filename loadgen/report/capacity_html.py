"""``capacity.html``: one self-contained page that says what a capacity search found.

Built from the ``capacity.json`` document alone (never live objects), so it can be rebuilt from
the folder, and in the style of ``report.html``: PNGs from matplotlib ``Figure`` +
``FigureCanvasAgg`` embedded as ``data:`` URIs, inline CSS, no script and no link to fetch.

The reading order is the question's: the written verdict first (``verdict_text``), the figures
that back it (maximum sustainable rate, knee, breaking point, the phase that degraded first),
then the plots against the offered rate (achieved, latency percentiles per phase with the SLO
line, errors), each with the maximum, the knee and the breaking point marked, and the table of
every step. The page states the rule by which the knee is named (``knee_rule``), and says so
when the curve did not bend, so that "no knee" reads as a finding rather than a gap; it also
says what "achieved" counts (operations that succeeded: a refusal is no throughput). Every
value from a user file (campaign name, SLO expressions, reasons) is escaped.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any, Final

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadgen.report.html import CSS
from loadgen.report.plots import COLOURS, DPI, FIGSIZE
from loadgen.report.summary import PHASES

__all__ = [
    "CAPACITY_HTML",
    "capacity_plots",
    "knee_rule",
    "render_capacity_html",
    "write_capacity_report",
]

CAPACITY_HTML: Final = "capacity.html"
LEVELS: Final = (("p50", "p50", COLOURS["p50"]), ("p99", "p99", COLOURS["p99"]),
                 ("p999", "p99.9", "#9467bd"))  # fmt: skip
VERDICT_COLOURS: Final = {"pass": COLOURS["ok"], "fail": COLOURS["bad"], "generator_limit": "#555"}
MARKS: Final = (
    ("max_sustainable_rate", "max sustainable", COLOURS["ok"], "--"),
    ("knee_rate", "knee", COLOURS["p90"], ":"),
    ("breaking_rate", "breaking point", COLOURS["bad"], "--"),
)


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    figure.subplots_adjust(left=0.08, right=0.97, bottom=0.16, top=0.95)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _steps(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return sorted(document.get("steps") or [], key=lambda s: float(s["offered_rate"]))


def _x_label(document: Mapping[str, Any]) -> str:
    if document.get("dimension") == "devices":
        return f"devices (at {document.get('fixed_rate') or 0:g} ops/s)"
    return "offered rate (ops/s)"


def _mark(axes: Axes, document: Mapping[str, Any]) -> None:
    for key, label, colour, style in MARKS:
        value = document.get(key)
        if value is not None:
            axes.axvline(value, color=colour, linestyle=style, linewidth=1.1, label=label)


def _finish(axes: Axes, document: Mapping[str, Any], ylabel: str) -> None:
    axes.set_xlabel(_x_label(document))
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")


def achieved_vs_offered(document: Mapping[str, Any]) -> bytes | str:
    steps = _steps(document)
    if not steps:
        return "no step was measured"
    figure, axes = _figure()
    xs = [float(s["offered_rate"]) for s in steps]
    ys = [float(s["achieved_rate"]) for s in steps]
    if document.get("dimension") == "devices":
        rate = float(document.get("fixed_rate") or 0.0)
        axes.axhline(rate, color=COLOURS["offered"], linestyle="--", label="offered rate")
    else:
        top = max(xs)
        axes.plot([0, top], [0, top], color=COLOURS["offered"], linestyle="--",
                  label="achieved = offered")  # fmt: skip
    axes.plot(xs, ys, color=COLOURS["completed"], linewidth=1.2, label="achieved")
    for verdict, colour in VERDICT_COLOURS.items():
        chosen = [i for i, step in enumerate(steps) if step["verdict"] == verdict]
        if chosen:
            axes.scatter([xs[i] for i in chosen], [ys[i] for i in chosen], color=colour,
                         zorder=3, s=22, label=verdict)  # fmt: skip
    _mark(axes, document)
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    _finish(axes, document, "achieved (succeeded ops/s)")
    return _png(figure)


def latency_vs_offered(document: Mapping[str, Any], phase: str) -> bytes | str:
    steps = _steps(document)
    points = [
        (float(s["offered_rate"]), figures)
        for s in steps
        if (figures := ((s.get("summary") or {}).get("latency_ms") or {}).get(phase))
        and figures.get("count")
    ]
    if not points:
        return f"no {phase} latencies were recorded"
    figure, axes = _figure()
    values: list[float] = []
    for key, label, colour in LEVELS:
        series = [(x, float(f[key])) for x, f in points if f.get(key) is not None]
        if series:
            axes.plot(*zip(*series, strict=True), color=colour, marker="o", markersize=3,
                      linewidth=1.3, label=label)  # fmt: skip
            values += [y for _, y in series]
    limits: Mapping[str, Any] = (document.get("plan") or {}).get("slo_limits_ms") or {}
    for expression, limit in limits.get(phase) or ():
        axes.axhline(limit, color=COLOURS["bad"], linewidth=1.6, alpha=0.7,
                     label=f"SLO {expression}")  # fmt: skip
        values.append(limit)
    _mark(axes, document)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        axes.set_yscale("log")
    else:
        axes.set_ylim(bottom=0)
    axes.set_xlim(left=0)
    _finish(axes, document, f"{phase} latency (ms, intended)")
    return _png(figure)


def errors_vs_offered(document: Mapping[str, Any]) -> bytes | str:
    steps = _steps(document)
    if not steps:
        return "no step was measured"
    figure, axes = _figure()
    xs = [float(s["offered_rate"]) for s in steps]
    rates = [100.0 * float((s.get("summary") or {}).get("error_rate") or 0.0) for s in steps]
    axes.plot(xs, rates, color=COLOURS["failed"], marker="o", markersize=3, label="error rate")
    limit = (document.get("plan") or {}).get("max_error_rate")
    if limit is not None:
        axes.axhline(100.0 * float(limit), color=COLOURS["bad"], linewidth=1.6, alpha=0.5,
                     linestyle="-.", label=f"max error rate {100.0 * float(limit):g} %")  # fmt: skip
    _mark(axes, document)
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0, top=max(1.0, *rates) * 1.1)
    _finish(axes, document, "errors (% of issued)")
    return _png(figure)


def capacity_plots(document: Mapping[str, Any]) -> list[tuple[str, str, bytes | str]]:
    """``(key, title, PNG or note)`` for every plot of the page, in order."""
    x = "devices" if document.get("dimension") == "devices" else "offered rate"
    plots: list[tuple[str, str, bytes | str]] = [
        ("achieved", f"Achieved vs {x}", achieved_vs_offered(document))
    ]
    present = [
        phase
        for phase in PHASES
        if any(
            (((s.get("summary") or {}).get("latency_ms") or {}).get(phase) or {}).get("count")
            for s in document.get("steps") or []
        )
    ]
    plots += [
        (f"latency_{phase}", f"{phase}: p50 / p99 / p99.9 vs {x}",
         latency_vs_offered(document, phase))
        for phase in sorted(present, key=lambda p: p != "complete")
    ]  # fmt: skip
    plots.append(("errors", f"Errors vs {x}", errors_vs_offered(document)))
    return plots


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _row(cells: Sequence[object], classes: Sequence[str] = ()) -> str:
    out = []
    for index, cell in enumerate(cells):
        cls = classes[index] if index < len(classes) else "n"
        out.append(f'<td class="{cls}">{escape(_fmt(cell))}</td>')
    return "<tr>" + "".join(out) + "</tr>"


def _table(head: Sequence[str], rows: Iterable[str]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def knee_rule(document: Mapping[str, Any]) -> str:
    """How the knee is named (``loadgen.campaign.capacity.knee_rate``), with this search's
    factor."""
    factor = float((document.get("search") or {}).get("knee_factor") or 2.0)
    x = "device count" if document.get("dimension") == "devices" else "rate"
    return (
        f"The knee is the first step, in order of {x}, whose complete p99 is more than "
        f"{factor:g} times the p99 at the lowest {x} measured and grew faster than the {x} since "
        f"the step before it (p99 ratio > {x} ratio). A flat curve has no knee, nor has one "
        f"that grows only in proportion to the {x}. Steps the generator limited are left out."
    )


def _result(document: Mapping[str, Any]) -> str:
    unit = "devices" if document.get("dimension") == "devices" else "ops/s"
    knee: object = document.get("knee_rate")
    if knee is None and document.get("finished") and document.get("steps"):
        knee = "none: p99 did not bend"
    rows = [
        _row((f"maximum sustainable ({unit})", document.get("max_sustainable_rate")), ("", "n")),
        _row((f"knee ({unit})", knee), ("", "n")),
        _row((f"breaking point ({unit})", document.get("breaking_rate")), ("", "n")),
        _row(("phase that degraded first", document.get("first_degraded_phase")), ("", "")),
        _row(("generator limited", bool(document.get("generator_limited"))), ("", "")),
        _row(("search exhausted (max reached)", bool(document.get("exhausted"))), ("", "")),
    ]
    rule = f'<p class="note" id="knee-rule">{escape(knee_rule(document))}</p>'
    return "<h2>Result</h2>" + _table(("", "value"), rows) + rule


def _step_rows(document: Mapping[str, Any]) -> str:
    rows = []
    steps: list[Mapping[str, Any]] = document.get("steps") or []
    for index, step in enumerate(steps, start=1):
        summary = step.get("summary") or {}
        latency = summary.get("latency_ms") or {}
        complete = latency.get("complete") or {}
        ack = latency.get("ack") or {}
        verdict = str(step.get("verdict"))
        cls = {"pass": "pass", "fail": "fail"}.get(verdict, "")
        error_rate = summary.get("error_rate")
        rows.append(
            _row(
                (
                    index,
                    float(step["offered_rate"]),
                    float(step["achieved_rate"]),
                    complete.get("p50"),
                    complete.get("p99"),
                    complete.get("p999"),
                    ack.get("p99"),
                    None if error_rate is None else f"{100 * float(error_rate):.2f} %",
                    verdict.upper(),
                    "; ".join(step.get("reasons") or ()),
                ),
                ("n",) * 8 + (cls, ""),
            )
        )
    x = "devices" if document.get("dimension") == "devices" else "offered/s"
    head = ("#", x, "achieved/s (succeeded)", "complete p50", "complete p99", "complete p99.9", "ack p99",
            "errors", "verdict", "reasons")  # fmt: skip
    return "<h2>Steps (in the order run; latencies in ms)</h2>" + _table(head, rows)


def _plot(title: str, drawn: bytes | str) -> str:
    heading = f"<h3>{escape(title)}</h3>"
    if isinstance(drawn, str):
        return f'{heading}<p class="note">Not drawn: {escape(drawn)}.</p>'
    data = base64.b64encode(drawn).decode("ascii")
    return f'{heading}<img alt="{escape(title)}" src="data:image/png;base64,{data}">'


def render_capacity_html(document: Mapping[str, Any]) -> str:
    """The whole page from a ``capacity.json`` document."""
    campaign = str(document.get("campaign") or "capacity")
    plan: Mapping[str, Any] = document.get("plan") or {}
    meta = [
        f"started {document.get('started_at') or '-'} (UTC)",
        f"dimension {document.get('dimension') or 'rate'}",
        f"warm-up {_fmt(plan.get('warmup_s'))} s + hold {_fmt(plan.get('hold_s'))} s per step",
        f"{len(document.get('steps') or [])} steps",
    ]
    if document.get("duration_s") is not None:
        meta.append(f"search took {_fmt(document.get('duration_s'))} s")
    verdict = str(document.get("verdict") or "The search did not finish: steps so far below.")
    kind = "bad" if document.get("generator_limited") or not document.get("finished") else "ok"
    slos = plan.get("slos") or []
    criteria = [f"<li><code>{escape(str(s))}</code></li>" for s in slos]
    criteria.append(
        f"<li>achieved &gt;= {escape(_fmt(100 * float(plan.get('min_achieved_ratio', 0.98)), 0))}"
        " % of offered (achieved: operations that <em>succeeded</em> per second of the hold; a"
        " refusal such as ALREADY_IN_PROGRESS ends an operation but is not throughput)</li>"
    )
    criteria.append(
        f"<li>error rate &lt;= {escape(_fmt(100 * float(plan.get('max_error_rate', 0.01)), 2))}"
        " %</li><li>the generator stayed healthy (else: generator_limit)</li>"
    )
    body = [
        f"<h1>loadgen capacity: {escape(campaign)}</h1>",
        f'<p class="meta">{escape(" · ".join(meta))}</p>',
        f'<div class="banner {kind}" id="verdict">{escape(verdict)}</div>',
        _result(document),
        "<h2>A step passes when</h2><ul>" + "".join(criteria) + "</ul>",
        "<h2>Plots</h2>",
        *(_plot(title, drawn) for _, title, drawn in capacity_plots(document)),
        _step_rows(document),
    ]
    css = CSS + ".banner.ok { background: #e6f4ea; border: 1px solid #8cc59a; }\n"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>loadgen capacity: {escape(campaign)}</title>"
        f"<style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_capacity_report(directory: Path, document: Mapping[str, Any]) -> Path:
    path = directory / CAPACITY_HTML
    path.write_text(render_capacity_html(document), encoding="utf-8")
    return path
