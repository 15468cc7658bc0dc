"""The sharded run's live line: the shards' folders read as they grow, summed into one Interval.

Counters are summed, in-flight and offered rates added, and the p99 comes from the shards'
``complete`` histograms added together (exact), read incrementally from their ``.hlog`` files.
"""

from __future__ import annotations

import io
from pathlib import Path

from loadgen.campaign.progress import Progress
from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval
from loadgen.report.results import RunWriter
from loadgen.scale.local import _Combined


def _interval(index: int, values_us: list[int], sent: int, in_flight: int) -> Interval:
    histogram = new_histogram()
    for value in values_us:
        histogram.record_value(value)
    totals = {"ops.sent": sent, "ops.completed": sent - in_flight}
    gauges: dict[str, object] = {"in_flight": in_flight, "offered_rate": 10.0, "stage": "1:hold",
                                 "phase": "load"}  # fmt: skip
    return Interval(index, index, index + 1.0, {"complete": histogram}, totals, totals, gauges)


def test_the_shards_are_summed_and_their_histograms_added(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"shard-{i}").mkdir()
    writers = [RunWriter(tmp_path / f"shard-{i}", 1.7e9, {}) for i in range(2)]
    combined = _Combined([tmp_path / "shard-0", tmp_path / "shard-1"])
    writers[0](_interval(0, [1_000] * 98, sent=100, in_flight=2))
    writers[1](_interval(0, [9_000_000] * 2, sent=50, in_flight=5))  # the slow shard

    first = combined.interval(0.0, 1.0)

    assert first.totals["ops.sent"] == 150
    assert first.counters["ops.sent"] == 150
    assert first.gauges["in_flight"] == 7
    assert first.gauges["offered_rate"] == 20.0
    assert first.gauges["stage"] == "1:hold"
    complete = first.histograms["complete"]
    assert complete.get_total_count() == 100
    # 2 of 100 at 9 s: the p99 of the union is 9 s, where neither shard's p99 averaged says so
    assert complete.get_value_at_percentile(99.0) >= 8_990_000

    writers[0](_interval(1, [2_000] * 10, sent=130, in_flight=1))
    second = combined.interval(1.0, 2.0)
    assert second.counters["ops.sent"] == 30  # the change since the last poll
    assert second.histograms["complete"].get_total_count() == 10  # only the new lines
    stream = io.StringIO()
    Progress(10.0, mode="lines", stream=stream, width=100)(second)
    assert "in flight 6" in stream.getvalue()  # 1 now in shard 0, 5 last seen in shard 1
    for writer in writers:
        writer.close()


def test_a_shard_with_nothing_on_disk_yet_is_no_error(tmp_path: Path) -> None:
    combined = _Combined([tmp_path / "not-yet"])
    interval = combined.interval(0.0, 1.0)
    assert interval.totals == {}
    assert interval.histograms == {}
