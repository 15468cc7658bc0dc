"""The report's plots, drawn with matplotlib and returned as PNG bytes.

Every plot reads the results folder as written (interval histograms, ``timeseries.csv``) or the
summary, never live objects, so a report rebuilt after a kill looks like one written at the end.
It reads them as ``load_run`` streams them: percentiles per interval (``LatencySeries``) and
numeric columns (``Timeseries``), never the interval histograms themselves; and each series is
one artist (a line, a filled step), not one object per interval. A series longer than
``MAX_POINTS`` is thinned before it is drawn (``thin``): each bucket of consecutive intervals
keeps its lowest and its highest value, in time order, so every spike is still drawn at its
height and the line covers what the full series would, pixel for pixel (the plot is ~800 pixels
wide); drawing cost and memory then stay the same however long the run was.
Each builder returns PNG bytes or, when its data is absent (a sync-only run has no
``first_response``; a folder killed before its first interval has no rows), a short note saying
what is missing: a report is never refused because one plot has nothing to show.

Figures are ``matplotlib.figure.Figure`` objects rendered by ``FigureCanvasAgg`` directly: no
pyplot, no global backend switch, no state shared between reports or threads.

The percentile spectrum is HdrHistogram's own plot (``HistogramLogAnalyzer``, hdrhistogram.org's
plotter): the x axis is ``1 / (1 - p)`` on a log scale, so 90 %, 99 %, 99.9 % ... are evenly
spaced and the tail, where coordinated omission hides, gets as much room as the median.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import numpy as np
from hdrh.histogram import HdrHistogram
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from loadgen.metrics.hdr import values_at
from loadgen.report.results import OVER_TIME, LoadedRun, Timeseries

__all__ = [
    "FIGSIZE",
    "MAX_POINTS",
    "Plot",
    "build_plots",
    "coarse_steps",
    "spectrum_points",
    "thin",
]

FIGSIZE: Final = (9.0, 3.2)  # inches; at DPI 100 one PNG is 20-60 kB
DPI: Final = 100
TIME_PHASES: Final = OVER_TIME
SPECTRUM_PHASES: Final = ("complete", "complete.service", "ack", "first_response")
SPECTRUM_NINES: Final = 5  # the spectrum ends at 99.999 %
SPECTRUM_POINTS: Final = 251
#: The most points a line over time is drawn with: more than the plot is wide in pixels.
MAX_POINTS: Final = 2000
COLOURS: Final = {
    "p50": "#1f77b4",
    "p90": "#ff7f0e",
    "p99": "#d62728",
    "service": "#7f7f7f",
    "offered": "#7f7f7f",
    "sent": "#1f77b4",
    "completed": "#2ca02c",
    "in_flight": "#9467bd",
    "failed": "#d62728",
    "timed_out": "#ff7f0e",
    "errors": "#8c564b",
    "lateness": "#d62728",
    "loop_lag": "#1f77b4",
    "cpu": "#2ca02c",
    "ok": "#2ca02c",
    "bad": "#d62728",
    "drain": "#8c8c8c",
}


@dataclass(frozen=True, slots=True)
class Plot:
    """One plot of the report: its PNG, or the note saying why it is absent."""

    key: str
    title: str
    png: bytes | None = None
    note: str = ""

    def __repr__(self) -> str:
        size = f"{len(self.png)} B" if self.png is not None else f"skipped: {self.note}"
        return f"<Plot {self.key} {size}>"


def _figure(left: float = 0.07) -> Figure:
    # fixed margins (room for a twin axis on the right): constrained layout would double the
    # drawing time of every figure for the same result
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    figure.subplots_adjust(left=left, right=0.92, bottom=0.15, top=0.96)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    # A figure, its axes and its canvas refer to each other: only the cycle collector would free
    # them (and the canvas's pixel buffer), after every plot of the report had piled up.
    figure.clear()
    figure.canvas = None  # type: ignore[assignment]
    return buffer.getvalue()


def _column(columns: Timeseries, name: str) -> Sequence[float]:
    return columns.column(name)


def thin(xs: Sequence[float], ys: Sequence[float]) -> tuple[Sequence[float], Sequence[float]]:
    """``(xs, ys)`` as they are when at most ``MAX_POINTS`` long; otherwise the lowest and the
    highest point of each of ``MAX_POINTS // 2`` buckets of consecutive points, in time order
    (a bucket with no number, NaN only, stays a gap)."""
    count = len(xs)
    if count <= MAX_POINTS:
        return xs, ys
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    size = -(-count // (MAX_POINTS // 2))
    out_x: list[float] = []
    out_y: list[float] = []
    for start in range(0, count, size):
        part = y[start : start + size]
        known = ~np.isnan(part)
        if not known.any():
            out_x.append(float(x[start]))
            out_y.append(math.nan)
            continue
        low = int(np.argmin(np.where(known, part, np.inf)))
        high = int(np.argmax(np.where(known, part, -np.inf)))
        for index in sorted({low, high}):
            out_x.append(float(x[start + index]))
            out_y.append(float(part[index]))
    return out_x, out_y


def coarse_steps(
    edges: Sequence[float], values: Sequence[float]
) -> tuple[Sequence[float], Sequence[float]]:
    """A step series (``len(edges) == len(values) + 1``) with at most ``MAX_POINTS // 2`` steps:
    each coarse step spans a bucket of consecutive ones at the height of the highest of them."""
    count = len(values)
    if count <= MAX_POINTS // 2:
        return edges, values
    size = -(-count // (MAX_POINTS // 2))
    heights = np.asarray(values, dtype=np.float64)
    starts = range(0, count, size)
    coarse = [float(heights[start : start + size].max()) for start in starts]
    return [edges[start] for start in starts] + [edges[-1]], coarse


def _has_data(values: Sequence[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def _shade_drain(axes: Any, columns: Timeseries) -> None:
    """Shade the intervals after the load (the drain): their latencies still count, but nothing
    new was sent, so a falling rate there is no shortfall. Adjacent drain intervals make one
    span (the drain is one stretch at the end: one artist, however long it is)."""
    spans: list[list[float]] = []
    start = 0.0
    for end, phase in zip(columns.column("t_s"), columns.phases, strict=True):
        if math.isnan(end):
            continue
        if phase == "drain":
            if spans and spans[-1][1] == start:
                spans[-1][1] = end
            else:
                spans.append([start, end])
        start = end
    for number, (low, high) in enumerate(spans):
        axes.axvspan(low, high, color=COLOURS["drain"], alpha=0.18, linewidth=0,
                     label=None if number else "drain")  # fmt: skip


def _count(histogram: HdrHistogram | None) -> int:
    return 0 if histogram is None else int(histogram.get_total_count())


# --- (a) latency percentiles over time ---------------------------------------------------------


def _ms(values: Sequence[float]) -> list[float]:
    return [value / 1000 for value in values]


def latency_over_time(run: LoadedRun, phase: str) -> bytes | str:
    series = run.latency.get(phase)
    if series is None or not len(series):
        return f"no {phase} latencies were recorded"
    figure = _figure()
    axes = figure.add_subplot()
    for key, values in (("p50", series.p50), ("p90", series.p90), ("p99", series.p99)):
        xs, ys = thin(series.ends, values)
        axes.plot(xs, _ms(ys), color=COLOURS[key], label=f"{key} (intended)", linewidth=1.4)
    twin = run.latency.get(f"{phase}.service")
    if twin is not None and len(twin):
        xs, ys = thin(twin.ends, twin.p99)
        axes.plot(xs, _ms(ys), color=COLOURS["service"], linestyle="--", linewidth=1.2,
                  label="p99 (service time)")  # fmt: skip
    _shade_drain(axes, run.columns)
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("latency (ms)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return _png(figure)


# --- (b) percentile spectrum ---------------------------------------------------------------------


def spectrum_points(histogram: HdrHistogram) -> tuple[list[float], list[float]]:
    """(x = 1 / (1 - p), latency ms) from p = 0 to 99.999 %, evenly spaced on the log x axis."""
    xs = [10.0 ** (SPECTRUM_NINES * i / (SPECTRUM_POINTS - 1)) for i in range(SPECTRUM_POINTS)]
    percentiles = [100.0 * (1.0 - 1.0 / x) for x in xs]
    return xs, [value / 1000 for value in values_at(histogram, percentiles)]


def percentile_spectrum(run: LoadedRun) -> bytes | str:
    present = [name for name in SPECTRUM_PHASES if _count(run.totals.get(name))]
    if not present:
        return "no latencies were recorded"
    figure = _figure()
    axes = figure.add_subplot()
    styles = {
        "complete": ("complete (intended)", COLOURS["p99"], "-"),
        "complete.service": ("complete (service time)", COLOURS["service"], "--"),
        "ack": ("ack (intended)", COLOURS["p50"], "-"),
        "first_response": ("first_response (intended)", COLOURS["p90"], "-"),
    }
    for name in present:
        label, colour, style = styles[name]
        xs, ys = spectrum_points(run.totals[name])
        axes.plot(xs, ys, label=label, color=colour, linestyle=style, linewidth=1.4)
    axes.set_xscale("log")
    axes.set_xlim(1.0, 10.0**SPECTRUM_NINES)
    ticks = [10.0**k for k in range(SPECTRUM_NINES + 1)]
    axes.set_xticks(ticks, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"][: len(ticks)])
    axes.minorticks_off()
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return _png(figure)


# --- (c) offered vs achieved rate ----------------------------------------------------------------


def rates_over_time(run: LoadedRun) -> bytes | str:
    rows = run.columns
    if not len(rows):
        return "timeseries.csv has no rows"
    times = _column(rows, "t_s")
    figure = _figure()
    axes = figure.add_subplot()
    for column, key, label, style in (
        ("offered_rate", "offered", "offered", "--"),
        ("sent_per_s", "sent", "sent", "-"),
        ("completed_per_s", "completed", "completed (achieved)", "-"),
    ):
        values = _column(rows, column)
        if _has_data(values):
            axes.plot(*thin(times, values), color=COLOURS[key], linestyle=style, label=label)
    _shade_drain(axes, rows)
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("operations / s")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return _png(figure)


# --- (d) in-flight and errors --------------------------------------------------------------------


def in_flight_and_errors(run: LoadedRun) -> bytes | str:
    rows = run.columns
    if not len(rows):
        return "timeseries.csv has no rows"
    times = _column(rows, "t_s")
    # each count fills its interval, from the previous row's end (0 for the first) to its own
    edges = [0.0, *(t for t in times if not math.isnan(t))]
    known = [not math.isnan(t) for t in times]
    figure = _figure()
    axes = figure.add_subplot()
    errors = figure.axes[0].twinx()
    handles: list[Artist] = []
    bottom: Sequence[float] = []
    for column in ("failed", "timed_out", "errors"):
        counts = _column(rows, column)
        per_interval = [
            0.0 if math.isnan(v) else v for v, ok in zip(counts, known, strict=True) if ok
        ]
        if not any(per_interval):
            continue
        steps, values = coarse_steps(edges, per_interval)
        bottom = bottom or [0.0] * len(values)
        # one filled step per kind, stacked: one artist, not one bar object per interval
        top = [b + v for b, v in zip(bottom, values, strict=True)]
        handles.append(errors.stairs(top, steps, baseline=bottom, fill=True,
                                     color=COLOURS[column], alpha=0.6, label=column))  # fmt: skip
        bottom = top
    # "errors" is one of the three ways to end badly: the axis counts all three
    errors.set_ylabel("ended badly per interval" if handles else "none ended badly")
    errors.set_ylim(bottom=0, top=max([1.0, *bottom]) * 1.1)
    errors.yaxis.set_major_locator(MaxNLocator(integer=True))
    in_flight = _column(rows, "in_flight")
    if _has_data(in_flight):
        (line,) = axes.plot(*thin(times, in_flight), color=COLOURS["in_flight"], label="in flight")
        handles.insert(0, line)
    queued = [0.0 if math.isnan(v) else v for v in _column(rows, "queued")]
    if any(queued):  # of those in flight, issued but not written yet (a busy pool)
        (line,) = axes.plot(*thin(times, queued), color=COLOURS["in_flight"], linestyle="--",
                            label="of which queued (not sent)")  # fmt: skip
        handles.insert(1, line)
    _shade_drain(errors, rows)
    axes.set_zorder(errors.get_zorder() + 1)  # the line over the bars
    axes.patch.set_visible(False)
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("operations in flight")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(handles=handles, loc="upper left", fontsize="small")
    return _png(figure)


# --- (e) result codes ----------------------------------------------------------------------------


def result_codes(summary: Mapping[str, Any]) -> bytes | str:
    results: Mapping[str, int] = summary.get("results") or {}
    if not results:
        return "no result codes were counted"
    items = sorted(results.items(), key=lambda item: item[1])
    longest = max(len(name) for name in results)
    figure = _figure(left=min(0.5, 0.04 + longest * 0.0095))  # room for the code names
    axes = figure.add_subplot()
    names = [name for name, _ in items]
    counts = [count for _, count in items]
    colours = [COLOURS["ok"] if name == "SUCCESSFUL" else COLOURS["bad"] for name in names]
    bars = axes.barh(names, counts, color=colours)
    axes.bar_label(bars, padding=3, fontsize="small")
    axes.set_xlim(0, max(counts) * 1.15 or 1)
    axes.set_xlabel("operations")
    axes.tick_params(axis="y", labelsize="small")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


# --- (g) the north side's hops (issue 10) ----------------------------------------------------------

#: The hops of a job, in order, with their colours and labels.
HOP_SEGMENTS: Final = (
    ("platform_dispatch", "#1f77b4", "platform dispatch (job intended → device received)"),
    ("device_work", "#ff7f0e", "device work (received → final answer)"),
    ("platform_close", "#2ca02c", "platform close (final answer → application told)"),
)


def per_hop(summary: Mapping[str, Any]) -> bytes | str:
    """Where a job's time goes: one stacked bar per percentile (p50, p90, p99), a segment per
    hop. Each hop is its own per-job distribution, so the bars show each hop's percentile side
    by side (they add up to about, not exactly, the ``closed`` percentile)."""
    hops: Mapping[str, Mapping[str, Any]] = summary.get("hops_ms") or {}
    if not any((hops.get(key) or {}).get("count") for key, _, _ in HOP_SEGMENTS):
        return "no job crossed a hop"
    levels = ("p50", "p90", "p99")
    closed = (summary.get("latency_ms") or {}).get("closed") or {}
    totals = [
        sum(float((hops.get(key) or {}).get(level) or 0.0) for key, _, _ in HOP_SEGMENTS)
        for level in levels
    ]
    # room on the right for the legend, beside the longest bar
    right = max(*totals, float(closed.get("p99") or 0.0)) * 1.75 or 1.0
    figure = _figure(left=0.07)
    axes = figure.add_subplot()
    lefts = [0.0] * len(levels)
    for key, colour, label in HOP_SEGMENTS:
        figures = hops.get(key) or {}
        widths = [float(figures.get(level) or 0.0) for level in levels]
        bars = axes.barh(levels, widths, left=lefts, color=colour, label=label)
        # a number only where it fits inside its segment
        axes.bar_label(
            bars, labels=[f"{w:.1f}" if w > right * 0.06 else "" for w in widths],
            label_type="center", fontsize="small", color="white",
        )  # fmt: skip
        lefts = [a + b for a, b in zip(lefts, widths, strict=True)]
    for row, level in enumerate(levels):
        if closed.get(level) is not None:
            axes.plot([closed[level]], [row], marker="|", markersize=18, color="black")
        axes.annotate(
            f"{totals[row]:.1f} ms", (totals[row], row), xytext=(4, 0),
            textcoords="offset points", va="center", fontsize="small",
        )  # fmt: skip
    axes.invert_yaxis()
    axes.set_xlabel("ms (the | marks the closed phase's own percentile)")
    axes.set_xlim(0, right)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    return _png(figure)


# --- (f) generator health ------------------------------------------------------------------------


def generator_health(run: LoadedRun) -> bytes | str:
    rows = run.columns
    if not len(rows):
        return "timeseries.csv has no rows"
    times = _column(rows, "t_s")
    lateness = _column(rows, "lateness_p99_ms")
    loop_lag = _column(rows, "loop_lag_p99_ms")
    cpu = _column(rows, "cpu_percent")
    if not any(_has_data(values) for values in (lateness, loop_lag, cpu)):
        return "no lateness, loop lag or CPU figures were recorded"
    figure = _figure()
    axes = figure.add_subplot()
    handles: list[Artist] = []
    for values, key, label in (
        (lateness, "lateness", "send lateness p99 (ms)"),
        (loop_lag, "loop_lag", "event-loop lag p99 (ms)"),
    ):
        if _has_data(values):
            handles.append(axes.plot(*thin(times, values), color=COLOURS[key], label=label)[0])
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("ms")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if _has_data(cpu):
        right = axes.twinx()
        handles.append(right.plot(*thin(times, cpu), color=COLOURS["cpu"], linestyle="--",
                                  label="CPU (% of one core)")[0])  # fmt: skip
        right.set_ylabel("CPU %")
        right.set_ylim(bottom=0, top=max(100.0, max(v for v in cpu if not math.isnan(v)) * 1.1))
    axes.legend(handles=handles, loc="upper left", fontsize="small")
    return _png(figure)


def build_plots(run: LoadedRun, summary: Mapping[str, Any]) -> list[Plot]:
    """Every plot of the report in order, each drawn or skipped with its note."""
    builders: list[tuple[str, str, Callable[[], bytes | str]]] = [
        (
            f"latency_{phase}",
            f"{phase} latency over time: p50 / p90 / p99 per interval",
            partial(latency_over_time, run, phase),
        )
        for phase in TIME_PHASES
    ]
    if summary.get("hops_ms"):
        builders.append(
            ("hops", "Per hop: where a job's time goes (p50 / p90 / p99)", lambda: per_hop(summary))
        )
    builders += [
        ("spectrum", "Latency by percentile (whole run)", lambda: percentile_spectrum(run)),
        ("rates", "Offered vs achieved rate", lambda: rates_over_time(run)),
        ("in_flight", "In flight and errors", lambda: in_flight_and_errors(run)),
        ("results", "Result codes", lambda: result_codes(summary)),
        ("health", "Generator health", lambda: generator_health(run)),
    ]
    plots = []
    for key, title, build in builders:
        drawn = build()
        if isinstance(drawn, bytes):
            plots.append(Plot(key, title, png=drawn))
        else:
            plots.append(Plot(key, title, note=drawn))
    return plots
