"""The inline HdrHistogram index against HdrHistogram_py itself.

``LatencyRecorder`` does not call ``HdrHistogram.record_value``: it computes the counts index with
its own arithmetic and counts into a list that ``rollover`` turns into a real histogram. If that
arithmetic were off by one bucket anywhere, every percentile above that value would be wrong and
no other test would notice. So every value here is recorded both ways, ours and
``record_value`` on a fresh ``HdrHistogram`` of the same layout, and the two must agree on the
encoding (the bytes of an ``.hlog`` line), the count, min, max, mean and percentiles.

Values outside the range are the recorder's own rule (clamped to 0 or to 1 h and counted), so
the reference records the clamped value; the differential then checks the recording, and
``test_hdr_range.py`` checks the counting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.metrics.hdr import (
    COUNTS_LEN,
    HIGHEST_US,
    LatencyRecorder,
    bucket_index,
    mean_us,
    new_histogram,
    percentiles_ms,
)

ALL_PERCENTILES = (0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0)
# HdrHistogram_py's percentile walk is pure Python over up to 23,552 counts: the many small
# histograms of the property tests check a few, the sweep every one
SOME_PERCENTILES = (0.0, 50.0, 99.0, 100.0)


def clamp(us: int) -> int:
    return min(max(us, 0), HIGHEST_US)


def reference(values: Iterable[int]) -> HdrHistogram:
    """HdrHistogram_py's own recording of the (clamped) values."""
    histogram = new_histogram()
    for us in values:
        assert histogram.record_value(clamp(us)), us
    return histogram


def assert_same(
    ours: HdrHistogram, theirs: HdrHistogram, percentiles: Sequence[float] = SOME_PERCENTILES
) -> None:
    assert ours.get_total_count() == theirs.get_total_count()
    assert np.array_equal(counts(ours), counts(theirs))
    assert ours.encode() == theirs.encode()
    assert ours.get_min_value() == theirs.get_min_value()
    assert ours.get_max_value() == theirs.get_max_value()
    for pct in percentiles:
        assert ours.get_value_at_percentile(pct) == theirs.get_value_at_percentile(pct), pct


def counts(histogram: HdrHistogram) -> npt.NDArray[np.uint64]:
    return np.frombuffer(histogram.counts, dtype=np.uint64)


def bucket_edges() -> list[int]:
    """The first value of every counts index (each power-of-two sub-bucket edge), the value
    just below it and the last value it holds, within 0 .. HIGHEST_US."""
    layout = new_histogram()
    values: set[int] = set()
    for index in range(COUNTS_LEN):
        low = int(layout.get_value_from_index(index))
        high = int(layout.get_highest_equivalent_value(low))
        values.update(v for v in (low - 1, low, high) if 0 <= v <= HIGHEST_US)
    values.update(1 << k for k in range(32) if 1 << k <= HIGHEST_US)
    values.update((1 << k) - 1 for k in range(1, 33) if (1 << k) - 1 <= HIGHEST_US)
    values.update((HIGHEST_US - 1, HIGHEST_US))
    return sorted(values)


EDGES = bucket_edges()


def test_the_sweep_holds_both_ends_of_every_bucket_of_the_range() -> None:
    layout = new_histogram()
    edges = set(EDGES)
    top = bucket_index(HIGHEST_US)
    assert {bucket_index(us) for us in EDGES} == set(range(top + 1))
    for index in range(top):
        low = int(layout.get_value_from_index(index))
        assert {low, int(layout.get_highest_equivalent_value(low))} <= edges, index


def test_index_of_every_sub_bucket_edge_is_hdrhistograms() -> None:
    layout = new_histogram()
    ours = [bucket_index(us) for us in EDGES]
    theirs = [int(layout.get_counts_array_index(us)) for us in EDGES]
    mismatches = [(us, a, b) for us, a, b in zip(EDGES, ours, theirs, strict=True) if a != b]
    assert mismatches == []


