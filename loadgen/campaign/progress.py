"""Live progress of a run: one line per interval that fits the terminal (80 columns and up).

It is an interval sink (called once per interval by ``run_intervals``, or by the sharded run's
own loop with the shards' sums), so it costs nothing between intervals and shows the numbers
that go into ``timeseries.csv``. Each field has a priority: the narrowest terminal gets time,
completions per second, in flight, p99 and the three ways an operation can end badly, each
under its own word (``failed``: a final result other than SUCCESSFUL; ``timed out``; ``errors``:
no answer for another reason); wider ones add the stage, offered and sent rates and the
generator's CPU. A devices-only run shows what a fleet does: operations served,
callbacks' p99, POSTs the platform refused or never got.

On a terminal the line is rewritten in place ("bar" mode, with a bar when there is room);
otherwise ("lines") one line per interval. ``notice`` prints a message (Ctrl-C, where live
metrics are served) on a line of its own without breaking the bar.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import TextIO

from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval

__all__ = ["Progress", "fit"]

BAR_WIDTH = 20
SEPARATOR = "  "


def fit(fields: list[tuple[int, str]], width: int) -> str:
    """The fields (priority, text), in their order, keeping the most important that fit."""
    keep: set[int] = set()
    used = 0
    for index in sorted(range(len(fields)), key=lambda i: fields[i][0]):
        extra = len(fields[index][1]) + (len(SEPARATOR) if keep else 0)
        if used + extra > width:
            continue
        keep.add(index)
        used += extra
    return SEPARATOR.join(text for index, (_, text) in enumerate(fields) if index in keep)


def _rate(value: float) -> str:
    return f"{value:.0f}/s" if value >= 10 or value == 0 else f"{value:.1f}/s"


def _ms(histogram: HdrHistogram) -> str:
    if not histogram.get_total_count():
        return "-"
    value = histogram.get_value_at_percentile(99.0) / 1000
    return f"{value:.1f}ms" if value < 1000 else f"{value / 1000:.2f}s"


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 600 else f"{value / 60:.1f}m"


class Progress:
    """Print one status per interval. ``mode``: "auto" (bar on a TTY), "bar", "lines", "quiet"."""

    def __init__(
        self,
        total_seconds: float,
        *,
        mode: str = "auto",
        stream: TextIO | None = None,
        sides: str = "both",
        width: int | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total_seconds
        self.sides = sides
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self.width = width
        self._so_far: HdrHistogram = new_histogram()
        self._dirty = False

    def __repr__(self) -> str:
        return f"<Progress {self.mode} total={self.total}s>"

    def _columns(self) -> int:
        return self.width or shutil.get_terminal_size((80, 20)).columns

    def fields(self, interval: Interval) -> list[tuple[int, str]]:
        """(priority, text) in display order; lower priorities are kept first."""
        phase = "callback" if self.sides == "devices" else "complete"
        histogram = interval.histograms.get(phase)
        if histogram is not None and histogram.get_total_count():
            self._so_far.add(histogram)
        length = interval.length or 1.0
        changed, totals, gauges = interval.counters, interval.totals, interval.gauges
        elapsed = _seconds(interval.end)
        timing = (
            elapsed
            if math.isinf(self.total) or self.total <= 0
            else f"{elapsed}/{_seconds(self.total)}"
        )
        out: list[tuple[int, str]] = [(0, timing), (6, str(gauges.get("stage") or ""))]
        in_flight = f"in flight {gauges.get('in_flight', 0)}"
        if self.sides == "devices":
            served = changed.get("device.ops.received", 0) / length
            refused = sum(v for k, v in totals.items() if k.startswith("device.http."))
            undelivered = sum(v for k, v in totals.items() if k.endswith(".undelivered"))
            out += [
                (1, f"served {_rate(served)}"),
                (2, in_flight),
                (3, f"callback p99 {_ms(self._so_far)}"),
                (4, f"refused {refused}"),
                (4, f"undelivered {undelivered}"),
            ]
        else:
            offered = gauges.get("offered_rate")
            if isinstance(offered, int | float):
                out.append((7, f"offered {_rate(float(offered))}"))
            out += [
                (8, f"sent {_rate(changed.get('ops.sent', 0) / length)}"),
                (1, f"done {_rate(changed.get('ops.completed', 0) / length)}"),
                (2, in_flight),
                (3, f"p99 {_ms(self._so_far)}"),
                (4, f"failed {totals.get('ops.failed', 0)}"),
                (4, f"timed out {totals.get('ops.timed_out', 0)}"),
                (4, f"errors {totals.get('ops.errors', 0)}"),
            ]
        cpu = gauges.get("cpu_percent")
        if isinstance(cpu, int | float):
            out.append((9, f"cpu {cpu:.0f}%"))
        return [(priority, text) for priority, text in out if text]

    def line(self, interval: Interval, width: int = 80) -> str:
        return fit(self.fields(interval), width - 1)

    def __call__(self, interval: Interval) -> None:
        if self.mode == "quiet":
            return
        columns = self._columns()
        if self.mode == "lines":
            print(self.line(interval, columns), file=self.stream, flush=True)
            return
        text = self.line(interval, columns - BAR_WIDTH - 3)
        if self.total > 0 and not math.isinf(self.total):
            done = min(1.0, interval.end / self.total)
            filled = int(done * BAR_WIDTH)
            text = f"[{'█' * filled}{'░' * (BAR_WIDTH - filled)}] {text}"
        self.stream.write("\r\x1b[2K" + text)
        self._dirty = True
        if interval.final:
            self.finish()
        self.stream.flush()

    def notice(self, text: str) -> None:
        """A message on a line of its own (the bar, if any, is redrawn by the next interval)."""
        if self.mode == "quiet":
            return
        if self._dirty:
            self.stream.write("\r\x1b[2K")
            self._dirty = False
        print(text, file=self.stream, flush=True)

    def finish(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False
