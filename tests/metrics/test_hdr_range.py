"""Values outside the histogram's range are clamped and counted, never dropped, and the count
reaches ``summary.json`` however the summary is made: at the end of a run, rebuilt from the
folder's files, or merged from shards."""

from __future__ import annotations

from pathlib import Path

import trio
from trio.testing import MockClock

from loadgen.metrics.hdr import HIGHEST_US, LatencyRecorder, new_histogram
from loadgen.metrics.intervals import run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.report.rebuild import rebuild
from loadgen.report.results import RunWriter
from loadgen.report.summary import summary_from_metrics
from loadgen.scale.merge import merge_runs

# the bucket of HIGHEST_US (2,097,152 µs wide up there), as HdrHistogram reports it
TOP_US = new_histogram().get_highest_equivalent_value(HIGHEST_US)
TOP_LOW_US = new_histogram().get_lowest_equivalent_value(HIGHEST_US)


def test_two_hours_is_recorded_at_the_top_of_the_range_and_counted() -> None:
    recorder = LatencyRecorder("complete")
    recorder.record(7200.0)
    histogram = recorder.rollover()
    assert histogram.get_total_count() == recorder.count == 1
    assert histogram.get_max_value() == TOP_US
    assert histogram.get_min_value() == TOP_LOW_US
    assert TOP_LOW_US <= HIGHEST_US <= TOP_US < HIGHEST_US * 1.001
    assert histogram.get_value_at_percentile(50.0) == TOP_US
    assert (recorder.saturated, recorder.negative) == (1, 0)


def test_a_negative_value_is_recorded_as_zero_and_counted_negative() -> None:
    recorder = LatencyRecorder("complete")
    recorder.record(-0.25)  # a clock step
    recorder.record(-1e-6)  # -1 µs rounds half-up to -1, still negative
    recorder.record(-0.4e-6)  # rounds half-up to 0: a valid 0, not a negative
    histogram = recorder.rollover()
    assert histogram.get_total_count() == 3
    assert histogram.get_max_value() == 0
    assert (recorder.saturated, recorder.negative) == (0, 2)


def test_the_range_ends_themselves_are_not_out_of_range() -> None:
    recorder = LatencyRecorder("complete")
    recorder.record(HIGHEST_US / 1e6)
    recorder.record(0.0)
    recorder.record_us(HIGHEST_US)
    recorder.record_us(0)
    assert recorder.rollover().get_total_count() == 4
    assert (recorder.saturated, recorder.negative) == (0, 0)


def test_record_us_with_a_count_clamps_and_counts_each() -> None:
    counters: dict[str, int] = {"hdr.above.x": 0, "hdr.below.x": 0}
    recorder = LatencyRecorder("x", counters)
    recorder.record_us(HIGHEST_US + 1, 3)
    recorder.record_us(-5, 2)
    histogram = recorder.rollover()
    assert histogram.get_total_count() == 5
    assert histogram.get_count_at_value(HIGHEST_US) == 3
    assert histogram.get_count_at_value(0) == 2
    assert (recorder.saturated, recorder.negative) == (3, 2)
    assert counters == {"hdr.above.x": 3, "hdr.below.x": 2}


def test_metrics_count_clamped_values_per_recorder() -> None:
    metrics = Metrics(["complete"])
    metrics.phase("complete").record(7200.0, 0.010)  # intended 2 h, service 10 ms
    metrics.phase("ack").record(-0.001, -0.001)
    metrics.single("lateness").record(4000.0)
    metrics.phase("complete").record(0.5, 0.5)
    assert {k: v for k, v in metrics.counters.items() if k.startswith("hdr.")} == {
        "hdr.above.complete": 1,
        "hdr.below.ack": 1,
        "hdr.below.ack.service": 1,
        "hdr.above.lateness": 1,
    }
    summary = summary_from_metrics(metrics, {})
    assert summary["histograms_out_of_range"] == {
        "ack": {"above": 0, "below": 1},
        "ack.service": {"above": 0, "below": 1},
        "complete": {"above": 1, "below": 0},
        "lateness": {"above": 1, "below": 0},
    }
    assert summary["latency_ms"]["complete"]["count"] == 2
    assert summary["latency_ms"]["complete"]["max"] == TOP_US / 1000


def test_a_summary_without_clamped_values_says_so() -> None:
    metrics = Metrics(["complete"])
    metrics.phase("complete").record(0.5, 0.5)
    assert summary_from_metrics(metrics, {})["histograms_out_of_range"] == {}


async def write_folder(directory: Path) -> None:
    """Three 1 s intervals through ``run_intervals`` and ``RunWriter``, as a run writes them."""
    metrics = Metrics(["complete"])
    writer = RunWriter(directory, 1_700_000_000.0, {"campaign": "range", "interval": 1.0})
    t0 = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            cancel = trio.CancelScope()

            async def intervals(task_status: trio.TaskStatus[None]) -> None:
                with cancel:
                    await run_intervals(metrics, [writer], t0=t0, task_status=task_status)

            await nursery.start(intervals)
            await trio.sleep_until(t0 + 0.5)
            metrics.phase("complete").record(0.02, 0.01)
            await trio.sleep_until(t0 + 1.5)
            metrics.phase("complete").record(7200.0, 0.01)  # a lost answer counted at 2 h
            metrics.phase("complete").record(-0.003, -0.003)  # a clock step
            await trio.sleep_until(t0 + 2.5)
            metrics.phase("complete").record(9000.0, 9000.0)
            await trio.sleep_until(t0 + 3.0)
            cancel.cancel()
    finally:
        writer.close()


async def test_out_of_range_counts_survive_the_files_a_rebuild_and_a_merge(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    expected = {
        "complete": {"above": 2, "below": 1},
        "complete.service": {"above": 1, "below": 1},
    }
    shards = [tmp_path / "a", tmp_path / "b"]
    for shard in shards:
        shard.mkdir()
        await write_folder(shard)

    rebuilt, _ = rebuild(shards[0])
    assert rebuilt["histograms_out_of_range"] == expected
    assert rebuilt["latency_ms"]["complete"]["count"] == 4
    assert rebuilt["latency_ms"]["complete"]["max"] == TOP_US / 1000

    merged, _ = rebuild(merge_runs(shards, tmp_path / "merged"))
    assert merged["histograms_out_of_range"] == {
        name: {side: 2 * n for side, n in sides.items()} for name, sides in expected.items()
    }
    assert merged["latency_ms"]["complete"]["count"] == 8
