"""One latency measurement as HdrHistograms in integer microseconds (1 µs .. 1 h, 3 digits).

Recording is on the hot path of every operation (five values per operation on the platform
side), and HdrHistogram_py's ``record_value`` is pure Python over a ctypes array (~0.7 µs, more
with its min/max bookkeeping). So a ``LatencyRecorder`` computes the HdrHistogram bucket index
itself, with the same arithmetic as HdrHistogram for this fixed layout (unit magnitude 0, 2048
sub-buckets), and counts into a plain list: one ``bit_length``, two shifts, one list increment.
Once per interval the owner calls ``rollover()``, which turns the list into a real
``HdrHistogram`` (same buckets, so nothing is approximated), folds it into the cumulative
``total`` with one C-level ``add`` and hands it out for the interval log.

A recorder owns two count lists for its whole life and swaps them at each roll-over (the one
just read is zeroed and becomes the next interval's). A list of 23,552 counts is a container the
garbage collector walks element by element: a fresh one per recorder per interval went through a
young collection and then every gen1 and full collection until it died, and the dozen of a run
made up nine tenths of what those collections walked (334k of 341k references in a gen1
collection of the firmware-update scenario, 3-5 ms of event-loop stall each, issue 17). Kept for
the recorder's life, the two are frozen with the rest of the start-up heap
(``loadgen.metrics.collector``) and never walked again. ``array.array`` (not tracked by the
collector at all) would also do, but costs ~35 ns more per ``record``, on every operation.

Nothing is sampled away and nothing is dropped: a value above the range is recorded at the top of
the range and counted in ``saturated`` (HdrHistogram_py would silently return False), a negative
one (a clock step) is recorded as 0 and counted in ``negative``. A recorder given its run's
counters also counts them there, as ``hdr.above.<recorder>`` and ``hdr.below.<recorder>``: the
counters are what ``counters.jsonl``, a shard merge and a rebuilt summary carry, so the figure
reaches ``summary.json`` whichever way the summary is made.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping, Sequence
from functools import cache
from math import floor
from typing import Final

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

__all__ = [
    "ABOVE_PREFIX",
    "BELOW_PREFIX",
    "COUNTS_LEN",
    "HIGHEST_US",
    "LOWEST_US",
    "PERCENTILES",
    "SIGNIFICANT_FIGURES",
    "LatencyRecorder",
    "acyclic",
    "bucket_index",
    "decode",
    "histogram_from_counts",
    "new_histogram",
    "percentiles_ms",
    "prepare",
    "values_at",
]

LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000  # one hour
SIGNIFICANT_FIGURES: Final = 3
PERCENTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
ABOVE_PREFIX: Final = "hdr.above."  # + recorder name: values clamped to HIGHEST_US
BELOW_PREFIX: Final = "hdr.below."  # + recorder name: negative values recorded as 0


def acyclic(histogram: HdrHistogram) -> HdrHistogram:
    """``histogram``, freed by reference counting alone from now on.

    HdrHistogram_py's histogram and its encoder refer to each other: each histogram made (a
    dozen per interval, 188 kB of counts each) or decoded (a report reads a run's hundreds of
    intervals back) was a reference cycle, the only cyclic garbage of a load (issue 17), left
    for the cycle collector. A weak back-reference frees it when its last user lets go, and
    ``encode`` still works as long as the histogram is alive (which it is, being the object
    ``encode`` is called on)."""
    histogram.encoder.histogram = weakref.proxy(histogram)
    return histogram


def new_histogram() -> HdrHistogram:
    return acyclic(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES))


def decode(payload: bytes) -> HdrHistogram:
    """HdrHistogram_py's decoding of an hlog line's payload (``acyclic``)."""
    return acyclic(HdrHistogram.decode(payload))


def _layout() -> tuple[int, int, int]:
    """(sub-bucket mask, bucket shift, half-count magnitude) of our histogram layout."""
    layout = new_histogram()
    assert layout.unit_magnitude == 0, "the inline index assumes unit magnitude 0"
    return (
        int(layout.sub_bucket_mask),
        int(layout.sub_bucket_half_count_magnitude) + 1,
        int(layout.sub_bucket_half_count_magnitude),
    )


_MASK, _SHIFT, _HALF = _layout()
COUNTS_LEN: Final = int(new_histogram().counts_len)


def bucket_index(us: int) -> int:
    """HdrHistogram's counts index of ``us`` (0 <= us <= HIGHEST_US) in our layout."""
    bucket = (us | _MASK).bit_length() - _SHIFT
    return (bucket << _HALF) + (us >> bucket)


