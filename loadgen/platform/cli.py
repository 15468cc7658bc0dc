"""``loadgen platform``: run the virtual platform from the command line.

Parses the options into a ``PlatformConfig`` (so every value is validated by the same records
as a scenario file), runs ``run_platform`` next to the interval roll-over, prints a live status
line every second on stderr (one updating line on a terminal, plain lines otherwise, nothing with
``--quiet``), and at the end prints the summary table and writes ``summary.json`` plus one
``.hlog`` per recorder into the results folder (``results/platform/<UTC timestamp>/`` unless
``--results`` names one). Ctrl-C stops the load, keeps what was measured and still writes the
results (exit code 130).
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import orjson
import trio

from loadgen.errors import ConfigError
from loadgen.metrics.health import HealthLimits
from loadgen.metrics.intervals import HlogWriter, Interval, run_intervals
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import (
    Arrival,
    MixEntry,
    PlatformConfig,
    SouthAPI,
    Stage,
    Targets,
    Timeouts,
    load_targets_file,
)
from loadgen.platform.runner import PlatformInfo, PlatformResult, run_platform
from loadgen.protocol import DEFAULT_BASE_PATH
from loadgen.report.summary import format_summary, summary_from_metrics, write_summary

__all__ = ["build_config", "main", "register"]

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``platform`` subcommand."""
    p = subparsers.add_parser(
        "platform",
        help="send operations to devices at a rate and receive their responses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = p.add_argument_group("targets")
    t.add_argument("--url", default="http://127.0.0.1:1123", help="devices' base URL")
    t.add_argument("--devices", type=int, default=1, help="number of device ids (default 1)")
    t.add_argument("--id-pattern", default="dev-{index:06d}", help="str.format with {index}")
    t.add_argument("--first-index", type=int, default=0)
    t.add_argument("--targets-file", type=Path, help="CSV or JSON lines: device id, URL")
    t.add_argument("--api-key", help="X-ApiKey sent with every request")
    t.add_argument("--insecure", action="store_true", help="do not verify HTTPS certificates")
    t.add_argument("--ca-file", help="CA bundle to verify HTTPS devices")
    t.add_argument("--new-connection", action="store_true", help="a new connection per operation")
    t.add_argument("--max-connections", type=int, default=64, help="per device address")
    t.add_argument("--base-path", default=DEFAULT_BASE_PATH)
    t.add_argument("--plural-requests", action="store_true", help=".../operation/requests")
    a = p.add_argument_group("arrival")
    a.add_argument("--rate", type=float, default=100.0, help="operations per second")
    a.add_argument("--duration", type=float, default=10.0, help="seconds")
    a.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="SECONDS:RATE[:ramp]",
        help="a stage (repeat; replaces --rate/--duration)",
    )
    a.add_argument("--model", choices=["open", "poisson", "closed"], default="open")
    a.add_argument("--concurrency", type=int, default=1, help="closed model: in flight")
    a.add_argument("--per-device", action="store_true", help="closed model: one per device")
    a.add_argument("--max-in-flight", type=int, help="refuse (and count) operations beyond")
    m = p.add_argument_group("mix")
    m.add_argument(
        "--op",
        action="append",
        default=[],
        metavar="NAME[:WEIGHT]",
        help="an operation of the mix (repeat; default REBOOT_EQUIPMENT)",
    )
    m.add_argument(
        "--params", action="append", default=[], metavar="NAME=JSON", help="parameters of NAME"
    )
    m.add_argument("--device-choice", choices=["uniform", "round-robin", "zipf"], default="uniform")
    m.add_argument("--zipf-s", type=float, default=1.0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--sleepy-share", type=float, default=0.0, help="share of polling devices")
    m.add_argument("--breakdown", action="store_true", help="latency per operation name")
    o = p.add_argument_group("timeouts")
    o.add_argument("--ack-timeout", type=float, default=10.0)
    o.add_argument("--timeout", type=float, default=90.0)
    o.add_argument("--retries", type=int, default=0)
    o.add_argument("--retries-delay", type=float, default=1.0)
    o.add_argument("--retry-on", action="append", default=[], metavar="RESULT_CODE")
    o.add_argument("--grace", type=float, help="drain period (default min(timeout, 30 s))")
    s = p.add_argument_group("south API")
    s.add_argument("--south-host", default="127.0.0.1")
    s.add_argument("--south-port", type=int, default=0)
    s.add_argument("--advertise-host", help="host devices should use to reach the south API")
    s.add_argument("--south-api-key", help="require this X-ApiKey from devices")
    s.add_argument("--south-tls", action="store_true", help="serve HTTPS (self-signed)")
    r = p.add_argument_group("results")
    r.add_argument("--results", type=Path, help="results folder")
    r.add_argument("--quiet", action="store_true", help="no live status line")
    r.add_argument("--max-lateness-ms", type=float, default=50.0)
    r.add_argument("--max-cpu", type=float, default=95.0, help="percent of one core")
    p.set_defaults(func=main)


def _stages(args: argparse.Namespace) -> tuple[Stage, ...]:
    if not args.stage:
        return (Stage(duration=args.duration, rate=args.rate),)
    stages = []
    for i, text in enumerate(args.stage):
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "ramp"):
            raise ConfigError(f"expected SECONDS:RATE[:ramp], got {text!r}", key=f"--stage[{i}]")
        try:
            duration, rate = float(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigError(f"expected numbers, got {text!r}", key=f"--stage[{i}]") from None
        try:
            stages.append(Stage(duration=duration, rate=rate, ramp=len(parts) == 3))
        except ConfigError as exc:
            raise ConfigError(str(exc).split(": ", 1)[1], key=f"--stage[{i}].{exc.key}") from None
    return tuple(stages)


def _mix(args: argparse.Namespace) -> tuple[MixEntry, ...]:
    params: dict[str, Any] = {}
    for text in args.params:
        name, eq, raw = text.partition("=")
        try:
            value = orjson.loads(raw) if eq else None
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc}", key=f"--params {name}") from None
        if not isinstance(value, dict):
            raise ConfigError("expected NAME={...} (a JSON object)", key=f"--params {name}")
        params[name] = value
    entries = []
    for text in args.op or ["REBOOT_EQUIPMENT"]:
        name, _, weight = text.partition(":")
        try:
            entries.append(
                MixEntry(name=name, weight=float(weight or 1), parameters=params.pop(name, None))
            )
        except ValueError:
            raise ConfigError(f"expected NAME[:WEIGHT], got {text!r}", key="--op") from None
    if params:
        raise ConfigError(f"parameters for {sorted(params)[0]!r}, not in the mix", key="--params")
    return tuple(entries)


