"""The soak's figures per minute and its verdict (pure: numbers in, records and text out).

A soak (``make soak``, ``python -m loadgen.bench.soak``) runs both sides for a long time at a rate
the machine holds, and asks three questions of it, each against the *second* minute (the first
holds the start: imports, connections, the ended-ids window filling):

1. memory: did the generator's RSS in the last minute exceed the second minute's by more than
   ``max_rss_growth_mb``? A minute's RSS is the median of its samples (one a second), its level,
   not a passing peak such as a collection;
2. latency: did p99(complete) drift by more than ``max_p99_drift``x? A drift is a trend, not
   one bad minute (on a shared machine another process can stall this one for a second, which
   puts that minute's p99 at the stall, as it should): the median p99 of the last third of the
   minutes over that of the first third from the second minute on (minutes 8-10 against 2-4 of
   ten; the last against the second when there are three or fewer). A minute's p99 is that of
   its intervals' histograms added up (exact, HdrHistogram);
3. accounting: is any operation unaccounted for at the end of the run: ``issued != completed +
   timed_out + errors``, or ``sent != issued - timed_out_queued`` (those whose deadline came
   before a connection did were never written)?

A minute is ``(k-1)·length < t <= k·length`` from the run's start, ``length`` = 60 s (less in
tests). Only whole minutes of the load window count; the drain after it belongs to none but is
in the end totals. Counts per minute are differences of the cumulative counters at the minute
ends (``counters.jsonl``), so they add up to the totals at the last minute's end.

Nothing here reads a file, a clock or /proc: the runner (``loadgen.bench.soak``) does, and
hands the samples, the interval histograms (one at a time) and the counter lines in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import new_histogram

__all__ = [
    "COUNTS",
    "Limits",
    "Minute",
    "format_table",
    "per_minute",
    "verdict",
]

#: The counters shown per minute, and the name of their column.
COUNTS: Final = (
    ("ops.issued", "issued"),
    ("ops.sent", "sent"),
    ("ops.completed", "completed"),
    ("ops.timed_out", "timed out"),
    ("ops.errors", "errors"),
)
_REFERENCE: Final = 2  # the minute everything is compared with (1-based)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_rss_growth_mb: float = 10.0  # last minute's RSS over the second minute's
    max_p99_drift: float = 2.0  # last minute's p99 over the second minute's

    def __post_init__(self) -> None:
        if not self.max_p99_drift > 0:
            raise ValueError(f"expected a p99 drift > 0, got {self.max_p99_drift!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Minute:
    """One minute of the soak."""

    index: int  # 1-based
    rss_mb: float | None  # median of the minute's RSS samples (None: no sample)
    rss_max_mb: float | None
    p99_ms: float | None  # p99(complete) of the minute (None: nothing completed)
    counts: Mapping[str, int]  # counter -> change within the minute (``COUNTS``)


def _rss(samples: Iterable[tuple[float, int]], minutes: int, length: float) -> list[list[float]]:
    out: list[list[float]] = [[] for _ in range(minutes)]
    for at, rss in samples:
        index = math.ceil(at / length) - 1
        if 0 <= index < minutes:
            out[index].append(rss / 1e6)
    return out


def _p99(
    intervals: Iterable[tuple[float, HdrHistogram]], minutes: int, length: float
) -> list[float | None]:
    """p99 (ms) per minute from ``(end, histogram)`` in any order; one histogram per minute
    is kept, each interval's is only added."""
    merged = [new_histogram() for _ in range(minutes)]
    for end, histogram in intervals:
        index = math.ceil(round(end / length, 9)) - 1
        if 0 <= index < minutes and histogram.get_total_count():
            merged[index].add(histogram)
    return [
        histogram.get_value_at_percentile(99.0) / 1000 if histogram.get_total_count() else None
        for histogram in merged
    ]


def _counts(
    lines: Iterable[tuple[float, Mapping[str, int]]], minutes: int, length: float
) -> list[dict[str, int]]:
    """Per-minute changes of ``COUNTS`` from cumulative ``(t, counters)`` lines in time order."""
    at_end: list[Mapping[str, int]] = [{} for _ in range(minutes + 1)]
    for at, counters in lines:
        index = math.ceil(round(at / length, 9))
        for later in range(max(index, 0), minutes + 1):  # the last line at or before each end
            at_end[later] = counters
    return [
        {name: int(at_end[k + 1].get(name, 0)) - int(at_end[k].get(name, 0)) for name, _ in COUNTS}
        for k in range(minutes)
    ]