def histogram_from_counts(counts: list[int]) -> HdrHistogram:
    """A real HdrHistogram holding exactly ``counts`` (indexed as ``bucket_index``)."""
    histogram = new_histogram()
    array = np.asarray(counts, dtype=np.uint64)
    nonzero = np.flatnonzero(array)
    if nonzero.size:
        np.frombuffer(histogram.counts, dtype=np.uint64)[:] = array
        histogram.set_internal_tacking_values(int(nonzero[0]), int(nonzero[-1]), int(array.sum()))
    return histogram


class LatencyRecorder:
    """The open interval (a list of bucket counts) and the cumulative histogram of one measurement."""

    __slots__ = (
        "_above",
        "_below",
        "_counters",
        "_counts",
        "_spare",
        "name",
        "negative",
        "saturated",
        "total",
    )

    def __init__(self, name: str, counters: MutableMapping[str, int] | None = None) -> None:
        self.name = name
        self._counts = [0] * COUNTS_LEN
        self._spare: list[int] | None = [0] * COUNTS_LEN  # the next interval's (zeroed) counts
        self.total = new_histogram()
        self.saturated = 0
        self.negative = 0
        self._counters = counters
        self._above = ABOVE_PREFIX + name
        self._below = BELOW_PREFIX + name

    def __repr__(self) -> str:
        return (
            f"<LatencyRecorder {self.name} total={self.total.get_total_count()}"
            f" saturated={self.saturated} negative={self.negative}>"
        )

    def record(self, seconds: float) -> None:
        """Record a latency given in seconds (as integer microseconds, half-up).

        ``floor``, not ``int``: ``int`` truncates towards zero, which would round -1 µs (a clock
        step) up to 0 and record it as a valid value without counting it negative."""
        us = floor(seconds * 1e6 + 0.5)
        if us < 0 or us > HIGHEST_US:
            us = self._clamp(us, 1)
        bucket = (us | _MASK).bit_length() - _SHIFT
        self._counts[(bucket << _HALF) + (us >> bucket)] += 1

    def record_us(self, us: int, count: int = 1) -> None:
        if us < 0 or us > HIGHEST_US:
            us = self._clamp(us, count)
        self._counts[bucket_index(us)] += count

    def _clamp(self, us: int, count: int) -> int:
        """Count an out-of-range value and return where it is recorded (off the hot path)."""
        if us < 0:
            self.negative += count
            if self._counters is not None:
                self._counters[self._below] += count
            return 0
        self.saturated += count
        if self._counters is not None:
            self._counters[self._above] += count
        return HIGHEST_US

    @property
    def interval(self) -> HdrHistogram:
        """The open interval as a histogram (a copy: recording goes on into the counts)."""
        return histogram_from_counts(self._counts)

    @property
    def count(self) -> int:
        """Values recorded so far, the open interval included."""
        return int(self.total.get_total_count()) + sum(self._counts)

    def rollover(self) -> HdrHistogram:
        """Close the interval: return it as a histogram, fold it into ``total``, start anew."""
        return self.fold(self.close_interval())

    def close_interval(self) -> list[int]:
        """Swap the open interval's counts out (cheap: the interval boundary is this instant);
        ``fold`` turns them into the interval's histogram later, outside the boundary."""
        spare, self._spare = self._spare, None
        counts, self._counts = self._counts, spare if spare is not None else [0] * COUNTS_LEN
        return counts

    def fold(self, counts: list[int]) -> HdrHistogram:
        """The interval ``counts`` (from ``close_interval``) as a histogram, added to ``total``;
        ``counts`` is zeroed and kept as the next interval's (see the module docstring)."""
        finished = histogram_from_counts(counts)
        if finished.get_total_count():
            self.total.add(finished)
            for index in np.flatnonzero(np.frombuffer(finished.counts, dtype=np.uint64)).tolist():
                counts[index] = 0
        if self._spare is None and len(counts) == COUNTS_LEN:
            self._spare = counts
        return finished

    def merged(self) -> HdrHistogram:
        """Everything recorded so far (total + the open interval), without closing anything."""
        out = new_histogram()
        # only non-empty histograms are added: HdrHistogram_py's ``add`` of an empty histogram
        # sets the minimum to 0 for good (it takes the empty one's get_min_value(), 0)
        for part in (self.total, self.interval):
            if part.get_total_count():
                out.add(part)
        return out