def build_config(args: argparse.Namespace) -> PlatformConfig:
    """The ``PlatformConfig`` the options describe (raises ``ConfigError``)."""
    if args.targets_file is not None:
        targets = load_targets_file(args.targets_file)
    else:
        targets = Targets(
            base_url=args.url,
            id_pattern=args.id_pattern,
            count=args.devices,
            first_index=args.first_index,
        )
    return PlatformConfig(
        targets=targets,
        arrival=Arrival(
            model=args.model,
            stages=_stages(args),
            concurrency=args.concurrency,
            per_device=args.per_device,
        ),
        mix=_mix(args),
        device_choice=args.device_choice,
        zipf_s=args.zipf_s,
        timeouts=Timeouts(
            ack_timeout=args.ack_timeout,
            timeout=args.timeout,
            retries=args.retries,
            retries_delay=args.retries_delay,
            retry_result_list=tuple(args.retry_on),
        ),
        south=SouthAPI(
            host=args.south_host,
            port=args.south_port,
            advertise_host=args.advertise_host,
            api_key=args.south_api_key,
            tls=args.south_tls,
        ),
        api_key=args.api_key,
        verify=not args.insecure,
        ca_file=args.ca_file,
        keep_alive=not args.new_connection,
        max_connections=args.max_connections,
        max_in_flight=args.max_in_flight,
        seed=args.seed,
        base_path=args.base_path,
        plural_requests=args.plural_requests,
        sleepy_share=args.sleepy_share,
        health=HealthLimits(lateness_p99_ms=args.max_lateness_ms, cpu_percent=args.max_cpu),
        breakdown_by_name=args.breakdown,
        drain_grace=args.grace,
    )


def _p99_ms(interval: Interval, name: str) -> str:
    hist = interval.histograms.get(name)
    if hist is None or not hist.get_total_count():
        return "-"
    return f"{hist.get_value_at_percentile(99.0) / 1000:.1f}"


class StatusLine:
    """One line per interval: rates, in flight, p99s, errors. Updates in place on a TTY."""

    def __init__(self, info: list[PlatformInfo], stream: TextIO) -> None:
        self.info = info
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, interval: Interval) -> None:
        c = interval.counters
        seconds = interval.length or 1.0
        stats = self.info[0].statistics() if self.info else None
        failed = c.get("ops.failed", 0) + c.get("ops.errors", 0) + c.get("ops.timed_out", 0)
        line = (
            f"[{interval.end:6.1f}s {stats.phase if stats else '-':>5}] "
            f"sent {c.get('ops.sent', 0) / seconds:8.0f}/s  "
            f"done {c.get('ops.completed', 0) / seconds:8.0f}/s  "
            f"in flight {stats.in_flight if stats else 0:6d}  "
            f"p99 complete {_p99_ms(interval, 'complete'):>7} ms  "
            f"lateness p99 {_p99_ms(interval, 'lateness'):>6} ms  "
            f"not ok {failed}"
        )
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if interval.final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


async def _run(
    config: PlatformConfig, metrics: Metrics, directory: Path, quiet: bool
) -> tuple[PlatformResult | None, bool, float]:
    info: list[PlatformInfo] = []
    result: list[PlatformResult] = []
    interrupted = False
    started = time.time()
    hlogs = HlogWriter(directory, started)
    sinks: list[Any] = [hlogs]
    if not quiet:
        sinks.append(StatusLine(info, sys.stderr))
    try:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()
                        return

                async def run_it(task_status: trio.TaskStatus[PlatformInfo]) -> None:
                    result.append(await run_platform(config, metrics, task_status=task_status))
                    nursery.cancel_scope.cancel()

                nursery.start_soon(on_signal)
                info.append(await nursery.start(run_it))
                nursery.start_soon(partial(run_intervals, metrics, sinks, t0=trio.current_time()))
    finally:
        hlogs.close()
    return (result[0] if result else None), interrupted, started


def main(args: argparse.Namespace) -> int:
    config = build_config(args)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    directory: Path = args.results or Path("results") / "platform" / stamp
    directory.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    result, interrupted, started = trio.run(_run, config, metrics, directory, args.quiet)
    if result is not None:
        run = result.run_info()
    else:  # interrupted before the end: what was measured is in the metrics
        run = {"started_at": started, "duration_s": round(time.time() - started, 3)}
    run["campaign"] = "platform"
    run["interrupted"] = interrupted
    summary = summary_from_metrics(metrics, run)
    write_summary(directory, summary)
    print(format_summary(summary))
    print(f"\nresults in {directory}")
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
