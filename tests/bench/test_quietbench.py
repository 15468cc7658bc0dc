"""The quiet-generator figure of ``make bench`` (``loadgen.bench.quietbench``): which intervals it
judges and what it reads from a run's ``timeseries.csv``."""

from __future__ import annotations

from pathlib import Path

from loadgen.bench.quietbench import load_intervals, worst_below
from loadgen.report.results import TIMESERIES_COLUMNS


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    lines = [",".join(TIMESERIES_COLUMNS)]
    lines += [",".join(row.get(column, "") for column in TIMESERIES_COLUMNS) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_only_the_load_s_intervals_are_read(tmp_path: Path) -> None:
    path = _csv(tmp_path / "timeseries.csv", [
        {"t_s": "1.000", "phase": "load", "cpu_percent": "40.0", "lateness_p99_ms": "1.5",
         "loop_lag_p99_ms": "1.1"},
        {"t_s": "2.000", "phase": "load", "cpu_percent": "45.0", "lateness_p99_ms": "",
         "loop_lag_p99_ms": "0.9"},
        {"t_s": "3.000", "phase": "drain", "cpu_percent": "10.0", "lateness_p99_ms": "9.0"},
    ])  # fmt: skip
    assert load_intervals(path) == [
        {"t_s": 1.0, "cpu_percent": 40.0, "lateness_p99_ms": 1.5, "loop_lag_p99_ms": 1.1},
        {"t_s": 2.0, "cpu_percent": 45.0, "lateness_p99_ms": None, "loop_lag_p99_ms": 0.9},
    ]


def test_the_worst_interval_is_taken_among_those_below_the_cpu_limit() -> None:
    rows: list[dict[str, float | None]] = [
        {"t_s": 1.0, "cpu_percent": 45.0, "lateness_p99_ms": 1.2, "loop_lag_p99_ms": 1.0},
        {"t_s": 2.0, "cpu_percent": 69.9, "lateness_p99_ms": 1.9, "loop_lag_p99_ms": 1.0},
        {"t_s": 3.0, "cpu_percent": 70.0, "lateness_p99_ms": 30.0, "loop_lag_p99_ms": 1.0},
        {"t_s": 4.0, "cpu_percent": None, "lateness_p99_ms": 40.0, "loop_lag_p99_ms": 1.0},
        {"t_s": 5.0, "cpu_percent": 20.0, "lateness_p99_ms": None, "loop_lag_p99_ms": 1.0},
    ]
    assert worst_below(rows) == (1.9, 2)
    assert worst_below(rows, cpu_limit=80.0) == (30.0, 3)
    assert worst_below([]) == (None, 0)
