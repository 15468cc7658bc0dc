"""Counts mean what they say (issue 15, item 6): ``sent`` counts operations written to a
connection; those issued but still waiting for one are ``queued``.

The device holds every connection it is given (it never answers, and nothing closes the
exchange), and the pool has 2 connections: of 10 operations intended at 0.0, 0.1, ..., 0.9 s,
two are written and eight wait in the sender's lane until their deadline (2 s after their
intended time). Everything runs under ``autojump_clock``, so the times are exact; a second test
stalls the whole loop (the clock jumps while no task runs) so that deadlines pass while the
operations wait, where a count taken from "now" would differ from one taken at the deadline.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import trio
import trio.testing
from hdrh.histogram import HdrHistogram
from platform_fakes import SilentDevice, StallingDevice, run_held

from loadgen.campaign.progress import Progress
from loadgen.campaign.runner import _Run
from loadgen.campaign.scenario import load_scenario
from loadgen.metrics.intervals import run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.platform import (
    Arrival,
    PlatformConfig,
    SouthAPI,
    Stage,
    Timeouts,
    run_platform,
)
from loadgen.platform.inflight import Operation
from loadgen.report.console import format_summary
from loadgen.report.results import RunWriter, load_run
from loadgen.report.summary import build_summary, histograms_of

REPO = Path(__file__).resolve().parents[2]
N = 10  # operations at 0.0, 0.1, ..., 0.9 s
TIMEOUT = 2.0


def config(max_connections: int) -> PlatformConfig:
    return PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1.0, rate=float(N)),)),
        timeouts=Timeouts(ack_timeout=10.0, timeout=TIMEOUT),
        max_connections=max_connections,
        south=SouthAPI(linger=0.0),
    )


def only(histogram: HdrHistogram, seconds: float, count: int) -> None:
    us = round(seconds * 1e6)
    assert histogram.get_total_count() == count
    assert histogram.get_count_at_value(us) == count


async def test_operations_waiting_for_a_busy_pool_are_queued_not_sent(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    metrics = Metrics()
    scenario = load_scenario(
        REPO / "scenarios" / "smoke.toml",
        ['platform.arrival.stages=[{duration="1s", rate=10}]'],
    ).scenario
    run = _Run(scenario, metrics)  # the campaign's gauges, read from the platform below
    progress_text = io.StringIO()
    progress = Progress(1.0, mode="lines", stream=progress_text, width=200)
    writer = RunWriter(tmp_path, 1.7e9, {"campaign": "queued", "interval": 1.0})
    ended: list[Operation] = []
    samples: dict[float, tuple[int, int]] = {}
    async with run_held(config(max_connections=2), metrics, SilentDevice()) as held:
        info = held.info
        run.platform = info
        info.table.on_end = ended.append
        t0 = trio.current_time()

        async def roll() -> None:  # cancelled once the run has returned
            await run_intervals(metrics, [progress, writer], t0=t0, period=1.0, gauges=run.gauges)

        held.nursery.start_soon(roll)
        info.begin_load()
        for at in (0.95, 2.05, 2.45):
            await trio.sleep_until(t0 + at)
            stats = info.statistics()
            samples[at] = (stats.in_flight, stats.queued)
    writer.close()
    assert info.t0 == t0
    result = held.result
    c = result.counters

    # 0.95 s: all 10 issued, 2 written (one per connection), 8 waiting in the lane.
    # 2.05 s: operation 0 timed out at 2.0; operations 2..9 still wait (2 is due at 2.2).
    # 2.45 s: 0..4 have ended; 5..9 are live, all still queued.
    assert samples == {0.95: (10, 8), 2.05: (9, 8), 2.45: (5, 5)}
    assert c["ops.issued"] == N
    assert c["ops.sent"] == 2  # written to the wire; not the 10 issued
    assert c["ops.timed_out"] == c["result.ERROR_TIMEOUT"] == N
    assert c["ops.timed_out_queued"] == N - 2
    assert c.get("ops.completed", 0) == c.get("ops.errors", 0) == 0
    # The identities after the drain: every issued operation ended once; sent = issued less
    # those that timed out unsent.
    assert c["ops.issued"] == c.get("ops.completed", 0) + c["ops.timed_out"] + c.get(
        "ops.errors", 0
    )
    assert c["ops.sent"] == c["ops.issued"] - c["ops.timed_out_queued"]
    assert info.table.queued == 0
    assert result.sent_rate == 2.0  # per second of the 1 s load window
    # Every one recorded at its deadline, sent or not: intended + 2 s.
    only(metrics.phase("complete").intended.merged(), TIMEOUT, N)
    ops = sorted(ended, key=lambda op: op.t_intended)
    assert [op.t_sent is not None for op in ops] == [True, True] + [False] * (N - 2)
    assert [op.t_sent for op in ops[:2]] == [t0, t0 + 0.1]

    # The progress line: 2 sent per second (not 10), and the 8 waiting beside in flight.
    lines = progress_text.getvalue().splitlines()
    assert "sent 2.0/s" in lines[0]
    assert "in flight 10  queued 8" in lines[0]
    assert "sent 0/s" in lines[1]
    assert "queued 8" in lines[1]
    assert "queued" not in lines[-1]  # none left at the end
    # The time series: the same gauge per interval.
    rows = load_run(tmp_path).timeseries
    assert [row["queued"] for row in rows] == ["8", "8", "0"]
    assert [row["sent_per_s"] for row in rows[:2]] == ["2.000", "0.000"]

    # The summary and the console say the same.
    summary = build_summary(histograms_of(metrics), c, result.run_info())
    operations = summary["operations"]
    assert (operations["issued"], operations["sent"], operations["timed_out"]) == (10, 2, 10)
    assert operations["timed_out_queued"] == 8
    assert summary["sent_rate"] == 2.0
    assert summary["error_rate"] == 1.0  # over everything issued
    text = format_summary(summary)
    assert "operations  issued 10  sent 2  completed 0" in text
    assert "of the timed out, 8 were never sent: queued behind a busy pool" in text
    assert all(len(line) <= 80 for line in text.splitlines())


async def test_deadlines_that_pass_in_a_stall_time_out_unsent_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two connections; taking operation 0 (at 0.0 s) blocks the whole loop for 3 s, so the
    sender wakes at 3.0 s and issues operations 1..9 (intended 0.1..0.9 s) with their deadlines
    (2.1..2.9 s) already past. None of them may be written, though the second connection is
    free: each times out unsent, recorded at its deadline (exactly 2 s), not at 3 s. Operation 0
    was sent and timed out too: its deadline (2.0 s) passed in the stall.

    Whether the timer task or the free worker runs first after the stall is up to trio's
    scheduler (it reverses a batch at random), so the run is repeated: a worker that wrote a
    dead operation shows in about a third of them (all 20 pass by chance 1 time in 1,000)."""
    for _ in range(20):
        device = StallingDevice(clock=autojump_clock, stall_at=0, stall=3.0, service=0.001)
        metrics = Metrics()
        result = await run_platform(config(max_connections=2), metrics, transport=device)
        c = result.counters
        assert device.seen == 1  # only operation 0 reached the device
        assert c["ops.issued"] == N
        assert c["ops.sent"] == 1
        assert c.get("ops.completed", 0) == 0
        assert c["ops.timed_out"] == N
        assert c["ops.timed_out_queued"] == N - 1
        assert c["ops.sent"] == c["ops.issued"] - c["ops.timed_out_queued"]
        assert c["ops.late_sends"] == N - 1  # issued at 3.0 s, with their intended times
        only(metrics.phase("complete").intended.merged(), TIMEOUT, N)


