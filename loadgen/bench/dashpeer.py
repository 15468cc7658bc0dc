"""The sender of the dashboard-cost benchmark, run as its own process pinned to its own core.

    python -m loadgen.bench.dashpeer --port P [--dashboard] [--duration S] [--warmup S]
        [--concurrency C] [--cpu N]

The virtual platform (``run_platform``, closed model) against the peer server, with the
interval roll-over running as in a campaign; with ``--dashboard`` the live dashboard's board is
one more interval sink, its server runs in the process and one client (a separate process, so
its CPU is not the sender's) follows the server-sent events for the whole window. Prints "WARM"
after the warm-up, then one JSON line: operations completed, errors, CPU and wall seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from contextlib import AsyncExitStack
from functools import partial

import trio

from loadgen.bench.procs import pin
from loadgen.bench.senderpeer import _report, _window, bench_config
from loadgen.dashboard.board import Board
from loadgen.dashboard.server import open_dashboard
from loadgen.metrics.hdr import prepare
from loadgen.metrics.intervals import IntervalSink, run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.platform.runner import run_platform

#: The client: follows the event stream until it is killed (stdlib only, its own process).
FOLLOWER = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "events") as stream:
    while stream.read(4096):
        pass
"""


def _follow(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def dashboard_client(
    port: int, duration: float, warmup: float, concurrency: int, dashboard: bool
) -> None:
    prepare()
    total = warmup + duration + 1.0
    config = bench_config(port, concurrency, total)
    metrics = Metrics()
    counters = metrics.counters
    sinks: list[IntervalSink] = []
    follower: subprocess.Popen[bytes] | None = None
    async with AsyncExitStack() as stack:
        if dashboard:
            board = Board(title="bench", sides="platform", total_seconds=total)
            server = await stack.enter_async_context(
                open_dashboard(board, "127.0.0.1:0", notice=lambda text: None)
            )
            sinks.append(board)
            follower = _follow(server.url.split("?")[0])
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_intervals, metrics, sinks, t0=trio.current_time()))
                nursery.start_soon(run_platform, config, metrics)
                count, errors, cpu, wall = await _window(
                    lambda: counters["ops.completed"],
                    lambda: counters["ops.errors"] + counters["ops.timed_out"],
                    warmup,
                    duration,
                )
                nursery.cancel_scope.cancel()
        finally:
            if follower is not None:
                follower.kill()
                follower.wait()
    _report(count, errors, cpu, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.dashpeer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dashboard", action="store_true")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)
    trio.run(
        dashboard_client, args.port, args.duration, args.warmup, args.concurrency, args.dashboard
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
