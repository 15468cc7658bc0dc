"""Rebuild ``summary.json`` and ``report.html`` from a results folder (``loadgen report DIR``).

A run writes everything the summary needs after every interval (the ``.hlog`` files, the
cumulative counters line, the time-series row), so the summary is a pure function of the folder.
That is what lets a run killed with SIGKILL, or one whose report code failed, still end with a
summary and a report: the numbers are those of the intervals that reached the disk, marked
``interrupted``.

What the folder cannot give back is taken from ``run.json`` (written before the first interval):
``campaign``, ``started_at``, ``offered_rate``, ``load_duration_s`` (the planned load window),
``thresholds`` (the expressions, re-evaluated here), ``generator`` and ``health_limits``.
The duration is the end of the last interval on disk. The generator verdict of a previous
``summary.json`` is kept; without one it is recomputed from the lateness and loop-lag histograms
and the CPU column against ``HealthLimits``. Likewise ``extra`` (the fleet's statistics) is kept
from a previous summary; without one, ``extra.devices`` is the ``device.*`` counters, which for a
merge of shards are their sums (``device.devices``: the whole fleet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.errors import ConfigError
from loadgen.metrics.health import HealthLimits, p99_ms, saturation_reasons
from loadgen.metrics.thresholds import parse_threshold
from loadgen.report.html import render_report
from loadgen.report.results import LoadedRun, Timeseries, load_run
from loadgen.report.summary import build_summary, write_summary

__all__ = ["generator_verdict", "last_interval_end", "rebuild", "rebuild_summary"]


def last_interval_end(run: LoadedRun) -> float | None:
    """Seconds from the start to the end of the last interval on disk (None: no interval)."""
    ends = [end for end in run.columns.column("t_s") if not math.isnan(end)]
    if run.last_end is not None:
        ends.append(run.last_end)
    return max(ends) if ends else None


def generator_verdict(
    histograms: Mapping[str, HdrHistogram],
    columns: Timeseries,
    limits: HealthLimits,
    counters: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The verdict of ``saturation_reasons`` from a folder: the whole run's lateness and loop-lag
    p99, the mean of its CPU column and the operations its full queue refused."""
    cpu = [value for value in columns.column("cpu_percent") if not math.isnan(value)]
    reasons = saturation_reasons(
        limits,
        lateness_p99_ms=p99_ms(histograms.get("lateness")),
        loop_lag_p99_ms=p99_ms(histograms.get("loop_lag")),
        cpu_percent=sum(cpu) / len(cpu) if cpu else None,
        queue_full=(counters or {}).get("ops.rejected.queue_full", 0),
    )
    return {"saturated": bool(reasons), "reasons": reasons}


def _expressions(items: object) -> list[str]:
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("expression"), str):
            out.append(item["expression"])
    return out


def rebuild_summary(run: LoadedRun) -> dict[str, Any]:
    """The summary of a loaded folder, from its hlog totals and its last counters line."""
    previous = run.summary or {}
    meta: dict[str, Any] = {key: value for key, value in run.run.items() if key != "thresholds"}
    duration = last_interval_end(run)
    meta["duration_s"] = None if duration is None else round(duration, 3)
    planned = run.run.get("load_duration_s")
    if isinstance(planned, (int, float)) and planned > 0:
        # a killed run's load window ends where its data ends
        meta["load_duration_s"] = planned if run.finished else min(planned, duration or 0.0)
    else:
        meta["load_duration_s"] = meta["duration_s"]
    meta["interrupted"] = (
        not run.finished or bool(previous.get("interrupted")) or bool(run.run.get("interrupted"))
    )
    meta["notes"] = run.notes
    verdict = previous.get("generator") or run.run.get("generator")
    if isinstance(verdict, Mapping) and "saturated" in verdict:
        meta["generator"] = {
            key: value for key, value in verdict.items() if key in ("saturated", "reasons")
        }
    else:
        try:
            limits = HealthLimits(**run.run.get("health_limits", {}))
        except TypeError as exc:
            raise ConfigError(
                f"{exc}", source=str(run.directory / "run.json"), key="health_limits"
            ) from exc
        meta["generator"] = generator_verdict(run.totals, run.columns, limits, run.counters)
    extra = previous.get("extra")
    if isinstance(extra, Mapping) and extra:
        meta["extra"] = dict(extra)
    else:
        # a killed run or a merge of shards: the fleet's figures are its device.* counters
        # (summed over the shards, device.devices included)
        devices = {
            name: value for name, value in run.counters.items() if name.startswith("device.")
        }
        if devices:
            meta["extra"] = {"devices": dict(sorted(devices.items()))}
    summary = build_summary(run.totals, run.counters, meta)
    summary["thresholds"] = [
        parse_threshold(expression).evaluate(summary).as_dict()
        for expression in _expressions(run.run.get("thresholds"))
        or _expressions(previous.get("thresholds"))
    ]
    return summary


def rebuild(directory: Path) -> tuple[dict[str, Any], Path]:
    """Rewrite ``summary.json`` and ``report.html`` of a results folder; (summary, report path)."""
    run = load_run(directory)
    summary = rebuild_summary(run)
    write_summary(directory, summary)
    run.summary = summary
    return summary, render_report(run, summary, directory)
