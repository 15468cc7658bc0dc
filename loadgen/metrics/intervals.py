"""Interval roll-over: every period, close all recorders and hand the interval to the sinks.

The interval task sleeps until ``t0 + k * period`` (anchored, never accumulating drift), rolls
every recorder of the run's ``Metrics`` over, diffs the counters, reads the gauges, and passes
one ``Interval`` to each sink: the HdrHistogram log writer (flushes at once, so a killed run
leaves usable logs), the time-series writer and the live progress line.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import datetime as dt
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import trio
from hdrh.codec import encode as varint_encode  # pyhdrh's C varint encoder
from hdrh.codec import ext_header_size as EXTERNAL_HEADER_SIZE
from hdrh.codec import payload_header_size as PAYLOAD_HEADER_SIZE
from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import COUNTS_LEN, LatencyRecorder
from loadgen.metrics.registry import Metrics

__all__ = ["HlogWriter", "Interval", "IntervalSink", "encode", "hlog_name", "run_intervals"]

HLOG_VERSION: Final = "1.3"
MAX_VALUE_UNIT_RATIO: Final = 1000.0  # values are µs; the interval max column is in ms


@dataclass(frozen=True, slots=True)
class Interval:
    index: int
    start: float  # seconds since the run's t0
    end: float
    histograms: dict[str, HdrHistogram]  # recorder name -> the interval's histogram
    counters: dict[str, int]  # change within the interval
    totals: dict[str, int]  # cumulative at the end of the interval
    gauges: dict[str, object]
    final: bool = False  # the last, possibly partial, interval of the run
    notes: dict[str, str] = field(default_factory=dict)  # first message of failure counters
    # recorder name -> everything it recorded so far, this interval included: the recorder's
    # own ``total`` (not a copy: read it while the interval is handed out, never change it)
    cumulative: dict[str, HdrHistogram] = field(default_factory=dict)

    @property
    def length(self) -> float:
        return self.end - self.start


#: Told of every interval. A sink with much to do returns an iterator and does its work in
#: pieces as it is advanced: the interval task yields to the event loop between two pieces.
IntervalSink = Callable[[Interval], Iterator[None] | None]


def hlog_name(recorder: str) -> str:
    return f"{recorder}.hlog"


#: The varint buffer of ``encode``, made once: HdrHistogram_py makes a ctypes array *type* of the
#: exact size at each encode, and ctypes caches those types only weakly, so each encode left a
#: type (a reference cycle) for the cycle collector, a dozen an interval.
_VARINT: Final = (ctypes.c_byte * (PAYLOAD_HEADER_SIZE + COUNTS_LEN * 9))()


def encode(histogram: HdrHistogram) -> bytes:
    """``histogram.encode()``, byte for byte (the same C varint encoder, zlib and base64 steps
    as HdrHistogram_py's ``HdrPayload.compress`` and ``HdrHistogramEncoder.encode``), into one
    buffer made once instead of a new ctypes type per call (see ``_VARINT``)."""
    coder = histogram.encoder
    payload = coder.payload
    if histogram.counts_len != COUNTS_LEN or payload.word_size != 8 or not coder.b64_wrap:
        return bytes(histogram.encode())
    limit = (
        histogram.get_counts_array_index(histogram.max_value) + 1 if histogram.total_count else 0
    )
    start = ctypes.addressof(_VARINT)
    length = varint_encode(
        ctypes.addressof(payload.counts), limit, 8, start + PAYLOAD_HEADER_SIZE, limit * 9
    )
    payload.payload.payload_len = length
    ctypes.memmove(start, ctypes.addressof(payload.payload), PAYLOAD_HEADER_SIZE)
    compressed = zlib.compress(ctypes.string_at(start, PAYLOAD_HEADER_SIZE + length))
    coder.header.length = len(compressed)
    header = ctypes.string_at(ctypes.addressof(coder.header), EXTERNAL_HEADER_SIZE)
    return base64.b64encode(header + compressed)


class HlogWriter:
    """One standard HdrHistogram interval log per recorder, flushed after every interval.

    Format (HdrHistogram "Histogram log format" 1.3, as written by the Java and Python
    implementations): a version comment, ``#[StartTime: <epoch s> ...]``, a legend line, then one
    ``start,length,max,payload`` line per interval, with times in seconds since StartTime, max in
    milliseconds and the payload the base64 compressed histogram.
    """

    def __init__(self, directory: Path, start_epoch: float) -> None:
        self.directory = directory
        self.start_epoch = start_epoch
        self._files: dict[str, IO[str]] = {}

    def __repr__(self) -> str:
        return f"<HlogWriter {self.directory} files={len(self._files)}>"

    def _file(self, name: str) -> IO[str]:
        handle = self._files.get(name)
        if handle is None:
            handle = (self.directory / hlog_name(name)).open("w", encoding="ascii")
            stamp = dt.datetime.fromtimestamp(self.start_epoch, dt.UTC).isoformat()
            handle.write(f"#[Histogram log format version {HLOG_VERSION}]\n")
            handle.write(f"#[StartTime: {self.start_epoch:.3f} (seconds since epoch), {stamp}]\n")
            handle.write(
                '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n'
            )
            self._files[name] = handle
        return handle

    def __call__(self, interval: Interval) -> None:
        for _ in self.pieces(interval):
            pass

    def pieces(self, interval: Interval) -> Iterator[None]:
        """Write the interval one recorder at a time, yielding after each (``IntervalSink``).

        Encoding one histogram (varint, zlib, base64) takes 0.05-0.2 ms, a dozen of them and
        their writes 1-2 ms, so the interval task lets the sends due meanwhile go between them.
        Not in a worker thread: the encoding is mostly Python holding the GIL, the zlib input is
        a few kB, and each write is one small flushed ``write`` to the page cache."""
        for name, histogram in interval.histograms.items():
            handle = self._file(name)
            if not histogram.get_total_count():
                continue
            payload = encode(histogram).decode("ascii")
            max_ms = histogram.get_max_value() / MAX_VALUE_UNIT_RATIO
            handle.write(f"{interval.start:.3f},{interval.length:.3f},{max_ms:.3f},{payload}\n")
            handle.flush()
            yield

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


async def run_intervals(
    metrics: Metrics,
    sinks: Iterable[IntervalSink],
    *,
    t0: float,
    period: float = 1.0,
    gauges: Callable[[], dict[str, object]] = dict,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Roll intervals until cancelled; on cancellation, emit the last partial interval.

    ``t0`` is the run's start on the trio clock; intervals end at ``t0 + k * period``.
    """
    sinks = list(sinks)
    previous = dict(metrics.counters)
    index = 0
    start = 0.0

    def close(end: float) -> tuple[list[tuple[str, LatencyRecorder, list[int]]], Interval]:
        """The interval boundary: counters and every recorder's counts taken at one instant."""
        nonlocal previous, index, start
        totals = dict(metrics.counters)
        changed = {k: v - previous.get(k, 0) for k, v in totals.items() if v != previous.get(k, 0)}
        taken = [(r.name, r, r.close_interval()) for r in metrics.recorders()]
        # the totals gain this interval's counts (``fold``) before any sink is called
        cumulative = {r.name: r.total for _, r, _ in taken}
        interval = Interval(index, start, end, {}, changed, totals, gauges(), False, {}, cumulative)
        previous = totals
        index += 1
        start = end
        return taken, interval

    async def emit(end: float) -> None:
        """Roll one interval over in slices: the histograms are built and the sinks called with
        a checkpoint between each, so the sends due meanwhile are not held up behind the whole
        roll-over (tens of milliseconds with many recorders and sinks)."""
        taken, interval = close(end)
        for name, recorder, counts in taken:
            interval.histograms[name] = recorder.fold(counts)
            await trio.lowlevel.checkpoint()
        interval.notes.update(metrics.notes)
        for sink in sinks:
            for _ in sink(interval) or ():
                await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()

    def emit_final(end: float) -> None:
        taken, interval = close(end)
        interval.histograms.update({name: r.fold(counts) for name, r, counts in taken})
        interval.notes.update(metrics.notes)
        final = dataclasses.replace(interval, final=True)
        for sink in sinks:
            for _ in sink(final) or ():
                pass

    task_status.started()
    try:
        while True:
            await trio.sleep_until(t0 + (index + 1) * period)
            with trio.CancelScope(shield=True):  # once closed, an interval is always delivered
                await emit((index + 1) * period)
    finally:
        end = max(start, trio.current_time() - t0)
        if not math.isclose(end, start) or index == 0:
            emit_final(end)
