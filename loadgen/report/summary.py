"""``summary.json``: the one document that says how a run went (schema in the README).

Built from histograms and counters only, never from live objects, so the same code summarises a
run as it ends, a run rebuilt from its ``.hlog`` files (``loadgen report``) and the exact merge of
several shards (``loadgen merge``).

Definitions (the README repeats them):
- ``operations.issued``: operations the schedule (or the closed model) started; ``sent``: of
  those, the ones written to a connection (or offered to a sleepy device); the rest waited
  behind a busy pool until their deadline, ``timed_out_queued`` (also in ``timed_out``), so
  after the drain ``issued == completed + timed_out + errors`` and ``sent == issued -
  timed_out_queued``; ``completed``: operations that got their final answer
  (a sync 2xx with a response, or the final async response), successful or not; ``succeeded`` /
  ``failed``: completed with ``SUCCESSFUL`` / any other code; ``timed_out``: ended by a deadline;
  ``errors``: ended without an answer for another reason (transport error, non-2xx);
  ``cut_by_grace``: of the ``timed_out``, those still in flight when the drain's grace period
  ended (recorded at their own deadline all the same).
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
    "histograms_of",
    "summary_from_metrics",
    "write_summary",
]

SCHEMA_VERSION: Final = 1
PHASES: Final = ("ack", "first_response", "complete", "step", "callback")
#: The north side's phases (issue 10), in the summary only when the run recorded them.
NORTH_PHASES: Final = ("job_accepted", "dispatch", "device_done", "closed")
#: The per-hop split of a north run: the platform's dispatch (the ``dispatch`` phase), the
#: device's work and the platform's close (gaps within each job, recorded by the tracker).
HOPS: Final = {
    "platform_dispatch": "dispatch",
    "device_work": "hop.device_work",
    "platform_close": "hop.platform_close",
}
JOB_KEYS: Final = ("created", "accepted", "closed", "timed_out", "errors", "rejected",
                   "succeeded", "failed", "cut_by_grace")  # fmt: skip
OPERATION_KEYS: Final = (
    "issued",
    "sent",
    "completed",
    "succeeded",
    "failed",
    "timed_out",
    "timed_out_queued",
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
    if "ops.issued" not in counters:  # a run from before ``ops.issued``: all it issued, it sent
        ops["issued"] = ops["sent"] + ops["timed_out_queued"]
    # A counter, so that a rebuilt or merged run has it too; ``run`` may carry it otherwise.
    ops["cut_by_grace"] = int(counters.get("ops.cut_by_grace", run.get("cut_by_grace", 0)))
    load_s = run.get("load_duration_s") or run.get("duration_s")
    empty = HdrHistogram(1, 2, 1)
    latency: dict[str, Any] = {
        phase: percentiles_ms(histograms.get(phase, empty)) for phase in PHASES
    }
    latency["service"] = percentiles_ms(histograms.get("complete.service", empty))
    north = [phase for phase in NORTH_PHASES if phase in histograms]
    for phase in north:
        latency[phase] = percentiles_ms(histograms[phase])
    service = {
        phase: percentiles_ms(histograms[f"{phase}.service"])
        for phase in (*PHASES, *north)
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
        "seed": run.get("seed"),
        "offered_rate": run.get("offered_rate"),
        "achieved_rate": _rate(ops["completed"], load_s),
        "sent_rate": _rate(ops["sent"], load_s),
        # over every operation issued: one that timed out unsent is a failure too
        "error_rate": round((ops["failed"] + ops["timed_out"] + ops["errors"]) / ops["issued"], 6)
        if ops["issued"]
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
    if "jobs.created" in counters:  # a north run: every job accounted once (issue 10)
        summary["jobs"] = {key: int(counters.get(f"jobs.{key}", 0)) for key in JOB_KEYS}
        summary["hops_ms"] = {
            hop: percentiles_ms(histograms.get(name, empty)) for hop, name in HOPS.items()
        }
    summary["errors_by_cause"] = _errors_by_cause(counters, run.get("notes") or {})
    summary["by_operation"] = _by_operation(histograms, counters)
    for single in ("lateness", "loop_lag"):
        if single in histograms:
            summary["generator"][f"{single}_ms"] = percentiles_ms(histograms[single])
    if run.get("extra"):
        summary["extra"] = dict(run["extra"])
    return summary


#: Counters that count operations (or POSTs) that went wrong, by cause.
ERROR_CAUSES: Final = (
    "transport.", "http.status.", "device.wrong_", "south.refused.",
    "north.status.", "north.transport.", "north.no_job_id",
)  # fmt: skip


def _errors_by_cause(counters: Mapping[str, int], notes: Mapping[str, str]) -> list[dict[str, Any]]:
    """``[{cause, count, first}]``, the most frequent first; ``first`` is the first message."""
    causes = [
        (name, int(count))
        for name, count in counters.items()
        if count and (name.startswith(ERROR_CAUSES) or name.endswith(".undelivered"))
    ]
    causes.sort(key=lambda item: (-item[1], item[0]))
    return [{"cause": name, "count": count, "first": notes.get(name)} for name, count in causes]


def _by_operation(
    histograms: Mapping[str, HdrHistogram], counters: Mapping[str, int]
) -> dict[str, dict[str, Any]]:
    """Per operation name (with ``breakdown_by_name``): ended count, bad ends, latency."""
    out: dict[str, dict[str, Any]] = {}
    for name, histogram in histograms.items():
        if not name.startswith("complete.") or name.endswith(".service"):
            continue
        operation = name.split(".", 1)[1]
        row: dict[str, Any] = {}
        for outcome in ("failed", "timed_out", "errors"):
            row[outcome] = int(counters.get(f"by_name.{operation}.{outcome}", 0))
        # every operation that ended: with a latency (completed, timed out) or an error
        row["count"] = int(histogram.get_total_count()) + row["errors"]
        row["latency_ms"] = percentiles_ms(histogram)
        twin = histograms.get(f"{name}.service")
        if twin is not None:
            row["service_ms"] = percentiles_ms(twin)
        out[operation] = row
    return dict(sorted(out.items()))


def summary_from_metrics(metrics: Metrics, run: Mapping[str, Any]) -> dict[str, Any]:
    return build_summary(histograms_of(metrics), metrics.counters, {"notes": metrics.notes, **run})


def write_summary(directory: Path, summary: Mapping[str, Any]) -> Path:
    path = directory / "summary.json"
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path