def per_minute(
    *,
    load_seconds: float,
    rss: Iterable[tuple[float, int]],
    intervals: Iterable[tuple[float, HdrHistogram]],
    counters: Iterable[tuple[float, Mapping[str, int]]],
    length: float = 60.0,
) -> list[Minute]:
    """The whole minutes of a load window of ``load_seconds``: ``rss`` is ``(seconds since the
    start, bytes)`` samples, ``intervals`` the complete-latency histograms by interval end,
    ``counters`` the cumulative counters by time."""
    minutes = int(load_seconds // length + 1e-9)
    samples = _rss(rss, minutes, length)
    p99 = _p99(intervals, minutes, length)
    counts = _counts(counters, minutes, length)
    return [
        Minute(
            index=k + 1,
            rss_mb=statistics.median(samples[k]) if samples[k] else None,
            rss_max_mb=max(samples[k]) if samples[k] else None,
            p99_ms=p99[k],
            counts=counts[k],
        )
        for k in range(minutes)
    ]


def verdict(
    minutes: Sequence[Minute], operations: Mapping[str, int], limits: Limits = Limits()
) -> list[str]:
    """Why the soak failed, one line each (empty: it passed)."""
    reasons: list[str] = []
    count = {key: int(operations.get(key, 0)) for key in
             ("issued", "sent", "completed", "timed_out", "errors", "timed_out_queued")}  # fmt: skip
    ended = count["completed"] + count["timed_out"] + count["errors"]
    if count["issued"] != ended:
        reasons.append(
            f"{count['issued'] - ended:+,} operations unaccounted for: issued {count['issued']:,},"
            f" completed + timed out + errors {ended:,}"
        )
    written = count["issued"] - count["timed_out_queued"]
    if count["sent"] != written:
        reasons.append(
            f"{count['sent'] - written:+,} operations sent unaccounted for: sent"
            f" {count['sent']:,}, issued - timed out queued {written:,}"
        )
    if len(minutes) < _REFERENCE:
        reasons.append(f"too short to judge: {len(minutes)} whole minute(s), 2 at least")
        return reasons
    second, last = minutes[_REFERENCE - 1], minutes[-1]
    width = max(1, (len(minutes) - 1) // 3)
    early, late = minutes[_REFERENCE - 1 : _REFERENCE - 1 + width], minutes[-width:]
    if second.rss_mb is None or last.rss_mb is None:
        reasons.append("RSS was not sampled in the second or the last minute")
    elif last.rss_mb - second.rss_mb > limits.max_rss_growth_mb:
        reasons.append(
            f"RSS grew {last.rss_mb - second.rss_mb:.1f} MB from minute {second.index} to minute"
            f" {last.index} ({second.rss_mb:.1f} -> {last.rss_mb:.1f} MB; limit"
            f" {limits.max_rss_growth_mb:g} MB)"
        )
    before, after = _median_p99(early), _median_p99(late)
    if before is None or after is None:
        reasons.append(f"no operation completed in minute(s) {_span(early)} or {_span(late)}")
    elif after > limits.max_p99_drift * before:
        reasons.append(
            f"p99(complete) drifted {after / before:.2f}x from minute(s) {_span(early)} to"
            f" {_span(late)} ({before:.3f} -> {after:.3f} ms, medians; limit"
            f" {limits.max_p99_drift:g}x)"
        )
    return reasons


def _median_p99(minutes: Sequence[Minute]) -> float | None:
    values = [minute.p99_ms for minute in minutes]
    if any(value is None for value in values):
        return None
    return statistics.median(value for value in values if value is not None)


def _span(minutes: Sequence[Minute]) -> str:
    first, last = minutes[0].index, minutes[-1].index
    return str(first) if first == last else f"{first}-{last}"


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(minutes: Sequence[Minute], *, length: float = 60.0) -> str:
    """One line per minute: RSS (median, max), p99(complete) and the counts."""
    unit = "min" if length == 60.0 else f"x{length:g}s"
    head = f"{unit:>5}{'RSS MB':>8}{'max MB':>8}{'p99 ms':>9}" + "".join(
        f"{label:>10}" for _, label in COUNTS
    )
    rows = [
        f"{minute.index:>5}{_cell(minute.rss_mb, 1):>8}{_cell(minute.rss_max_mb, 1):>8}"
        f"{_cell(minute.p99_ms, 2):>9}"
        + "".join(f"{minute.counts.get(name, 0):>10,}" for name, _ in COUNTS)
        for minute in minutes
    ]
    return "\n".join([head, "-" * len(head), *rows])
