"""The results folder of one run: what is written while it runs, and how it is read back.

    results/<campaign>/<UTC timestamp>/
        scenario.toml     the resolved scenario (written by the campaign runner)
        run.json          what the run is (campaign, start, schedule) - written first
        <recorder>.hlog   HdrHistogram interval logs, one per recorder, flushed every interval
        counters.jsonl    cumulative counters at the end of every interval, flushed
        timeseries.csv    one row per interval, flushed
        summary.json      at the end (rebuildable: ``loadgen report DIR``)
        report.html       at the end (rebuildable)

Everything needed for the summary and the report is on disk after every interval, so a run killed
with SIGKILL still leaves data that ``load_run`` reads back and ``loadgen report`` turns into a
report (marked as not finished).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadgen.errors import ConfigError
from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import HlogWriter, Interval

__all__ = [
    "TIMESERIES_COLUMNS",
    "LoadedRun",
    "RunWriter",
    "load_run",
    "new_run_directory",
]

# (column, how to compute it from an Interval); latency columns read interval histograms.
TIMESERIES_COLUMNS: Final = (
    "t_s",
    "phase",
    "stage",
    "offered_rate",
    "sent_per_s",
    "completed_per_s",
    "in_flight",
    "queued",
    "failed",
    "timed_out",
    "errors",
    "ack_p50_ms",
    "ack_p99_ms",
    "first_response_p99_ms",
    "complete_p50_ms",
    "complete_p90_ms",
    "complete_p99_ms",
    "complete_max_ms",
    "service_p99_ms",
    "callback_p99_ms",
    "lateness_p99_ms",
    "loop_lag_p99_ms",
    "cpu_percent",
)
_LATENCY_COLUMNS: Final = {
    "ack_p50_ms": ("ack", 50.0),
    "ack_p99_ms": ("ack", 99.0),
    "first_response_p99_ms": ("first_response", 99.0),
    "complete_p50_ms": ("complete", 50.0),
    "complete_p90_ms": ("complete", 90.0),
    "complete_p99_ms": ("complete", 99.0),
    "complete_max_ms": ("complete", 100.0),
    "service_p99_ms": ("complete.service", 99.0),
    "callback_p99_ms": ("callback", 99.0),
    "lateness_p99_ms": ("lateness", 99.0),
    "loop_lag_p99_ms": ("loop_lag", 99.0),
}


def new_run_directory(root: Path, campaign: str, now: dt.datetime | None = None) -> Path:
    """``root/<campaign>/<UTC timestamp>/``, created; a suffix keeps two runs in one second apart."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in campaign) or "run"
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = root / safe / stamp
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{stamp}-{n}")
        except OSError as exc:
            raise ConfigError(f"cannot create results folder {candidate}: {exc}") from exc


def _latency_ms(histogram: HdrHistogram | None, percentile: float) -> str:
    if histogram is None or not histogram.get_total_count():
        return ""
    if percentile >= 100.0:
        return f"{histogram.get_max_value() / 1000:.3f}"
    return f"{histogram.get_value_at_percentile(percentile) / 1000:.3f}"


