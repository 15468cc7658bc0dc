"""The live line: what an 80-column terminal keeps, what a wider one adds, one word per meaning."""

from __future__ import annotations

import io

import pytest

from loadgen.campaign.progress import Progress, fit
from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval


def _interval(end: float, **counters: int) -> Interval:
    complete = new_histogram()
    complete.record_value(12_345)
    totals = {f"ops.{k}": v for k, v in counters.items()}
    gauges: dict[str, object] = {
        "in_flight": 123456, "offered_rate": 20000.0, "stage": "2:hold", "cpu_percent": 87.0,
    }  # fmt: skip
    return Interval(0, end - 1, end, {"complete": complete}, totals, totals, gauges)


def test_fit_keeps_the_most_important_fields_in_their_order() -> None:
    fields = [(0, "a" * 10), (5, "b" * 10), (1, "c" * 10), (9, "d" * 10)]
    assert fit(fields, 34) == "a" * 10 + "  " + "b" * 10 + "  " + "c" * 10
    assert fit(fields, 22) == "a" * 10 + "  " + "c" * 10
    assert fit([(0, "x"), (2, "y" * 30), (3, "z")], 10) == "x"  # "z" never jumps the queue
    assert fit([(0, "12.3s"), (5, "/30.0s"), (1, "done")], 80) == "12.3s/30.0s  done"
    assert fit(fields, 5) == ""


@pytest.mark.parametrize("width", [80, 100, 160])
def test_every_line_fits_and_keeps_the_three_bad_ends(width: int) -> None:
    stream = io.StringIO()
    progress = Progress(600.0, mode="lines", stream=stream, width=width)
    progress(_interval(123.0, sent=12_345_678, completed=12_345_000, failed=12_345,
                       timed_out=2_345, errors=345))  # fmt: skip
    [line] = stream.getvalue().splitlines()
    assert len(line) < width
    assert line.startswith("123.0s")
    assert "done 12.3M/s" in line
    assert ("in flight 123.5k" in line) == (width >= 100)
    assert "failed 12345" in line
    assert "timed out 2345" in line
    assert "errors 345" in line
    assert "p99 12.3ms" in line or "p99 12.4ms" in line  # HDR: 3 significant digits
    assert ("cpu 87%" in line) == (width >= 160)
    assert ("offered 20000/s" in line) == (width >= 160)


def test_the_bar_gives_way_to_the_essential_fields() -> None:
    stream = io.StringIO()
    progress = Progress(600.0, mode="bar", stream=stream, width=80)
    progress(_interval(60.0, completed=10, failed=12_345, timed_out=2_345, errors=345))
    text = stream.getvalue()
    assert "█" not in text  # no room for both
    assert "errors 345" in text
    wide = io.StringIO()
    Progress(600.0, mode="bar", stream=wide, width=160)(_interval(60.0, completed=10))
    assert "[██░░" in wide.getvalue()
    assert "errors 0" in wide.getvalue()


def test_a_fleet_shows_what_a_fleet_does() -> None:
    stream = io.StringIO()
    progress = Progress(float("inf"), mode="lines", stream=stream, sides="devices", width=80)
    interval = Interval(
        0, 1.0, 2.0, {}, {"device.ops.received": 40},
        {"device.ops.received": 80, "device.http.400": 2, "device.responder.undelivered": 1},
        {"in_flight": 3},
    )  # fmt: skip
    progress(interval)
    line = stream.getvalue().strip()
    assert line.startswith("2.0s  ")  # no time left: it serves until stopped
    assert "served 40/s" in line
    assert "refused 2" in line
    assert "undelivered 1" in line
    assert "failed" not in line


@pytest.mark.parametrize("width", [100, 160])
def test_operations_waiting_for_a_connection_show_as_queued_not_sent(width: int) -> None:
    """Issue 15, item 6: ``sent`` is what was written (``ops.sent``); the generator's own queue
    (the ``queued`` gauge) shows beside in flight, which it is part of, whenever it is not
    empty."""
    stream = io.StringIO()
    progress = Progress(600.0, mode="lines", stream=stream, width=width)
    busy = _interval(10.0, sent=2_000, completed=1_900)
    busy.gauges["queued"] = 100_000
    progress(busy)
    idle = _interval(11.0, sent=20_000, completed=20_000)
    idle.gauges["queued"] = 0
    progress(idle)
    first, second = stream.getvalue().splitlines()
    assert "in flight 123.5k  queued 100.0k" in first
    assert ("sent 2000/s" in first) == (width >= 160)
    assert "queued" not in second
    assert all(len(line) < width for line in (first, second))
