"""Live progress of a run: one line per interval that fits the terminal (80 columns and up).

It is an interval sink (called once per interval by ``run_intervals``, or by the sharded run's
own loop with the shards' sums), so it costs nothing between intervals and shows the numbers
that go into ``timeseries.csv``. Each field has a priority: the narrowest terminal gets time,
completions per second, in flight, p99 and the three ways an operation can end badly, each
under its own word (``failed``: a final result other than SUCCESSFUL; ``timed out``; ``errors``:
no answer for another reason); wider ones add the stage, offered and sent rates and the
generator's CPU. ``sent`` is what was written to a connection; operations issued but still
waiting for one (every connection busy) are ``queued``, shown beside in flight whenever there
are any (they are part of it), so a pool that cannot keep up never looks like a sent rate. A devices-only run shows what a fleet does: operations served,
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
ESSENTIAL = 3  # fields of this priority or more important are never dropped for the bar


def fit(fields: list[tuple[int, str]], width: int) -> str:
    """The fields (priority, text), in their order, keeping the most important that fit: the
    first that does not fit ends the line's content (a less important one never takes the
    place of a more important one)."""
    keep = _kept(fields, width)
    out = ""
    for index, (_, text) in enumerate(fields):
        if index in keep:
            out += text if not out or _glued(text) else SEPARATOR + text
    return out


def _kept(fields: list[tuple[int, str]], width: int) -> set[int]:
    keep: set[int] = set()
    used = 0
    for index in sorted(range(len(fields)), key=lambda i: fields[i][0]):
        text = fields[index][1]
        extra = len(text) + (len(SEPARATOR) if keep and not _glued(text) else 0)
        if used + extra > width:
            break
        keep.add(index)
        used += extra
    return keep


def _glued(text: str) -> bool:
    """A field that continues the one before it ("/30.0s" after "12.3s")."""
    return text.startswith("/")


def _count(value: float) -> str:
    """An integer in at most 6 characters: 12345, 123.4k, 12.3M."""
    if value < 100_000:
        return f"{value:.0f}"
    if value < 10_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def _rate(value: float) -> str:
    return f"{_count(value)}/s" if value >= 10 or value == 0 else f"{value:.1f}/s"


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
        out: list[tuple[int, str]] = [
            (0, elapsed),
            (5, timing.removeprefix(elapsed)),  # "/30.0s", glued to the elapsed time below
            (6, str(gauges.get("stage") or "")),
        ]
        flying = gauges.get("in_flight", 0)
        in_flight = f"in flight {_count(flying) if isinstance(flying, int | float) else 0}"
        if self.sides == "devices":
            served = changed.get("device.ops.received", 0) / length
            refused = sum(v for k, v in totals.items() if k.startswith("device.http."))
            undelivered = sum(v for k, v in totals.items() if k.endswith(".undelivered"))
            out += [
                (1, f"served {_rate(served)}"),
                (4, in_flight),
                (2, f"callback p99 {_ms(self._so_far)}"),
                (3, f"refused {_count(refused)}"),
                (3, f"undelivered {_count(undelivered)}"),
            ]
        else:
            offered = gauges.get("offered_rate")
            if isinstance(offered, int | float):
                out.append((7, f"offered {_rate(float(offered))}"))
            out += [
                (8, f"sent {_rate(changed.get('ops.sent', 0) / length)}"),
                (1, f"done {_rate(changed.get('ops.completed', 0) / length)}"),
                (4, in_flight),
            ]
            queued = gauges.get("queued")
            if isinstance(queued, int | float) and queued > 0:
                out.append((4, f"queued {_count(queued)}"))
            out += [
                (2, f"p99 {_ms(self._so_far)}"),
                (3, f"failed {_count(totals.get('ops.failed', 0))}"),
                (3, f"timed out {_count(totals.get('ops.timed_out', 0))}"),
                (3, f"errors {_count(totals.get('ops.errors', 0))}"),
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
        fields = self.fields(interval)
        if self.mode == "lines":
            print(fit(fields, columns - 1), file=self.stream, flush=True)
            return
        text = fit(fields, columns - 1)
        if self.total > 0 and not math.isinf(self.total):
            narrower = columns - 1 - BAR_WIDTH - 3
            essential = {i for i, (priority, _) in enumerate(fields) if priority <= ESSENTIAL}
            if essential <= _kept(fields, narrower):
                # the bar only where it leaves every essential field on the line
                filled = int(min(1.0, interval.end / self.total) * BAR_WIDTH)
                text = f"[{'█' * filled}{'░' * (BAR_WIDTH - filled)}] {fit(fields, narrower)}"
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