@pytest.mark.parametrize("bound", [None, 5_000], ids=["default", "max_queued"])
async def test_the_generators_queue_is_bounded_and_refusals_flag_saturation(
    autojump_clock: trio.testing.MockClock, bound: int | None
) -> None:
    """A device that never answers, one connection, 12,000 operations offered in 1 s with a
    60 s timeout: the lane holds at most ``max_queued`` waiting (``MAX_QUEUED`` by default);
    the rest are refused at issue (counted, never opened), and the run says it is saturated
    because of them. Without the bound the queue (and the heap) grow with the offered load
    until the deadlines fire."""
    from loadgen.platform.sender import MAX_QUEUED

    config = PlatformConfig(
        arrival=Arrival(stages=(Stage(duration=1.0, rate=12_000.0),)),
        max_connections=1,
        timeouts=Timeouts(ack_timeout=60.0, timeout=60.0),
        drain_grace=0.0,
        **({} if bound is None else {"max_queued": bound}),
    )
    limit = MAX_QUEUED if bound is None else bound
    metrics = Metrics()
    result = await run_platform(config, metrics, transport=SilentDevice())
    counters = result.counters
    written = 1  # the one connection's exchange
    assert counters["ops.issued"] == limit + written
    assert counters["ops.rejected"] == counters["ops.rejected.queue_full"] == 12_000 - limit - 1
    assert counters["ops.sent"] == written
    assert result.peak_in_flight == limit + written
    assert result.saturated
    assert f"{12_000 - limit - 1} operations refused: the generator's queue was full" in (
        result.reasons
    )
    # every operation issued is still accounted once
    assert counters["ops.issued"] == (
        counters.get("ops.completed", 0) + counters["ops.timed_out"] + counters.get("ops.errors", 0)
    )
