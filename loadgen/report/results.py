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

Reading back streams: ``load_run`` reads each ``.hlog`` one interval at a time, adds it to the
recorder's total, keeps a few percentiles of it for the plots over time (``LatencySeries``, four
numbers) and drops it; ``timeseries.csv`` becomes numeric columns (``Timeseries``, eight bytes a
cell). An interval histogram is 188 kB whatever it holds, so keeping them all is what once made
the end of a run jump by hundreds of MB (90 s with 24 recorders: +390 MB; 5 minutes would be
1.3 GB). What ``load_run`` holds is the totals (fixed) plus ~250 bytes an interval.
``LoadedRun.series`` and ``LoadedRun.timeseries`` still give everything at once, read again from
the files, for the shard merge and the tests that want it.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import sys
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadgen.errors import ConfigError
from loadgen.metrics.hdr import acyclic, new_histogram, values_at
from loadgen.metrics.intervals import HlogWriter, Interval

__all__ = [
    "OVER_TIME",
    "TIMESERIES_COLUMNS",
    "LatencySeries",
    "LoadedRun",
    "RunWriter",
    "Timeseries",
    "iter_hlog",
    "load_run",
    "new_run_directory",
    "read_hlog",
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
_LATENCY_BY_RECORDER: Final = {
    name: tuple((c, p) for c, (n, p) in _LATENCY_COLUMNS.items() if n == name)
    for name in dict.fromkeys(n for n, _ in _LATENCY_COLUMNS.values())
}
#: The phases whose percentiles per interval the report plots (with their service twins).
OVER_TIME: Final = ("complete", "ack", "first_response")
#: The percentiles kept per interval (``LatencySeries``).
SERIES_LEVELS: Final = (50.0, 90.0, 99.0)
#: Columns of ``timeseries.csv`` that are not numbers.
_TEXT_COLUMNS: Final = ("phase", "stage")


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


def _latency_ms(
    histogram: HdrHistogram | None, columns: tuple[tuple[str, float], ...]
) -> dict[str, str]:
    """The cells of one recorder's columns: one vectorised pass for all its percentiles (this
    runs every interval, in the event loop), the maximum read as such."""
    if histogram is None or not histogram.get_total_count():
        return {column: "" for column, _ in columns}
    read = [percentile for _, percentile in columns if percentile < 100.0]
    values = iter(values_at(histogram, read))
    return {
        column: f"{(histogram.get_max_value() if percentile >= 100.0 else next(values)) / 1000:.3f}"
        for column, percentile in columns
    }


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
    for name, columns in _LATENCY_BY_RECORDER.items():
        row.update(_latency_ms(interval.histograms.get(name), columns))
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
        for _ in self.pieces(interval):
            pass

    def pieces(self, interval: Interval) -> Iterator[None]:
        """Write the interval in pieces (an ``IntervalSink`` that returns an iterator): each
        hlog line, the counters line, the time-series row (each well under a millisecond)."""
        yield from self.hlogs.pieces(interval)
        line = {
            "t_s": interval.end,
            "final": interval.final,
            "counters": interval.totals,
            "notes": interval.notes,
        }
        self._counters.write(orjson.dumps(line) + b"\n")
        self._counters.flush()
        yield
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


class LatencySeries:
    """One recorder's p50 / p90 / p99 (µs) at the end of each non-empty interval: four doubles an
    interval, what the plots over time draw, instead of the interval's 188 kB histogram."""

    __slots__ = ("ends", "p50", "p90", "p99")

    def __init__(self) -> None:
        self.ends = array("d")
        self.p50 = array("d")
        self.p90 = array("d")
        self.p99 = array("d")

    def __len__(self) -> int:
        return len(self.ends)

    def __repr__(self) -> str:
        return f"<LatencySeries intervals={len(self)}>"

    def append(self, end: float, histogram: HdrHistogram) -> None:
        # one vectorised pass over the counts for the three (``hdr.values_at``)
        found = values_at(histogram, SERIES_LEVELS)
        self.ends.append(end)
        for column, value in zip((self.p50, self.p90, self.p99), found, strict=True):
            column.append(float(value))


class Timeseries:
    """``timeseries.csv`` as columns: each numeric one an array of doubles (NaN for an empty or
    unreadable cell), ``phase`` a list of shared strings; a column the file lacks is all NaN."""

    __slots__ = ("_columns", "phases")

    def __init__(self) -> None:
        self._columns = {
            name: array("d") for name in TIMESERIES_COLUMNS if name not in _TEXT_COLUMNS
        }
        self.phases: list[str] = []

    def __len__(self) -> int:
        return len(self.phases)

    def __repr__(self) -> str:
        return f"<Timeseries rows={len(self)}>"

    def column(self, name: str) -> array[float]:
        """The values of a numeric column (a KeyError names a column that is not one)."""
        return self._columns[name]

    def append(self, row: Mapping[str, str | None]) -> None:
        for name, values in self._columns.items():
            values.append(_number(row.get(name)))
        self.phases.append(sys.intern(row.get("phase") or ""))


def _number(cell: str | None) -> float:
    if not cell:
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return math.nan


@dataclass(slots=True)
class LoadedRun:
    """A results folder read back from its files (see the module docstring: streamed)."""

    directory: Path
    run: dict[str, Any]
    totals: dict[str, HdrHistogram]  # recorder -> all intervals added
    latency: dict[str, LatencySeries]  # recorder (of ``OVER_TIME`` and twins) -> per interval
    counters: dict[str, int]
    finished: bool  # the last counters line was written by a run that ended normally
    columns: Timeseries = field(default_factory=Timeseries)
    summary: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    last_end: float | None = None  # the end of the last interval of any .hlog, seconds

    @property
    def series(self) -> dict[str, list[tuple[float, float, HdrHistogram]]]:
        """Every interval histogram of every recorder, read again, all in memory at once (188 kB
        each): for the shard merge, not for the report."""
        return {
            path.name.removesuffix(".hlog"): read_hlog(path)
            for path in sorted(self.directory.glob("*.hlog"))
        }

    @property
    def timeseries(self) -> list[dict[str, str]]:
        """The rows of ``timeseries.csv`` as written, read again (the report uses ``columns``)."""
        path = self.directory / "timeseries.csv"
        if not path.exists():
            return []
        with _CompleteLines(path) as lines:
            return [row for row in csv.DictReader(lines) if row.get("t_s")]


class _CompleteLines:
    """A text file read line by line, without a last line cut by a kill (no newline yet)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open(encoding="utf-8", newline="")

    def __enter__(self) -> _CompleteLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def readline(self) -> str:
        line = self._file.readline()
        return line if line.endswith("\n") else ""

    def __iter__(self) -> Iterator[str]:
        return iter(self.readline, "")


def iter_hlog(path: Path) -> Iterator[tuple[float, float, HdrHistogram]]:
    """(start, end, histogram) per interval line, one at a time, decoded by HdrHistogram_py's own
    reader.

    Times are seconds since the log's ``StartTime`` (the run's t0), like ``Interval.start``: the
    reader itself hands out absolute epoch timestamps. A last line cut by a kill is skipped.
    """
    reader = HistogramLogReader(str(path), new_histogram())
    reader.input_file.close()
    with _CompleteLines(path) as lines:
        reader.input_file = lines
        while True:
            histogram = reader.get_next_interval_histogram()
            if histogram is None:
                return
            origin = reader.get_start_time_sec()
            start = histogram.get_start_time_stamp() / 1000 - origin
            end = histogram.get_end_time_stamp() / 1000 - origin
            yield round(start, 3), round(end, 3), acyclic(histogram)


def read_hlog(path: Path) -> list[tuple[float, float, HdrHistogram]]:
    """Every interval of an ``.hlog`` at once (``iter_hlog`` reads them one at a time)."""
    return list(iter_hlog(path))


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
    over_time = {*OVER_TIME, *(f"{phase}.service" for phase in OVER_TIME)}
    latency: dict[str, LatencySeries] = {}
    totals: dict[str, HdrHistogram] = {}
    last_end: float | None = None
    for path in sorted(directory.glob("*.hlog")):
        name = path.name.removesuffix(".hlog")
        total = totals[name] = new_histogram()
        series = None
        if name in over_time:
            series = latency[name] = LatencySeries()
        # one interval at a time: added, summarised, dropped (see the module docstring)
        for _, end, histogram in iter_hlog(path):
            last_end = end if last_end is None else max(last_end, end)
            if histogram.get_total_count():
                total.add(histogram)
                if series is not None:
                    series.append(end, histogram)
    counters: dict[str, int] = {}
    notes: dict[str, str] = {}
    finished = False
    counters_path = directory / "counters.jsonl"
    if counters_path.exists():
        with counters_path.open("rb") as lines:  # line by line: a long run's file is large
            for line in lines:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    break  # a line cut by a kill: the previous one stands
                if not isinstance(record, dict) or not isinstance(record.get("counters"), dict):
                    break
                counters = record["counters"]
                notes = record.get("notes") or {}
                finished = bool(record.get("final"))
    columns = Timeseries()
    timeseries_path = directory / "timeseries.csv"
    if timeseries_path.exists():
        with _CompleteLines(timeseries_path) as lines:
            for row in csv.DictReader(lines):
                if row.get("t_s"):
                    columns.append(row)
    summary_path = directory / "summary.json"
    summary = read_json_object(summary_path, "a summary.json") if summary_path.exists() else None
    return LoadedRun(
        directory, run, totals, latency, counters, finished, columns, summary, notes, last_end
    )
