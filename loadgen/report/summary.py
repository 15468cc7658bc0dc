"""``summary.json``: the one document that says how a run went (schema in the README).

Built from histograms and counters only, never from live objects, so the same code summarises a
run as it ends, a run rebuilt from its ``.hlog`` files (``loadgen report``) and the exact merge of
several shards (``loadgen merge``).

Definitions (the README repeats them):
- ``operations.sent``: requests written; ``completed``: operations that got their final answer
  (a sync 2xx with a response, or the final async response), successful or not; ``succeeded`` /
  ``failed``: completed with ``SUCCESSFUL`` / any other code; ``timed_out``: ended by a deadline;
  ``errors``: ended without an answer for another reason (transport error, non-2xx).
- ``offered_rate``: operations per second the schedule asked for over the load window;
  ``achieved_rate``: operations completed per second over the same window.
- ``latency_ms.<phase>``: from the *intended* send time (coordinated omission corrected);
  ``latency_ms.service`` is the service-time twin of ``complete`` (from the actual send time);
  ``service_ms.<phase>`` gives the twin of every phase. ``callback`` is the device side's view:
  how long the platform took to answer each asynchronous POST.
- ``histograms_out_of_range.<recorder>``: values outside 0 .. 1 h, ``above`` (recorded at the top
  of the range) and ``below`` (negative, recorded as 0), from the ``hdr.above.*`` /
  ``hdr.below.*`` counters; empty when every value fitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson
from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import ABOVE_PREFIX, BELOW_PREFIX, percentiles_ms
from loadgen.metrics.registry import Metrics

__all__ = [
    "PHASES",
    "SCHEMA_VERSION",
    "build_summary",
    "format_summary",
    "histograms_of",
    "summary_from_metrics",
    "write_summary",
]

SCHEMA_VERSION: Final = 1
PHASES: Final = ("ack", "first_response", "complete", "step", "callback")
OPERATION_KEYS: Final = (
    "sent",
    "completed",
    "succeeded",
    "failed",
    "timed_out",
    "errors",
    "rejected",
)


def histograms_of(metrics: Metrics) -> dict[str, HdrHistogram]:
    """Every recorder's histogram so far (interval included), by recorder name."""
    return {recorder.name: recorder.merged() for recorder in metrics.recorders()}


def _rate(count: int, seconds: float | None) -> float | None:
    if not seconds or seconds <= 0:
        return None
    return round(count / seconds, 3)


def _out_of_range(counters: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """{recorder: {above, below}} for every recorder with a clamped value."""
    out: dict[str, dict[str, int]] = {}
    for name, value in sorted(counters.items()):
        for prefix, side in ((ABOVE_PREFIX, "above"), (BELOW_PREFIX, "below")):
            if name.startswith(prefix) and value:
                out.setdefault(name[len(prefix) :], {"above": 0, "below": 0})[side] = int(value)
    return out


def build_summary(
    histograms: Mapping[str, HdrHistogram],
    counters: Mapping[str, int],
    run: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary document.

    ``run`` carries what histograms and counters cannot: ``campaign``, ``started_at`` (epoch s),
    ``duration_s`` (whole run), ``load_duration_s`` (the load window), ``offered_rate``,
    ``interrupted``, ``thresholds`` (list of results), ``generator`` (health verdict), ``extra``.
    """
    ops = {key: int(counters.get(f"ops.{key}", 0)) for key in OPERATION_KEYS}
    load_s = run.get("load_duration_s") or run.get("duration_s")
    empty = HdrHistogram(1, 2, 1)
    latency: dict[str, Any] = {
        phase: percentiles_ms(histograms.get(phase, empty)) for phase in PHASES
    }
    latency["service"] = percentiles_ms(histograms.get("complete.service", empty))
    service = {
        phase: percentiles_ms(histograms[f"{phase}.service"])
        for phase in PHASES
        if f"{phase}.service" in histograms
    }
    by_name = {
        name.split(".", 1)[1]: percentiles_ms(hist)
        for name, hist in sorted(histograms.items())
        if name.startswith("complete.")
        and name != "complete.service"
        and not name.endswith(".service")
    }
    results = {
        name.split(".", 1)[1]: int(value)
        for name, value in sorted(counters.items())
        if name.startswith("result.")
    }
    started = run.get("started_at")
    summary: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "campaign": run.get("campaign"),
        "started_at": None
        if started is None
        else dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_s": run.get("duration_s"),
        "load_duration_s": load_s,
        "interrupted": bool(run.get("interrupted", False)),
        "offered_rate": run.get("offered_rate"),
        "achieved_rate": _rate(ops["completed"], load_s),
        "sent_rate": _rate(ops["sent"], load_s),
        "error_rate": round((ops["failed"] + ops["timed_out"] + ops["errors"]) / ops["sent"], 6)
        if ops["sent"]
        else 0.0,
        "operations": ops,
        "latency_ms": latency,
        "service_ms": service,
        "latency_by_operation_ms": by_name,
        "results": results,
        "histograms_out_of_range": _out_of_range(counters),
        "counters": {name: int(value) for name, value in sorted(counters.items())},
        "thresholds": list(run.get("thresholds", [])),
        "generator": dict(run.get("generator", {})),
    }
    for single in ("lateness", "loop_lag"):
        if single in histograms:
            summary["generator"][f"{single}_ms"] = percentiles_ms(histograms[single])
    if run.get("extra"):
        summary["extra"] = dict(run["extra"])
    return summary


def summary_from_metrics(metrics: Metrics, run: Mapping[str, Any]) -> dict[str, Any]:
    return build_summary(histograms_of(metrics), metrics.counters, run)


def write_summary(directory: Path, summary: Mapping[str, Any]) -> Path:
    path = directory / "summary.json"
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def _ms(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the summary, for the terminal."""
    ops = summary["operations"]
    lines = [
        f"campaign {summary.get('campaign') or '-'}"
        + ("  (INTERRUPTED)" if summary.get("interrupted") else ""),
        f"operations: sent {ops['sent']}  completed {ops['completed']}  succeeded {ops['succeeded']}"
        f"  failed {ops['failed']}  timed out {ops['timed_out']}  errors {ops['errors']}"
        + (f"  rejected {ops['rejected']}" if ops.get("rejected") else ""),
        f"rate: offered {_ms(summary.get('offered_rate'))}/s  achieved {_ms(summary.get('achieved_rate'))}/s"
        f"  error rate {summary.get('error_rate', 0) * 100:.3f}%",
        "",
        f"{'latency (ms)':<16}{'count':>9}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}{'max':>10}",
    ]
    rows = [*PHASES, "service"]
    for phase in rows:
        figures = summary["latency_ms"].get(phase)
        if not figures or not figures["count"]:
            continue
        lines.append(
            f"{phase:<16}{figures['count']:>9}"
            + "".join(f"{_ms(figures[key]):>10}" for key in ("p50", "p90", "p99", "p999", "max"))
        )
    generator = summary.get("generator", {})
    if generator.get("saturated"):
        lines.append("")
        lines.append(
            "GENERATOR SATURATED: these numbers describe the load generator, not the target ("
            + "; ".join(generator.get("reasons", []))
            + ")"
        )
    failed = [t for t in summary.get("thresholds", []) if not t.get("ok")]
    if summary.get("thresholds"):
        lines.append("")
        for threshold in summary["thresholds"]:
            mark = "ok  " if threshold.get("ok") else "FAIL"
            lines.append(f"[{mark}] {threshold['expression']}  (actual {threshold.get('actual')})")
        if failed:
            lines.append(f"{len(failed)} threshold(s) failed")
    return "\n".join(lines)
