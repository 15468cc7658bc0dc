"""Open-model pacing at a fixed rate, for the scheduler-lateness figure of ``make bench``.

    python -m loadgen.bench.pacepeer --port P --rate R [--duration S] [--cpu N]

Runs the whole virtual platform (open model, ``t0 + i / rate``) against the peer server for
``duration`` seconds and prints one JSON line: operations sent and completed, late sends, process
CPU, and the scheduler lateness percentiles (how late each send was after its intended time).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import trio

from loadgen.bench.procs import pin
from loadgen.metrics.hdr import percentiles_ms
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import Arrival, PlatformConfig, Stage, Targets, Timeouts
from loadgen.platform.runner import run_platform


async def pace(port: int, rate: float, duration: float) -> None:
    config = PlatformConfig(
        targets=Targets(base_url=f"http://127.0.0.1:{port}", count=1000),
        arrival=Arrival(model="open", stages=(Stage(duration=duration, rate=rate),)),
        max_connections=64,
        device_choice="round-robin",
        timeouts=Timeouts(ack_timeout=5.0, timeout=10.0),
        drain_grace=2.0,
    )
    metrics = Metrics()
    cpu0 = time.process_time()
    result = await run_platform(config, metrics)
    cpu = time.process_time() - cpu0
    lateness = percentiles_ms(metrics.single("lateness").merged())
    print(
        orjson.dumps(
            {
                "rate": rate,
                "sent": result.counters.get("ops.sent", 0),
                "completed": result.counters.get("ops.completed", 0),
                "late_sends": result.counters.get("ops.late_sends", 0),
                "cpu_s": cpu,
                # CPU of the load window alone (start-up and the drain excluded)
                "load_cpu_s": float(result.generator.get("cpu_percent", 0.0))
                / 100
                * result.load_duration_s,
                "load_s": result.load_duration_s,
                "lateness_ms": lateness,
                "saturated": result.saturated,
            }
        ).decode(),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.pacepeer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    pin(args.cpu)
    trio.run(pace, args.port, args.rate, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
