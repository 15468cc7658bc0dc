"""A run's folder survives a kill: ``rebuild`` turns whatever reached the disk into a report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from hdrh.log import HistogramLogReader
from report_fixtures import THRESHOLDS, Recorded
from trio.testing import MockClock

from loadgen.metrics.hdr import new_histogram
from loadgen.report.rebuild import rebuild
from loadgen.report.results import load_run

MakeRun = Callable[..., Awaitable[Recorded]]


def hlog_count(path: Path) -> int:
    """Values in an .hlog, decoded by HdrHistogram_py's reader alone (not by load_run)."""
    reader = HistogramLogReader(str(path), new_histogram())
    total = 0
    try:
        while (histogram := reader.get_next_interval_histogram()) is not None:
            total += histogram.get_total_count()
    finally:
        reader.close()
    return total


def counters_lines(directory: Path) -> list[bytes]:
    return (directory / "counters.jsonl").read_bytes().splitlines(keepends=True)


async def test_rebuild_after_a_kill_cut_the_counters_line(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(finish=False)
    directory = recorded.directory
    rebuild(directory)
    (directory / "summary.json").unlink()  # a SIGKILL leaves no summary
    lines = counters_lines(directory)
    (directory / "counters.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    standing = orjson.loads(lines[-2])["counters"]  # the last complete line

    summary, report = rebuild(directory)

    assert summary["latency_ms"]["complete"]["count"] == recorded.complete
    assert summary["latency_ms"]["complete"]["count"] == hlog_count(directory / "complete.hlog")
    assert summary["service_ms"]["complete"]["count"] == recorded.complete
    assert summary["latency_ms"]["first_response"]["count"] == recorded.first_response
    assert summary["operations"]["sent"] == standing["ops.sent"] < recorded.sent
    assert summary["interrupted"] is True
    assert summary["duration_s"] == 20.0
    assert [t["expression"] for t in summary["thresholds"]] == THRESHOLDS
    assert orjson.loads((directory / "summary.json").read_bytes()) == summary
    page = report.read_text(encoding="utf-8")
    assert "NOT FINISHED" in page
    assert page.count("data:image/png;base64,") == 8


async def test_rebuild_of_a_finished_run_keeps_its_verdicts(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(seconds=3)
    first, _ = rebuild(recorded.directory)
    # what the runner knew at the end and the folder cannot say again
    first["generator"].update(saturated=True, reasons=["CPU 99% of a core > 95%"])
    first["interrupted"] = True
    (recorded.directory / "summary.json").write_bytes(orjson.dumps(first))

    again, _ = rebuild(recorded.directory)

    assert again["generator"]["saturated"] is True
    assert again["generator"]["reasons"] == ["CPU 99% of a core > 95%"]
    assert again["interrupted"] is True
    assert again["latency_ms"] == first["latency_ms"]
    assert again["operations"]["sent"] == recorded.sent


async def test_rebuild_recomputes_the_generator_verdict_without_a_summary(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(run_extra={"health_limits": {"lateness_p99_ms": 10.0}})

    summary, _ = rebuild(recorded.directory)

    # the synthetic load stalls 40 ms at second 12: more than 1 % of its sends
    assert summary["generator"]["saturated"] is True
    assert summary["generator"]["reasons"] == ["send lateness p99 40.0 ms > 10 ms"]
    assert summary["interrupted"] is False


KILLED_WRITER = textwrap.dedent(
    """
    import sys, random
    from pathlib import Path
    import trio
    from loadgen.metrics.intervals import run_intervals
    from loadgen.metrics.registry import Metrics
    from loadgen.report.results import RunWriter

    async def main(directory):
        metrics = Metrics(["ack", "complete"])
        writer = RunWriter(directory, 1_700_000_000.0, {"campaign": "killed"})
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_intervals(metrics, [writer], t0=t0, period=0.1))
            rng = random.Random(5)
            while True:  # until SIGKILL
                await trio.sleep(0.001)
                latency = rng.uniform(0.001, 0.2)
                metrics.phase("ack").record(latency / 3, latency / 4)
                metrics.phase("complete").record(latency, latency / 2)
                metrics.count("ops.sent")
                metrics.count("ops.completed")

    trio.run(main, Path(sys.argv[1]))
    """
)


@pytest.mark.slow
def test_rebuild_after_sigkill(tmp_path: Path) -> None:
    """A real SIGKILL of a real process: real time, since the kill lands wherever the OS says.

    The writer records about 1,000 values a second into 0.1 s intervals; it is killed once a few
    intervals are on disk, with no chance to close a file or write a summary.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20.0
        while not (tmp_path / "counters.jsonl").exists() or len(counters_lines(tmp_path)) < 5:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the writer wrote no intervals"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if process.stderr:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "summary.json").exists()

    summary, report = rebuild(tmp_path)

    written = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert written == summary
    complete = hlog_count(tmp_path / "complete.hlog")
    assert complete > 0
    assert written["latency_ms"]["complete"]["count"] == complete
    assert written["service_ms"]["complete"]["count"] == hlog_count(
        tmp_path / "complete.service.hlog"
    )
    assert written["latency_ms"]["ack"]["count"] == hlog_count(tmp_path / "ack.hlog")
    assert written["interrupted"] is True
    assert "NOT FINISHED" in report.read_text(encoding="utf-8")


async def test_a_cut_hlog_line_and_csv_row_are_skipped(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(seconds=4, finish=False)
    directory = recorded.directory
    before = load_run(directory)
    per_interval = [h.get_total_count() for _, _, h in before.series["complete"]]
    rows = before.timeseries  # read from the file: before the cut
    for name in ("complete.hlog", "timeseries.csv"):  # a kill in the middle of a write
        text = (directory / name).read_bytes()
        last = text.rstrip(b"\n").rfind(b"\n") + 1
        (directory / name).write_bytes(text[: last + (len(text) - last) // 2])

    after = load_run(directory)
    summary, _ = rebuild(directory)

    assert summary["latency_ms"]["complete"]["count"] == sum(per_interval[:-1])
    assert len(after.timeseries) == len(rows) - 1
    assert after.timeseries[-1] == rows[-2]
    assert len(after.columns) == len(before.columns) - 1  # what the report draws
    assert list(after.latency["complete"].ends) == list(before.latency["complete"].ends)[:-1]