def test_every_sub_bucket_edge_recorded_both_ways_is_the_same_histogram() -> None:
    by_us, by_seconds = LatencyRecorder("us"), LatencyRecorder("s")
    for us in EDGES:
        by_us.record_us(us)
        by_seconds.record(us / 1e6)
    theirs = reference(EDGES)
    ours = by_us.rollover()
    assert_same(ours, theirs, ALL_PERCENTILES)
    assert_same(by_seconds.rollover(), theirs, ALL_PERCENTILES)
    assert percentiles_ms(ours) == percentiles_ms(theirs)
    # our vectorised mean against HdrHistogram_py's own loop (only the summation order differs)
    assert mean_us(ours) == pytest.approx(theirs.get_mean_value(), rel=1e-12)
    assert by_us.saturated == by_us.negative == by_seconds.saturated == by_seconds.negative == 0


def test_single_value_at_each_edge_gives_hdrhistograms_min_max_and_percentiles() -> None:
    # one value alone: min, max and every percentile are that value's bucket, so a wrong
    # min/max tracking shows here even where the whole sweep's extremes would hide it (every
    # 97th edge keeps the test short: HdrHistogram_py's percentile walk is pure Python)
    for us in [*EDGES[::97], *EDGES[-8:]]:
        recorder = LatencyRecorder("one")
        recorder.record_us(us)
        assert_same(recorder.rollover(), reference([us]), (50.0,))


# Values spread over the whole range on a log scale (an exponent, then a value below 2**e), plus
# values beyond both ends: negative (a clock step) and above one hour (up to 2**64).
in_range = st.integers(0, 32).flatmap(lambda e: st.integers(0, min((1 << e) - 1, HIGHEST_US)))
values = st.one_of(
    in_range,
    in_range,
    in_range,
    st.integers(-(1 << 40), -1),
    st.integers(HIGHEST_US + 1, 1 << 64),
    st.sampled_from([0, 1, 2047, 2048, 2049, 4095, 4096, HIGHEST_US, HIGHEST_US + 1, -1]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(values, max_size=60), min_size=1, max_size=4))
def test_random_values_recorded_both_ways_are_the_same_histograms(
    intervals: Sequence[Sequence[int]],
) -> None:
    """Several intervals: each rollover, and the cumulative ``total``, equal HdrHistogram_py's."""
    by_us, by_seconds = LatencyRecorder("us"), LatencyRecorder("s")
    everything: list[int] = []
    for chunk in intervals:
        for us in chunk:
            by_us.record_us(us)
            by_seconds.record(us / 1e6)
        expected = reference(chunk)
        assert_same(by_us.rollover(), expected)
        assert_same(by_seconds.rollover(), expected)
        everything.extend(chunk)
    assert_same(by_us.total, reference(everything), ALL_PERCENTILES)
    assert_same(by_seconds.total, reference(everything))
    assert by_us.count == len(everything)
    above = sum(1 for us in everything if us > HIGHEST_US)
    below = sum(1 for us in everything if us < 0)
    assert (by_us.saturated, by_us.negative) == (above, below)
    assert (by_seconds.saturated, by_seconds.negative) == (above, below)


@settings(max_examples=60, deadline=None)
@given(st.lists(values, min_size=1, max_size=80), st.integers(1, 5))
def test_counted_values_and_the_open_interval_match_record_value(
    chunk: Sequence[int], count: int
) -> None:
    """``record_us(us, count)`` is ``record_value(us, count)``; ``merged()`` sees the open interval."""
    recorder = LatencyRecorder("counted")
    theirs = new_histogram()
    for us in chunk:
        recorder.record_us(us, count)
        assert theirs.record_value(clamp(us), count)
    assert recorder.count == len(chunk) * count
    assert_same(recorder.interval, theirs)
    assert_same(recorder.merged(), theirs)
