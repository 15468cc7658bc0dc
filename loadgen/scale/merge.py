"""Exact merge of shard results: histograms added interval by interval, counters summed.

Percentiles do not average: the p99 of two shards is not the mean of their p99s. What does merge
exactly is the histogram itself, so the merge adds, for every recorder, the interval histograms
of all shards that cover the same interval (shards started together with ``--start-at`` write the
same interval boundaries; intervals are matched by their start second, rounded to the interval
period) and writes them as standard ``.hlog`` files again. Counters are summed from each shard's
last ``counters.jsonl`` line. The merged folder is then an ordinary results folder: the summary and
the report are rebuilt by the same code as a single run's (``loadgen.report.rebuild``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from hdrh.histogram import HdrHistogram

from loadgen.errors import ConfigError
from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval
from loadgen.report.results import LoadedRun, RunWriter, load_run

__all__ = ["merge_runs"]


def _interval_key(start: float, period: float) -> int:
    return round(start / period)


def _merged_counter_series(
    runs: Sequence[LoadedRun],
    shards: Sequence[Path],
    period: float,
    start_epoch: float,
    bounds: dict[int, tuple[float, float]],
) -> dict[int, dict[str, int]]:
    """Cumulative counters of all shards at each interval end (a shard's last value carries).
    The intervals' (start, end) are added to ``bounds`` (an interval no histogram covers)."""
    per_shard: list[dict[int, dict[str, int]]] = []
    for run, path in zip(runs, shards, strict=True):
        offset = float(run.run.get("started_at", start_epoch)) - start_epoch
        lines: dict[int, dict[str, int]] = {}
        counters_path = path / "counters.jsonl"
        if counters_path.exists():
            start = 0.0
            for raw in counters_path.read_bytes().splitlines():
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    break
                # keyed by its interval's start, like the hlog lines: the previous line's end
                # (a last, partial interval ending at 5.05 s starts at 5 s, not at 4.05 s)
                index = _interval_key(start + offset, period)
                lines[index] = {k: int(v) for k, v in record["counters"].items()}
                end = float(record["t_s"])
                low, high = bounds.get(index, (start + offset, end + offset))
                bounds[index] = (min(low, start + offset), max(high, end + offset))
                start = end
        per_shard.append(lines)
    indices = sorted({index for lines in per_shard for index in lines})
    out: dict[int, dict[str, int]] = {}
    last: list[dict[str, int]] = [{} for _ in per_shard]
    for index in indices:
        total: dict[str, int] = defaultdict(int)
        for shard, lines in enumerate(per_shard):
            if index in lines:
                last[shard] = lines[index]
            for name, value in last[shard].items():
                total[name] += value
        out[index] = dict(total)
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _merged_gauges(
    runs: Sequence[LoadedRun], period: float, start_epoch: float
) -> dict[int, dict[str, object]]:
    """The gauges of each merged interval from the shards' time-series rows: offered rate, in
    flight and queued summed, CPU averaged, the stage of the first shard that names one, and "load"
    while any shard still loads."""
    rows: dict[int, list[dict[str, str]]] = defaultdict(list)
    for run in runs:
        offset = float(run.run.get("started_at", start_epoch)) - start_epoch
        start = 0.0
        for row in run.timeseries:
            end = _number(row.get("t_s"))
            if end is not None:
                # keyed by the interval's start (the row before's end), as the counters are
                rows[_interval_key(start + offset, period)].append(row)
                start = end
    out: dict[int, dict[str, object]] = {}
    for index, group in rows.items():
        gauges: dict[str, object] = {}
        for column in ("offered_rate", "in_flight", "queued"):
            values = [v for row in group if (v := _number(row.get(column))) is not None]
            if values:
                total = sum(values)
                gauges[column] = round(total, 3) if column == "offered_rate" else int(total)
        cpu = [v for row in group if (v := _number(row.get("cpu_percent"))) is not None]
        if cpu:
            gauges["cpu_percent"] = round(sum(cpu) / len(cpu), 1)
        gauges["stage"] = next((row["stage"] for row in group if row.get("stage")), "")
        phases = {row.get("phase") for row in group}
        gauges["phase"] = "load" if "load" in phases else "drain" if "drain" in phases else ""
        out[index] = gauges
    return out


def merge_runs(
    shards: Sequence[Path], out: Path, *, force: bool = False, incomplete: bool = False
) -> Path:
    """Merge shard folders into ``out`` (created); returns ``out``.

    Folders of different campaigns are refused (their sum would mean nothing) unless ``force``.
    The merge is interrupted when any shard was; it keeps the first message of each failure
    counter that any shard saw. ``incomplete``: some shard left no folder (it crashed), so the
    merge is not a finished run either."""
    if not shards:
        raise ConfigError("nothing to merge: give at least one results folder")
    runs: list[LoadedRun] = [load_run(path) for path in shards]
    campaigns = {str(run.run.get("campaign")) for run in runs}
    if len(campaigns) > 1 and not force:
        raise ConfigError(
            f"the folders are runs of different campaigns ({', '.join(sorted(campaigns))}); "
            "--force merges them anyway",
            key="merge",
        )
    period = float(runs[0].run.get("interval", 1.0))
    start_epoch = min(float(run.run.get("started_at", 0.0)) for run in runs)
    # (interval index) -> recorder -> histogram; index -> (start, end) seen
    merged: dict[int, dict[str, HdrHistogram]] = defaultdict(dict)
    bounds: dict[int, tuple[float, float]] = {}
    for run in runs:
        offset = float(run.run.get("started_at", start_epoch)) - start_epoch
        for name, intervals in run.series.items():
            for start, end, histogram in intervals:
                index = _interval_key(start + offset, period)
                target = merged[index].get(name)
                if target is None:
                    target = merged[index][name] = new_histogram()
                target.add(histogram)
                low, high = bounds.get(index, (start + offset, end + offset))
                bounds[index] = (min(low, start + offset), max(high, end + offset))
    counters: dict[str, int] = defaultdict(int)
    for run in runs:
        for name, value in run.counters.items():
            counters[name] += int(value)
    meta: dict[str, Any] = dict(runs[0].run)
    meta.pop("started_at", None)
    meta["shards"] = [str(path) for path in shards]
    meta["merged"] = True
    summaries = [run.summary or {} for run in runs]
    meta["interrupted"] = incomplete or any(bool(s.get("interrupted")) for s in summaries)
    windows = [summary.get("load_duration_s") for summary in summaries]
    if meta["interrupted"] and all(isinstance(w, int | float) for w in windows):
        meta["load_duration_s"] = max(float(w) for w in windows if w is not None)
    notes: dict[str, str] = {}
    for run in runs:
        for name, message in run.notes.items():
            notes.setdefault(name, message)
    offered = [run.run.get("offered_rate") for run in runs]
    if all(isinstance(rate, int | float) for rate in offered):
        meta["offered_rate"] = sum(float(rate) for rate in offered if rate is not None)
    totals_at = _merged_counter_series(runs, shards, period, start_epoch, bounds)
    gauges_at = _merged_gauges(runs, period, start_epoch)
    out.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(out, start_epoch, meta)
    try:
        indices = sorted(set(merged) | set(totals_at))
        previous: dict[str, int] = {}
        for position, index in enumerate(indices):
            start, end = bounds.get(index, (index * period, (index + 1) * period))
            last = position == len(indices) - 1
            totals = dict(counters) if last else totals_at.get(index, previous)
            changed = {
                k: v - previous.get(k, 0) for k, v in totals.items() if v != previous.get(k, 0)
            }
            writer(
                Interval(
                    index=position,
                    start=start,
                    end=end,
                    histograms=merged.get(index, {}),
                    counters=changed,
                    totals=totals,
                    gauges=gauges_at.get(index, {}),
                    final=last and all(run.finished for run in runs),
                    notes=notes,
                )
            )
            previous = totals
        if not indices:
            (out / "counters.jsonl").write_bytes(
                orjson.dumps(
                    {"t_s": 0.0, "final": True, "counters": dict(counters), "notes": notes}
                )
                + b"\n"
            )
    finally:
        writer.close()
    return out
