"""Writing the results of a long run streams them: the summary and report of a folder take a
peak of memory that does not grow with the number of intervals (issue 12: the end of a 5-minute
run held every interval histogram of every recorder at once, +300 MB)."""

from __future__ import annotations

import gc
import math
import tracemalloc
from pathlib import Path

from loadgen.metrics.hdr import LatencyRecorder
from loadgen.metrics.intervals import Interval
from loadgen.report.plots import MAX_POINTS, coarse_steps, latency_over_time, thin
from loadgen.report.rebuild import rebuild
from loadgen.report.results import LatencySeries, LoadedRun, RunWriter

RECORDERS = ("ack", "first_response", "complete", "step")
START_EPOCH = 1_700_000_000.0


def write_long_folder(directory: Path, intervals: int) -> Path:
    """A results folder of ``intervals`` one-second intervals, each with a histogram for every
    recorder and its service twin (a few hundred values spread over 1-500 ms) and a failure,
    written through ``RunWriter`` as a run writes it."""
    directory.mkdir()
    writer = RunWriter(
        directory,
        START_EPOCH,
        {"campaign": "long", "offered_rate": 100.0, "load_duration_s": float(intervals)},
    )
    recorders = {
        name: LatencyRecorder(name)
        for base in (*RECORDERS, "lateness", "loop_lag")
        for name in (base, f"{base}.service")
    }
    totals: dict[str, int] = {}
    for index in range(intervals):
        for number, recorder in enumerate(recorders.values()):
            for k in range(200):
                recorder.record((1 + (k * 37 + index * 11 + number) % 500) / 1000)
        changed = {"ops.sent": 100, "ops.completed": 100, "ops.failed": 2, "ops.succeeded": 98}
        for name, value in changed.items():
            totals[name] = totals.get(name, 0) + value
        writer(
            Interval(
                index=index,
                start=float(index),
                end=float(index + 1),
                histograms={name: r.rollover() for name, r in recorders.items()},
                counters=changed,
                totals=dict(totals),
                gauges={
                    "phase": "load",
                    "offered_rate": 100.0,
                    "in_flight": 5,
                    "cpu_percent": 30.0,
                },
                final=index == intervals - 1,
            )
        )
    writer.close()
    return directory


def peak_of_rebuild(directory: Path) -> int:
    """Bytes traced at the peak of writing the summary and report, above what was held before."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rebuild(directory)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_the_report_of_4n_intervals_takes_no_more_memory_than_that_of_n(tmp_path: Path) -> None:
    n = 25
    rebuild(write_long_folder(tmp_path / "warm", 5))  # imports, font cache: once per process
    short = peak_of_rebuild(write_long_folder(tmp_path / "short", n))
    long = peak_of_rebuild(write_long_folder(tmp_path / "long", 4 * n))
    print(f"peak {short / 1e6:.1f} MB for {n} intervals, {long / 1e6:.1f} MB for {4 * n}")
    # holding each interval's histograms (188 kB each, 12 recorders) grew 2.3 MB per interval
    assert long < short + 1_000_000


def test_a_long_series_is_thinned_to_its_lows_and_highs_in_time_order() -> None:
    count = 10 * MAX_POINTS
    xs = [float(i + 1) for i in range(count)]
    ys = [float(i % 7) for i in range(count)]
    ys[12_345] = 900.0  # one spike
    ys[5_000:5_100] = [math.nan] * 100  # a gap shorter than a bucket: absorbed
    ys[15_000:15_040] = [math.nan] * 40

    thin_x, thin_y = thin(xs, ys)

    assert len(thin_x) == len(thin_y) <= MAX_POINTS
    assert list(thin_x) == sorted(thin_x)
    assert max(thin_y) == 900.0
    assert thin_x[list(thin_y).index(900.0)] == 12_346.0  # drawn where it happened
    assert min(thin_y) == 0.0
    assert thin(xs[:MAX_POINTS], ys[:MAX_POINTS]) == (xs[:MAX_POINTS], ys[:MAX_POINTS])
    gap = [math.nan] * (2 * count // MAX_POINTS * 2)  # two whole buckets with no number
    _, with_gap = thin([float(i) for i in range(count + len(gap))], [*gap, *ys])
    assert math.isnan(with_gap[0])


def test_coarse_steps_keep_the_highest_count_of_each_bucket() -> None:
    count = 4 * MAX_POINTS
    edges = [float(i) for i in range(count + 1)]
    values = [0.0] * count
    values[777] = 5.0

    steps, heights = coarse_steps(edges, values)

    assert len(steps) == len(heights) + 1 <= MAX_POINTS // 2 + 1
    assert steps[0] == 0.0
    assert steps[-1] == float(count)
    assert sum(heights) == 5.0
    spike = list(heights).index(5.0)
    assert steps[spike] <= 777.0 < steps[spike + 1]


def test_drawing_a_series_4x_longer_than_max_points_takes_the_same_memory(tmp_path: Path) -> None:
    def run_of(intervals: int) -> LoadedRun:
        run = LoadedRun(tmp_path, {}, {}, {}, {}, True)
        series = run.latency["complete"] = LatencySeries()
        for column in (series.ends, series.p50, series.p90, series.p99):
            column.extend(float(1 + i % 97) for i in range(intervals))
        return run

    def peak(run: LoadedRun) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            assert isinstance(latency_over_time(run, "complete"), bytes)
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    latency_over_time(run_of(10), "complete")  # warm
    short, long = peak(run_of(MAX_POINTS)), peak(run_of(4 * MAX_POINTS))
    # the series themselves (4 x 8 bytes an interval) are allocated before the measure
    assert long < short + 200_000, (short, long)
