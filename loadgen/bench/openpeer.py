"""The sender at a given load, second by second, for the open-model figures of ``make bench``.

    python -m loadgen.bench.openpeer --port P [--model open|closed] [--rate R]
        [--concurrency C] [--warmup S] [--duration S] [--cpu N] [--profile FILE]

Runs the whole virtual platform (``run_platform``, the sender benchmarks' config) against the
peer server for ``warmup + duration`` seconds and one more (the window must not take in the
load's end), and prints one JSON line about the measured window (the ``duration`` after the
warm-up): operations sent and completed, refusals, process CPU (per operation and in percent of
a core), the send lateness percentiles of the window alone, and one
row per second (operations completed, CPU percent, resident memory), so that a collapse under
overload shows as falling seconds rather than as a mean. ``saturated`` is the run's own verdict.
``--profile`` writes a cProfile of the window alone to FILE (the warm-up and the drain excluded).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import time
from typing import Any

import numpy as np
import orjson
import trio

from loadgen.bench.procs import pin
from loadgen.bench.senderpeer import StepCounter, bench_config
from loadgen.metrics.hdr import histogram_from_counts, percentiles_ms
from loadgen.metrics.registry import Metrics
from loadgen.platform.runner import PlatformInfo, run_platform

__all__ = ["main"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return round(int(statm.read().split()[1]) * _PAGE / 1e6, 1)
    except OSError:
        return None


def _counts(metrics: Metrics, name: str) -> Any:
    """What ``name`` has recorded so far, as bucket counts: a copy of the open interval's list
    (nothing rolls intervals over in this process), cheap enough not to stall the loop at the
    window's edges (``merged()`` builds histograms: tens of milliseconds)."""
    recorder = metrics.single(name)
    assert not recorder.total.get_total_count(), "an interval was rolled over"
    return np.array(recorder._counts, dtype=np.int64)


async def measure(
    port: int,
    model: str,
    rate: float,
    concurrency: int,
    warmup: float,
    duration: float,
    profile: str | None,
) -> dict[str, Any]:
    # The load outlasts the window by a second: the window's last second must not take in the
    # load's end and the drain's start (it read ~10 % low offered twice the ceiling).
    config = bench_config(port, concurrency, warmup + duration + 1.0, model=model, rate=rate)
    metrics = Metrics()
    counters = metrics.counters
    window: dict[str, Any] = {}

    async def sample() -> None:
        await trio.sleep(warmup)
        profiler = cProfile.Profile() if profile else None
        lateness0 = _counts(metrics, "lateness")
        done0, sent0, refused0 = (
            counters["ops.completed"], counters["ops.sent"], counters["ops.rejected"]
        )  # fmt: skip
        cpu0, wall0 = time.process_time(), time.perf_counter()
        seconds = []
        done, cpu, wall = done0, cpu0, wall0
        steps = StepCounter()
        trio.lowlevel.add_instrument(steps)
        if profiler is not None:
            profiler.enable()
        for second in range(1, int(duration) + 1):
            await trio.sleep_until(trio.current_time() - (time.perf_counter() - wall0) + second)
            now_done, now_cpu, now_wall = counters["ops.completed"], time.process_time(), time.perf_counter()  # fmt: skip
            seconds.append(
                {
                    "completed": now_done - done,
                    "cpu_percent": round(100 * (now_cpu - cpu) / (now_wall - wall), 1),
                    "rss_mb": _rss_mb(),
                    "queued": info.table.queued,
                }
            )
            done, cpu, wall = now_done, now_cpu, now_wall
        trio.lowlevel.remove_instrument(steps)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)  # type: ignore[arg-type]
        used = cpu - cpu0
        completed = done - done0
        late = histogram_from_counts((_counts(metrics, "lateness") - lateness0).tolist())
        window.update(
            completed=completed,
            sent=counters["ops.sent"] - sent0,
            rejected=counters["ops.rejected"] - refused0,
            cpu_s=round(used, 3),
            wall_s=round(wall - wall0, 3),
            cpu_percent=round(100 * used / (wall - wall0), 1),
            cpu_us_per_op=round(used / completed * 1e6, 2) if completed else None,
            ops_per_cpu_s=round(completed / used, 1) if used else None,
            ops_per_s=round(completed / (wall - wall0), 1),
            lateness_ms=percentiles_ms(late) if model == "open" else None,
            steps_per_op=round(steps.steps / completed, 3) if completed else None,
            io_waits_per_op=round(steps.io_waits / completed, 3) if completed else None,
            seconds=seconds,
        )

    async def platform(task_status: trio.TaskStatus[PlatformInfo]) -> None:
        result = await run_platform(config, metrics, task_status=task_status)
        # the run's own verdict, over its whole load window (the warm-up included)
        window.update(saturated=result.saturated, reasons=list(result.reasons))

    async with trio.open_nursery() as nursery:
        info = await nursery.start(platform)
        nursery.start_soon(sample)
    return window


async def _run(args: argparse.Namespace) -> None:
    window = await measure(
        args.port, args.model, args.rate, args.concurrency, args.warmup, args.duration,
        args.profile,
    )  # fmt: skip
    print(orjson.dumps({"model": args.model, "rate": args.rate, **window}).decode(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.openpeer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", choices=["open", "closed"], default="open")
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--profile", default=None, help="cProfile of the measured window")
    args = parser.parse_args(argv)
    pin(args.cpu)
    trio.run(_run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