@cache
def _layout_length() -> int:
    return int(new_histogram().counts_len)


@cache
def _bucket_values(counts_len: int) -> npt.NDArray[np.float64]:
    """The median equivalent value of every bucket of our histogram layout (computed once)."""
    layout = new_histogram()
    assert layout.counts_len == counts_len
    return np.array(
        [
            layout._hdr_median_equiv_value(layout.get_value_from_index(index))
            for index in range(counts_len)
        ],
        dtype=np.float64,
    )


def mean_us(histogram: HdrHistogram) -> float:
    """HdrHistogram's mean (median equivalent value of each bucket, weighted by its count),
    in one vectorised pass instead of HdrHistogram_py's Python iteration (~100x faster)."""
    total = histogram.get_total_count()
    if not total:
        return 0.0
    if histogram.counts_len != _layout_length() or histogram.word_size != 8:
        return float(histogram.get_mean_value())
    counts = np.frombuffer(histogram.counts, dtype=np.uint64)
    # an elementwise product and a sum, not `@`: a BLAS call wakes its thread pool, which on a
    # busy machine stalled the event loop for milliseconds per histogram
    weighted = float(np.sum(counts * _bucket_values(histogram.counts_len)))
    return weighted / float(total)


@cache
def _bucket_edges(counts_len: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The lowest and highest equivalent value of every bucket of our layout (computed once)."""
    layout = new_histogram()
    assert layout.counts_len == counts_len
    values = [layout.get_value_from_index(index) for index in range(counts_len)]
    lowest = np.array([layout.get_lowest_equivalent_value(v) for v in values], dtype=np.int64)
    highest = np.array([layout.get_highest_equivalent_value(v) for v in values], dtype=np.int64)
    return lowest, highest


def values_at(histogram: HdrHistogram, percentiles: Sequence[float]) -> list[int]:
    """``get_value_at_percentile`` for each percentile (µs), exactly, in one vectorised pass.

    HdrHistogram_py walks the counts array in Python for every percentile (~5 ms each on our
    23,552 buckets); a summary asks for dozens, a live dashboard every interval, and both run
    inside the event loop. Same rule: the target count is ``max(1, int(p * total / 100 + 0.5))``,
    the answer the first bucket whose cumulative count reaches it, at its highest equivalent
    value (its lowest for p = 0)."""
    total = int(histogram.get_total_count())
    if not total:
        return [0 for _ in percentiles]
    if histogram.counts_len != _layout_length() or histogram.word_size != 8:
        return [int(histogram.get_value_at_percentile(p)) for p in percentiles]
    cumulative = np.cumsum(np.frombuffer(histogram.counts, dtype=np.uint64))
    lowest, highest = _bucket_edges(histogram.counts_len)
    out = []
    for percentile in percentiles:
        target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
        index = int(np.searchsorted(cumulative, target, side="left"))
        if index >= histogram.counts_len:
            out.append(0)
        else:
            out.append(int(highest[index] if percentile else lowest[index]))
    return out


def prepare() -> None:
    """Build the per-bucket tables of the vectorised readers now (~0.1 s of Python, once), at
    start-up, not in the first interval of a run, where it would stall the event loop."""
    _bucket_edges(_layout_length())
    _bucket_values(_layout_length())


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float | int | None]:
    """p50/p90/p99/p999/max/mean in milliseconds (µs resolution) and the count.

    Values are HdrHistogram's equivalent values at 3 significant digits, converted exactly
    (µs / 1000); an empty histogram gives None for every figure and count 0.
    """
    count = int(histogram.get_total_count())
    if not count:
        return {**{key: None for key, _ in PERCENTILES}, "max": None, "mean": None, "count": 0}
    values = values_at(histogram, [pct for _, pct in PERCENTILES])
    out: dict[str, float | int | None] = {
        key: value / 1000 for (key, _), value in zip(PERCENTILES, values, strict=True)
    }
    out["max"] = histogram.get_max_value() / 1000
    out["mean"] = round(mean_us(histogram) / 1000, 3)
    out["count"] = count
    return out