def timeseries_row(interval: Interval) -> dict[str, str]:
    length = interval.length or 1.0
    changed = interval.counters
    gauges = interval.gauges
    row = {
        "t_s": f"{interval.end:.3f}",
        "phase": str(gauges.get("phase", "")),
        "stage": str(gauges.get("stage", "")),
        "offered_rate": _fmt(gauges.get("offered_rate")),
        "sent_per_s": f"{changed.get('ops.sent', 0) / length:.3f}",
        "completed_per_s": f"{changed.get('ops.completed', 0) / length:.3f}",
        "in_flight": _fmt(gauges.get("in_flight")),
        "queued": _fmt(gauges.get("queued")),  # of in_flight, not written yet
        "failed": str(changed.get("ops.failed", 0)),
        "timed_out": str(changed.get("ops.timed_out", 0)),
        "errors": str(changed.get("ops.errors", 0)),
        "cpu_percent": _fmt(gauges.get("cpu_percent")),
    }
    for column, (name, percentile) in _LATENCY_COLUMNS.items():
        row[column] = _latency_ms(interval.histograms.get(name), percentile)
    return row


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class RunWriter:
    """The interval sink of a run: hlogs, counters.jsonl and timeseries.csv, flushed each interval."""

    def __init__(self, directory: Path, start_epoch: float, run: Mapping[str, Any]) -> None:
        self.directory = directory
        self._run = {**run, "started_at": start_epoch}
        self._write_run()
        self.hlogs = HlogWriter(directory, start_epoch)
        self._counters: IO[bytes] = (directory / "counters.jsonl").open("wb")
        self._csv_file: IO[str] = (directory / "timeseries.csv").open("w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=TIMESERIES_COLUMNS)
        self._csv.writeheader()
        self._csv_file.flush()

    def __repr__(self) -> str:
        return f"<RunWriter {self.directory}>"

    def __call__(self, interval: Interval) -> None:
        self.hlogs(interval)
        line = {
            "t_s": interval.end,
            "final": interval.final,
            "counters": interval.totals,
            "notes": interval.notes,
        }
        self._counters.write(orjson.dumps(line) + b"\n")
        self._counters.flush()
        self._csv.writerow(timeseries_row(interval))
        self._csv_file.flush()

    def _write_run(self) -> None:
        # replaced whole (write, then rename), so a reader never sees half a run.json
        tmp = self.directory / "run.json.tmp"
        tmp.write_bytes(orjson.dumps(self._run, option=orjson.OPT_INDENT_2))
        tmp.replace(self.directory / "run.json")

    def control(self, entry: Mapping[str, Any]) -> None:
        """A control used while the run runs (the dashboard's Stop, a rate change): appended to
        run.json's ``controls`` with its time, and run.json rewritten at once."""
        self._run.setdefault("controls", []).append(dict(entry))
        self._write_run()

    def close(self) -> None:
        self.hlogs.close()
        self._counters.close()
        self._csv_file.close()


@dataclass(slots=True)
class LoadedRun:
    """A results folder read back from its files."""

    directory: Path
    run: dict[str, Any]
    totals: dict[str, HdrHistogram]  # recorder -> all intervals added
    series: dict[str, list[tuple[float, float, HdrHistogram]]]  # recorder -> (start, end, hist)
    counters: dict[str, int]
    finished: bool  # the last counters line was written by a run that ended normally
    timeseries: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)


def _complete_lines(path: Path) -> str:
    """The file's text without a last line cut by a kill (one that has no newline yet)."""
    text = path.read_text(encoding="utf-8")
    return text if text.endswith("\n") else text[: text.rfind("\n") + 1]


def read_hlog(path: Path) -> list[tuple[float, float, HdrHistogram]]:
    """(start, end, histogram) per interval line, decoded by HdrHistogram_py's own reader.

    Times are seconds since the log's ``StartTime`` (the run's t0), like ``Interval.start``: the
    reader itself hands out absolute epoch timestamps. A last line cut by a kill is skipped.
    """
    reader = HistogramLogReader(str(path), new_histogram())
    reader.input_file.close()
    reader.input_file = io.StringIO(_complete_lines(path))
    out: list[tuple[float, float, HdrHistogram]] = []
    while True:
        histogram = reader.get_next_interval_histogram()
        if histogram is None:
            return out
        origin = reader.get_start_time_sec()
        start = histogram.get_start_time_stamp() / 1000 - origin
        end = histogram.get_end_time_stamp() / 1000 - origin
        out.append((round(start, 3), round(end, 3), histogram))


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a results file; ``ConfigError`` naming the file when it is not one."""
    try:
        value = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", source=str(path)) from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            f"expected {what} (JSON), got a corrupt file: {exc}", source=str(path)
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"expected {what} (a JSON object)", source=str(path))
    return value


def load_run(directory: Path) -> LoadedRun:
    if not directory.is_dir():
        raise ConfigError("no such results folder", source=str(directory))
    if not (directory / "run.json").exists():
        raise ConfigError(f"{directory} is not a results folder: no run.json")
    run = read_json_object(directory / "run.json", "a run.json")
    series: dict[str, list[tuple[float, float, HdrHistogram]]] = {}
    totals: dict[str, HdrHistogram] = {}
    for path in sorted(directory.glob("*.hlog")):
        name = path.name.removesuffix(".hlog")
        intervals = read_hlog(path)
        series[name] = intervals
        total = new_histogram()
        for _, _, histogram in intervals:
            total.add(histogram)
        totals[name] = total
    counters: dict[str, int] = {}
    notes: dict[str, str] = {}
    finished = False
    counters_path = directory / "counters.jsonl"
    if counters_path.exists():
        for line in counters_path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                break  # a line cut by a kill: the previous one stands
            if not isinstance(record, dict) or not isinstance(record.get("counters"), dict):
                break
            counters = record["counters"]
            notes = record.get("notes") or {}
            finished = bool(record.get("final"))
    rows: list[dict[str, str]] = []
    timeseries_path = directory / "timeseries.csv"
    if timeseries_path.exists():
        lines = io.StringIO(_complete_lines(timeseries_path), newline="")
        rows = [row for row in csv.DictReader(lines) if row.get("t_s")]
    summary_path = directory / "summary.json"
    summary = read_json_object(summary_path, "a summary.json") if summary_path.exists() else None
    return LoadedRun(directory, run, totals, series, counters, finished, rows, summary, notes)
