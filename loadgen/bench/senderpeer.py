"""The sender side of the sender benchmark, run as its own process pinned to its own core.

    python -m loadgen.bench.senderpeer --kind platform|httpx --port P [--duration S]
        [--warmup S] [--concurrency C] [--model closed|open] [--rate R] [--cpu N]
        [--count-steps] [--tls CA_FILE]

prints "WARM" after the warm-up, then one JSON line with the measured window: operations
completed, errors, process CPU seconds and wall seconds.

``platform`` is the virtual platform itself (``run_platform``: schedule, mix, ids, in-flight
table, deadlines, HDR recording, the fast HTTP client) against the peer server, which answers
every operation request synchronously. ``httpx`` is the same work done the obvious way: the
same request bodies from the same templates, ``httpx.AsyncClient.post``, the answer decoded
with orjson and the latency recorded in the same histograms; it is the in-run reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson
import trio

from loadgen.bench.procs import pin
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import Arrival, PlatformConfig, Stage, Targets, Timeouts
from loadgen.platform.mix import OperationIds, OperationMix
from loadgen.platform.runner import run_platform
from loadgen.protocol import PathTemplate


def _report(count: int, errors: int, cpu: float, wall: float) -> None:
    row: dict[str, Any] = {"operations": count, "errors": errors, "cpu_s": cpu, "wall_s": wall}
    if _STEPS is not None and count:
        row["steps_per_op"] = round(_STEPS.steps / count, 3)
        row["io_waits_per_op"] = round(_STEPS.io_waits / count, 3)
    print(orjson.dumps(row).decode(), flush=True)


class StepCounter(trio.abc.Instrument):
    """Counts task steps and I/O waits (scheduler passes): per operation, a figure of the
    issuing path's cost that the machine's other load does not blur."""

    def __init__(self) -> None:
        self.steps = 0
        self.io_waits = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.io_waits += 1


_STEPS: StepCounter | None = None


async def _window(
    completed: Any, errors: Any, warmup: float, duration: float
) -> tuple[int, int, float, float]:
    await trio.sleep(warmup)
    print("WARM", flush=True)
    done0, err0 = completed(), errors()
    if _STEPS is not None:
        trio.lowlevel.add_instrument(_STEPS)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await trio.sleep(duration)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    if _STEPS is not None:
        trio.lowlevel.remove_instrument(_STEPS)
    return completed() - done0, errors() - err0, cpu1 - cpu0, wall1 - wall0


def bench_config(
    port: int,
    concurrency: int,
    seconds: float,
    *,
    model: str = "closed",
    rate: float = 1.0,
    tls_ca: str | None = None,
) -> PlatformConfig:
    """The platform of the sender benchmarks: 1,000 device ids on the peer server, round robin,
    ``concurrency`` connections, for ``seconds``; over HTTPS verified with ``tls_ca`` if given."""
    scheme = "http" if tls_ca is None else "https"
    return PlatformConfig(
        targets=Targets(base_url=f"{scheme}://127.0.0.1:{port}", count=1000),
        ca_file=tls_ca,
        arrival=Arrival(model="closed" if model == "closed" else "open",
                        stages=(Stage(duration=seconds, rate=rate),), concurrency=concurrency),
        max_connections=concurrency,
        device_choice="round-robin",
        timeouts=Timeouts(ack_timeout=5.0, timeout=10.0),
        drain_grace=0.5,
    )  # fmt: skip


async def platform_client(
    port: int,
    duration: float,
    warmup: float,
    concurrency: int,
    model: str,
    rate: float,
    tls_ca: str | None = None,
) -> None:
    config = bench_config(
        port, concurrency, warmup + duration + 1.0, model=model, rate=rate, tls_ca=tls_ca
    )
    metrics = Metrics()
    counters = metrics.counters
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_platform, config, metrics)
        count, errors, cpu, wall = await _window(
            lambda: counters["ops.completed"],
            lambda: counters["ops.errors"] + counters["ops.timed_out"],
            warmup,
            duration,
        )
        nursery.cancel_scope.cancel()
    _report(count, errors, cpu, wall)


async def httpx_client(port: int, duration: float, warmup: float, concurrency: int) -> None:
    import httpx

    metrics = Metrics()
    complete = metrics.phase("complete")
    mix = OperationMix(PlatformConfig().mix, seed=0, timestamp_ms=0)
    template = mix.templates[0]
    ids = OperationIds()
    paths = PathTemplate()
    base = f"http://127.0.0.1:{port}"
    urls = [base + paths.request_path(f"dev-{i:06d}") for i in range(1000)]
    completed = 0
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}

    async def loop(http: httpx.AsyncClient, worker: int) -> None:
        nonlocal completed, errors
        i = worker
        while True:
            i = (i + concurrency) % len(urls)
            start = trio.current_time()
            body = template.render(ids.next().encode(), int(time.time() * 1000))
            try:
                response = await http.post(urls[i], content=body, headers=headers)
                code = orjson.loads(response.content)["operation"]["response"]["resultCode"]
            except Exception:
                errors += 1
                continue
            now = trio.current_time()
            complete.record(now - start, now - start)
            if response.status_code == 201 and code:
                completed += 1
            else:
                errors += 1

    async with httpx.AsyncClient(limits=limits) as http, trio.open_nursery() as nursery:
        for worker in range(concurrency):
            nursery.start_soon(loop, http, worker)
        count, errs, cpu, wall = await _window(lambda: completed, lambda: errors, warmup, duration)
        nursery.cancel_scope.cancel()
    _report(count, errs, cpu, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen.bench.senderpeer")
    parser.add_argument("--kind", choices=["platform", "httpx"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model", choices=["closed", "open"], default="closed")
    parser.add_argument("--rate", type=float, default=100_000.0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument(
        "--count-steps", action="store_true", help="report task steps and I/O waits per operation"
    )
    parser.add_argument("--tls", metavar="CA_FILE", default=None, help="HTTPS, verified by CA_FILE")
    args = parser.parse_args(argv)
    global _STEPS
    _STEPS = StepCounter() if args.count_steps else None
    pin(args.cpu)
    if args.kind == "platform":
        trio.run(
            platform_client, args.port, args.duration, args.warmup, args.concurrency,
            args.model, args.rate, args.tls,
        )  # fmt: skip
    else:
        trio.run(httpx_client, args.port, args.duration, args.warmup, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
