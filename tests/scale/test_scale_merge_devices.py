"""The fleet's figures survive a merge and a rebuild: ``extra.devices`` sums the shards' fleets.

A live run puts the fleet's statistics in ``summary["extra"]["devices"]``; the merge of shards and
the rebuild of a killed run only have the folder, so the fleet's size travels as the
``device.devices`` counter, which the merge sums like every other counter.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval
from loadgen.report.rebuild import rebuild, rebuild_summary
from loadgen.report.results import RunWriter, load_run
from loadgen.scale.merge import merge_runs

START_EPOCH = 1_764_000_000.0


def _write_shard(directory: Path, *, devices: int, operations: int, final: bool = True) -> None:
    directory.mkdir()
    writer = RunWriter(directory, START_EPOCH, {"campaign": "fleet", "interval": 1.0})
    histogram = new_histogram()
    for value in range(operations):
        histogram.record_value(1000 + value)
    totals = {
        "device.devices": devices,
        "device.ops.received": operations,
        "ops.sent": operations,
        "ops.completed": operations,
    }
    try:
        writer(Interval(0, 0.0, 1.0, {"complete": histogram}, totals, totals, {}, final=final))
    finally:
        writer.close()


def test_the_merged_summary_counts_the_devices_of_every_shard(tmp_path: Path) -> None:
    shards = [tmp_path / f"shard-{i}" for i in range(3)]
    for index, shard in enumerate(shards):
        _write_shard(shard, devices=33_333 + (index == 0), operations=100 + index)

    summary = rebuild_summary(load_run(merge_runs(shards, tmp_path / "merged")))

    assert summary["extra"]["devices"]["device.devices"] == 100_000
    assert summary["extra"]["devices"]["device.ops.received"] == 303
    assert summary["counters"]["device.devices"] == 100_000
    assert summary["latency_ms"]["complete"]["count"] == 303
    assert summary["interrupted"] is False


def test_a_rebuild_keeps_the_live_runs_fleet_statistics(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    _write_shard(directory, devices=20, operations=5)
    live = {"devices": {"device.devices": 20, "server.connections_accepted": 1}}
    (directory / "summary.json").write_bytes(orjson.dumps({"extra": live}))

    summary, _ = rebuild(directory)

    assert summary["extra"] == live


def test_a_killed_runs_fleet_size_comes_from_its_counters(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    _write_shard(directory, devices=20, operations=5, final=False)

    summary = rebuild_summary(load_run(directory))

    assert summary["interrupted"] is True
    assert summary["extra"]["devices"] == {"device.devices": 20, "device.ops.received": 5}


def test_a_run_without_a_fleet_has_no_device_figures(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    writer = RunWriter(directory, START_EPOCH, {"campaign": "platform-only", "interval": 1.0})
    totals = {"ops.sent": 1}
    writer(Interval(0, 0.0, 1.0, {}, totals, totals, {}, final=True))
    writer.close()

    assert "extra" not in rebuild_summary(load_run(directory))
