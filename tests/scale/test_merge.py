"""The merge of N shards equals the histogram of every value recorded, and counters add up."""

import random

import trio

from loadgen.metrics import Metrics, new_histogram
from loadgen.metrics.intervals import run_intervals
from loadgen.report.results import RunWriter, load_run
from loadgen.scale.merge import merge_runs

START_EPOCH = 1_764_000_000.0


async def _write_shard(directory, values, counters, seconds=3):
    """Record `values` (µs) spread over `seconds` one-second intervals into a results folder."""
    metrics = Metrics(["complete"])
    writer = RunWriter(
        directory, START_EPOCH, {"campaign": "merge-test", "interval": 1.0, "offered_rate": 10.0}
    )
    t0 = trio.current_time()
    per_second = [values[i::seconds] for i in range(seconds)]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_intervals(
                metrics, [writer], t0=t0, period=1.0, task_status=task_status
            )
        )
        for second, chunk in enumerate(per_second):
            await trio.sleep_until(t0 + second + 0.5)
            for us in chunk:
                metrics.phase("complete").intended.record_us(us)
                metrics.phase("complete").service.record_us(us // 2)
            for name, value in counters.items():
                metrics.count(name, value)
        await trio.sleep_until(t0 + seconds + 0.25)
        nursery.cancel_scope.cancel()
    writer.close()


async def test_merged_histograms_equal_all_values_and_counters_sum(tmp_path, autojump_clock):
    rng = random.Random(7)
    shards = []
    everything = new_histogram()
    expected_sent = 0
    for shard in range(3):
        values = [int(rng.lognormvariate(8, 1.2)) + 1 for _ in range(2000 + 500 * shard)]
        for us in values:
            everything.record_value(us)
        counters = {"ops.sent": 100 + shard, "ops.completed": 90 + shard}
        expected_sent += (100 + shard) * 3
        directory = tmp_path / f"shard-{shard}"
        directory.mkdir()
        await _write_shard(directory, values, counters)
        shards.append(directory)

    merged = load_run(merge_runs(shards, tmp_path / "merged"))

    total = merged.totals["complete"]
    assert total.get_total_count() == everything.get_total_count()
    for percentile in (0.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert total.get_value_at_percentile(percentile) == everything.get_value_at_percentile(
            percentile
        )
    assert total.get_max_value() == everything.get_max_value()
    assert merged.counters["ops.sent"] == expected_sent
    assert merged.counters["ops.completed"] == (90 + 91 + 92) * 3
    assert merged.finished
    # interval by interval (the final partial interval recorded nothing, so it has no line)
    assert [(start, end) for start, end, _ in merged.series["complete"]] == [
        (0.0, 1.0),
        (1.0, 2.0),
        (2.0, 3.0),
    ]
    # the per-interval counter deltas add up to the totals
    sent_per_s = sum(float(row["sent_per_s"]) * 1.0 for row in merged.timeseries[:3])
    assert round(sent_per_s) == expected_sent


async def test_a_last_partial_interval_keeps_its_gauges_and_counters(tmp_path, autojump_clock):
    """Regression (issue 15, item 5): a shard's last, partial interval (2 s to 2.25 s) was keyed
    by ``end - period`` (1.25 s, i.e. the interval 1 s to 2 s), so the merged last row had no
    stage, offered rate, in flight or phase, and its counters overwrote the interval before."""
    shards = []
    for shard in range(2):
        directory = tmp_path / f"shard-{shard}"
        directory.mkdir()
        metrics = Metrics(["complete"])
        writer = RunWriter(
            directory, START_EPOCH, {"campaign": "merge-test", "interval": 1.0, "offered_rate": 5.0}
        )
        t0 = trio.current_time()

        def gauges(t0: float = t0) -> dict[str, object]:
            elapsed = trio.current_time() - t0
            return {
                "stage": "1:hold",
                "offered_rate": 5.0,
                "in_flight": 3 if elapsed < 2.1 else 1,
                "phase": "load" if elapsed < 2.1 else "drain",
            }

        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status, m=metrics, w=writer, g=gauges, t=t0: run_intervals(
                    m, [w], t0=t, period=1.0, gauges=g, task_status=task_status
                )
            )
            for second in range(2):
                await trio.sleep_until(t0 + second + 0.5)
                metrics.count("ops.sent", 5)
            await trio.sleep_until(t0 + 2.1)
            metrics.count("ops.completed", 7)
            await trio.sleep_until(t0 + 2.25)
            nursery.cancel_scope.cancel()
        writer.close()
        shards.append(directory)

    merged = load_run(merge_runs(shards, tmp_path / "merged"))

    rows = merged.timeseries
    assert [row["t_s"] for row in rows] == ["1.000", "2.000", "2.250"]
    assert [row["phase"] for row in rows] == ["load", "load", "drain"]
    assert [row["stage"] for row in rows] == ["1:hold"] * 3
    assert [row["in_flight"] for row in rows] == ["6", "6", "2"]
    assert [row["offered_rate"] for row in rows] == ["10.000"] * 3
    assert [row["sent_per_s"] for row in rows] == ["10.000", "10.000", "0.000"]
    assert float(rows[2]["completed_per_s"]) == 14 / 0.25
