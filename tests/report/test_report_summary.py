"""Summary percentiles read back from the .hlog files are HdrHistogram's exact answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import HIGHEST_US, LOWEST_US, SIGNIFICANT_FIGURES
from loadgen.metrics.intervals import run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.report.console import format_summary
from loadgen.report.plots import spectrum_points
from loadgen.report.rebuild import rebuild_summary
from loadgen.report.results import RunWriter, load_run

# 1 ms, 2 ms, ... 100 ms, once each, spread over three intervals
VALUES_US = [ms * 1000 for ms in range(1, 101)]


async def write_known_values(directory: Path) -> None:
    metrics = Metrics(["complete"])
    writer = RunWriter(directory, 1_700_000_000.0, {"campaign": "known", "load_duration_s": 3.0})
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_intervals(
            metrics, [writer], t0=t0, period=1.0, task_status=task_status))  # fmt: skip
        for i, value in enumerate(VALUES_US):
            await trio.sleep_until(t0 + 0.03 * i)
            metrics.phase("complete").record(value / 1e6, value / 2e6)
            metrics.count("ops.sent")
            metrics.count("ops.completed")
        await trio.sleep_until(t0 + 3.0)
        nursery.cancel_scope.cancel()
    writer.close()


async def test_summary_percentiles_are_hdrhistogram_answers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await write_known_values(tmp_path)
    run = load_run(tmp_path)
    summary = rebuild_summary(run)
    reference = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
    for value in VALUES_US:
        reference.record_value(value)

    complete = summary["latency_ms"]["complete"]
    service = summary["service_ms"]["complete"]

    assert len(run.series["complete"]) == 3  # the values really crossed interval boundaries
    assert complete["count"] == 100
    # HdrHistogram reports the highest value equivalent to the bucket at 3 significant digits
    assert complete["p50"] == reference.get_value_at_percentile(50) / 1000 == 50.015
    assert complete["p99"] == reference.get_value_at_percentile(99) / 1000 == 99.007
    assert complete["max"] == reference.get_max_value() / 1000 == 100.031
    assert service["p50"] == 25.007  # 25 ms: bucket of 16 µs steps, highest equivalent value
    assert summary["duration_s"] == 3.0
    assert summary["achieved_rate"] == round(100 / 3.0, 3)
    assert "complete" in format_summary(summary)


async def test_series_times_are_seconds_since_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await write_known_values(tmp_path)

    series = load_run(tmp_path).series["complete"]

    assert [(start, end) for start, end, _ in series] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert [h.get_total_count() for _, _, h in series] == [34, 33, 33]


async def test_spectrum_points_are_hdrhistogram_answers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    await write_known_values(tmp_path)
    histogram = load_run(tmp_path).totals["complete"]

    xs, ys = spectrum_points(histogram)

    assert xs[0] == 1.0
    assert xs[-1] == pytest.approx(1e5)
    for x, y in zip(xs, ys, strict=True):
        assert y == histogram.get_value_at_percentile(100.0 * (1.0 - 1.0 / x)) / 1000
    assert ys[0] == 1.0  # p0: the lowest value
    assert ys[-1] == 100.031
