"""Shared helpers of the campaign acceptance tests (a module with a unique name, no package).

``run_cli`` is ``loadgen ...`` in this process (exit code, stdout, stderr); ``check_results_folder``
is the definition of "a complete results folder" that every end-to-end test applies; the
``SHORT`` overrides shrink a shipped scenario to about a second of load on a small fleet.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from hdrh.log import HistogramLogReader

from loadgen.cli import main
from loadgen.metrics.hdr import new_histogram

REPO: Final = Path(__file__).resolve().parents[2]
SCENARIOS: Final = REPO / "scenarios"
SHORT_STAGE: Final = 'platform.arrival.stages=[{duration="1s", rate=20}]'
SHORT: Final = (SHORT_STAGE, "devices.count=20")
PHASES: Final = ("ack", "first_response", "complete", "service", "callback")
FIGURES: Final = ("p50", "p90", "p99", "p999", "max", "mean", "count")
OPERATIONS: Final = ("sent", "completed", "succeeded", "failed", "timed_out")
FILES: Final = ("scenario.toml", "run.json", "summary.json", "timeseries.csv", "report.html")
# summary phase -> the recorder (and .hlog file) it is computed from
HLOG_OF_PHASE: Final = {
    "ack": "ack",
    "first_response": "first_response",
    "complete": "complete",
    "service": "complete.service",
    "callback": "callback",
    "step": "step",
}


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``loadgen *argv`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sets(*assignments: str) -> list[str]:
    return [arg for assignment in assignments for arg in ("--set", assignment)]


def only_run(root: Path) -> Path:
    """The one run folder under a results root (``root/<campaign>/<stamp>``)."""
    runs = [p for p in root.glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def hlog_total(path: Path) -> tuple[int, int]:
    """(interval lines, total count) of an interval log, read by HdrHistogram_py's own reader."""
    reader = HistogramLogReader(str(path), new_histogram())
    total = new_histogram()
    lines = 0
    try:
        while (histogram := reader.get_next_interval_histogram()) is not None:
            total.add(histogram)
            lines += 1
    finally:
        reader.close()
    return lines, total.get_total_count()


def load_summary(directory: Path) -> dict[str, Any]:
    summary: dict[str, Any] = orjson.loads((directory / "summary.json").read_bytes())
    return summary


def check_results_folder(directory: Path, *, killed: bool = False) -> dict[str, Any]:
    """Assert that a run's folder is complete and self-consistent; its summary.

    ``killed``: the run died by SIGKILL, so the last line of an interval log may be cut (the
    reference reader is not asked to read it; ``loadgen report`` skips it)."""
    for name in FILES:
        assert (directory / name).is_file(), f"{name} missing in {directory}"
    assert (directory / "report.html").read_text(encoding="utf-8").lstrip().startswith("<!")
    tomllib.loads((directory / "scenario.toml").read_text(encoding="utf-8"))
    orjson.loads((directory / "run.json").read_bytes())
    summary = load_summary(directory)
    for key in ("offered_rate", "achieved_rate", "operations", "latency_ms", "counters"):
        assert key in summary, key
    assert isinstance(summary["thresholds"], list)
    assert isinstance(summary["generator"], dict)
    assert "saturated" in summary["generator"]
    for key in OPERATIONS:
        assert isinstance(summary["operations"][key], int), key
    for phase in PHASES:
        assert set(FIGURES) <= set(summary["latency_ms"][phase]), phase
    header = (directory / "timeseries.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("t_s,phase,stage,offered_rate")
    # every interval log decodes with the reference reader, and adds up to the summary's count
    hlogs = {path.name.removesuffix(".hlog"): path for path in directory.glob("*.hlog")}
    assert hlogs, f"no .hlog in {directory}"
    if killed:
        return summary
    for phase, recorder in HLOG_OF_PHASE.items():
        count = summary["latency_ms"].get(phase, {}).get("count", 0)
        if recorder in hlogs:
            _, total = hlog_total(hlogs[recorder])
            assert total == count, (phase, total, count)
        else:
            assert count == 0, (phase, count)
    return summary
