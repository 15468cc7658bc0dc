"""The load's measurement path makes no reference cycles (issue 17): with no automatic full
collection during a load (``loadgen.metrics.collector``), a cycle would be memory that waits.

The histograms were the source: HdrHistogram_py's histogram and its encoder referred to each
other (a dozen cycles of 188 kB each an interval), its encoder made a ctypes type per encode
(cached only weakly: one more cycle each), and every interval's fresh 23,552-count lists were
walked by each collection until they died. The hlogs written by our encoder are byte for byte
HdrHistogram_py's."""

from __future__ import annotations

import gc
import random
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import HIGHEST_US, LatencyRecorder, new_histogram
from loadgen.metrics.intervals import HlogWriter, Interval, encode
from loadgen.report.results import RunWriter, iter_hlog
from loadgen.scale.local import _HlogTail


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees anything here; what is left is found by ``gc.collect``."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _recorders(seed: int) -> list[LatencyRecorder]:
    rng = random.Random(seed)
    recorders = [LatencyRecorder(name) for name in ("ack", "complete", "lateness")]
    for recorder in recorders:
        for _ in range(2_000):
            recorder.record(rng.lognormvariate(-5, 1.5))
    return recorders


def _interval(index: int, recorders: list[LatencyRecorder]) -> Interval:
    histograms = {r.name: r.rollover() for r in recorders}
    return Interval(index, float(index), index + 1.0, histograms, {"ops.sent": 5}, {}, {})


def test_a_histogram_is_freed_by_reference_counting(no_collector: None) -> None:
    histogram = new_histogram()
    histogram.record_value(1234)
    gone = weakref.ref(histogram)
    del histogram
    assert gone() is None


def test_a_decoded_histogram_is_freed_by_reference_counting(
    tmp_path: Path, no_collector: None
) -> None:
    """A histogram read back from an hlog (a report's, a shard's tail) is HdrHistogram_py's
    decoding: the same histogram <-> encoder cycle as a new one, broken by the same helper, and
    it can still be encoded while it lives."""
    writer = HlogWriter(tmp_path, 1_700_000_000.0)
    for index in range(3):
        writer(_interval(index, _recorders(index)))
    writer.close()
    path = tmp_path / "ack.hlog"
    payloads = [line.rsplit(",", 1)[1] for line in path.read_text().splitlines()[3:]]
    read: list[weakref.ref[HdrHistogram]] = []
    for (_, _, histogram), payload in zip(iter_hlog(path), payloads, strict=True):
        assert histogram.encode().decode("ascii") == payload
        read.append(weakref.ref(histogram))
    del histogram
    tailed = [weakref.ref(histogram) for histogram in _HlogTail(path).new()]
    assert len(read) == len(tailed) == 3
    assert [ref() for ref in (*read, *tailed)] == [None] * 6


def test_a_recorder_reuses_its_two_count_lists_and_starts_each_interval_at_zero() -> None:
    recorder = LatencyRecorder("x")
    first = recorder.close_interval()
    recorder.fold(first)
    lists = {id(first), id(recorder._counts)}
    for interval in range(5):
        for value in range(interval + 1):
            recorder.record_us(1000 * (value + 1))
        histogram = recorder.rollover()
        assert histogram.get_total_count() == interval + 1  # nothing left from the last one
        assert {id(recorder._counts), id(recorder._spare)} == lists
    assert recorder.total.get_total_count() == 15


def test_an_interval_rolled_over_and_written_leaves_no_cyclic_garbage(
    tmp_path: Path, no_collector: None
) -> None:
    recorders = _recorders(1)
    writer = RunWriter(tmp_path, 1_700_000_000.0, {"campaign": "cycles"})
    for index in range(3):
        for recorder in recorders:
            recorder.record(0.002 * (index + 1))
        for _ in writer.pieces(_interval(index, recorders)):
            pass
    writer.close()
    assert gc.collect() == 0
    assert len(list(iter_hlog(tmp_path / "ack.hlog"))) == 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_our_encoding_is_hdrhistogram_py_s_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    histogram = new_histogram()
    for _ in range(rng.choice([1, 10, 5_000])):
        histogram.record_value(min(HIGHEST_US, int(rng.lognormvariate(7, 3))))
    reference = HdrHistogram(1, HIGHEST_US, 3)
    reference.add(histogram)
    assert encode(histogram) == reference.encode()
    assert encode(histogram) == histogram.encode()  # and again, from the one buffer


def test_an_empty_and_a_top_of_range_histogram_encode_as_hdrhistogram_py() -> None:
    empty = new_histogram()
    assert encode(empty) == HdrHistogram(1, HIGHEST_US, 3).encode()
    top = new_histogram()
    top.record_value(HIGHEST_US, 7)
    assert encode(top) == top.encode()
    assert HdrHistogram.decode(encode(top)).get_max_value() == top.get_max_value()


def test_the_hlog_written_in_pieces_is_the_one_written_at_once(tmp_path: Path) -> None:
    """The interval task advances the writer's pieces with a checkpoint between them; the file
    is the same as one written in one call, and as HdrHistogram_py's own encoding gives."""
    at_once, in_pieces = tmp_path / "once", tmp_path / "pieces"
    at_once.mkdir()
    in_pieces.mkdir()
    whole, sliced = HlogWriter(at_once, 1_700_000_000.0), HlogWriter(in_pieces, 1_700_000_000.0)
    for index in range(3):
        interval = _interval(index, _recorders(index))
        whole(interval)
        steps = list(sliced.pieces(interval))
        assert len(steps) == len(interval.histograms)  # one piece per recorder's line
        for name, histogram in interval.histograms.items():
            line = (at_once / f"{name}.hlog").read_text().splitlines()[-1]
            assert line.endswith("," + histogram.encode().decode("ascii"))
    whole.close()
    sliced.close()
    for path in at_once.iterdir():
        assert path.read_bytes() == (in_pieces / path.name).read_bytes()
