"""Live progress of a run: a bar and one updating line on a terminal, plain lines otherwise.

It is an interval sink (called once per interval by ``run_intervals``), so it costs nothing
between intervals and shows exactly the numbers that go into ``timeseries.csv``:
elapsed/remaining, stage, offered and achieved rate, in flight, p99 of ``complete`` so far, errors.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval

__all__ = ["Progress"]

BAR_WIDTH = 24


class Progress:
    """Print one status per interval. ``mode``: "auto" (bar on a TTY), "lines" or "quiet"."""

    def __init__(
        self,
        total_seconds: float,
        *,
        mode: str = "auto",
        stream: TextIO | None = None,
        phase: str = "complete",
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total_seconds
        self.phase = phase
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self._so_far: HdrHistogram = new_histogram()
        self._errors = 0
        self._dirty = False

    def __repr__(self) -> str:
        return f"<Progress {self.mode} total={self.total}s>"

    def line(self, interval: Interval) -> str:
        histogram = interval.histograms.get(self.phase)
        if histogram is not None and histogram.get_total_count():
            self._so_far.add(histogram)
        changed = interval.counters
        self._errors += sum(
            changed.get(name, 0) for name in ("ops.failed", "ops.timed_out", "ops.errors")
        )
        length = interval.length or 1.0
        gauges = interval.gauges
        p99 = (
            f"{self._so_far.get_value_at_percentile(99.0) / 1000:.1f}ms"
            if self._so_far.get_total_count()
            else "-"
        )
        offered = gauges.get("offered_rate")
        offered_text = f"{offered:.0f}/s" if isinstance(offered, int | float) else "-"
        remaining = max(0.0, self.total - interval.end)
        stage = gauges.get("stage") or "-"
        return (
            f"{interval.end:6.1f}s (-{remaining:5.1f}s) {stage:<10} "
            f"offered {offered_text:>8} achieved "
            f"{changed.get('ops.completed', 0) / length:7.0f}/s "
            f"in flight {gauges.get('in_flight', 0):>6} p99 {p99:>9} errors {self._errors}"
        )

    def __call__(self, interval: Interval) -> None:
        if self.mode == "quiet":
            return
        text = self.line(interval)
        if self.mode == "lines":
            print(text, file=self.stream, flush=True)
            return
        done = min(1.0, interval.end / self.total) if self.total > 0 else 1.0
        filled = int(done * BAR_WIDTH)
        bar = "█" * filled + "░" * (BAR_WIDTH - filled)
        width = shutil.get_terminal_size((120, 20)).columns
        status = f"[{bar}] {text}"[: max(20, width - 1)]
        self.stream.write("\r\x1b[2K" + status)
        self._dirty = True
        if interval.final:
            self.finish()
        self.stream.flush()

    def finish(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False
