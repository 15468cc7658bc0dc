"""``loadgen devices``: run a virtual device fleet from the command line.

The options mirror ``FleetConfig`` and its records one to one (``--ack-delay`` is
``default.delays.ack``, ``--fault hang=0.01`` is ``faults.hang``, ``--op UPDATE=async-multi``
gives UPDATE a profile of its own with that flow); ``build_config`` does the mapping, so the
Python API and the command line cannot drift apart. Scenario files (the campaign issue) map a
TOML section onto the same records.

Runtime: the fleet runs until ``--duration`` passes or Ctrl-C. The first Ctrl-C drains (stop
accepting, finish the operations in flight), a second one stops at once. A status line every
second on stderr (rewritten in place on a terminal, plain lines otherwise, none with
``--quiet``) shows operations/s, in flight and errors; a summary of every counter and the
platform's answer time follows at exit. Exit codes: 0 after ``--duration``, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from loadgen.device.config import (
    DEFAULT_HTTP_PORT,
    DEFAULT_HTTPS_PORT,
    FAULT_NAMES,
    Delay,
    Delays,
    Faults,
    FleetConfig,
    Profile,
    Responder,
    Sleepy,
    address_range,
    config_section,
)
from loadgen.device.runner import FleetHandle, FleetInfo, run_fleet
from loadgen.errors import ConfigError
from loadgen.metrics import Metrics, percentiles_ms

__all__ = ["build_config", "main", "register"]

EXIT_OK: Final = 0
EXIT_INTERRUPTED: Final = 130
STATUS_PERIOD: Final = 1.0


def _port(text: str) -> int | None:
    return None if text.lower() in ("off", "none", "") else int(text)


def _pairs(items: list[str], key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"expected NAME=VALUE, got {part!r}", key=key)
            out[name.strip()] = value.strip()
    return out


def _floats(pairs: dict[str, str], key: str) -> dict[str, float]:
    try:
        return {name: float(value) for name, value in pairs.items()}
    except ValueError as exc:
        raise ConfigError(f"expected numbers: {exc}", key=key) from None


def _addresses(text: str | None) -> tuple[str, ...]:
    """``127.1.0.1+100`` (a range) or ``127.1.0.1,127.1.0.2`` (a list)."""
    if not text:
        return ()
    first, plus, count = text.partition("+")
    if plus:
        return address_range(first.strip(), int(count))
    return tuple(part.strip() for part in text.split(",") if part.strip())


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``devices`` subcommand."""
    p = subparsers.add_parser(
        "devices",
        help="run a virtual device fleet",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    fleet = p.add_argument_group("fleet and listeners")
    fleet.add_argument("--count", type=int, default=1000, help="devices (default 1000)")
    fleet.add_argument("--id-pattern", default="dev-{:06d}", help="str.format of the index")
    fleet.add_argument("--first-index", type=int, default=0)
    fleet.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    fleet.add_argument("--http-port", type=_port, default=DEFAULT_HTTP_PORT, help="or 'off'")
    fleet.add_argument(
        "--https-port", type=_port, default=None, help=f"HTTPS port (e.g. {DEFAULT_HTTPS_PORT})"
    )
    fleet.add_argument("--tls-cert", default=None, help="certificate (default: self-signed)")
    fleet.add_argument("--tls-key", default=None)
    fleet.add_argument("--ca-out", type=Path, default=None, help="write the self-signed CA here")
    fleet.add_argument("--base-path", default="/south/v80/devices")
    fleet.add_argument("--api-key", default=None, help="require this X-ApiKey on requests")
    fleet.add_argument(
        "--addresses", default=None, help="address mode: 127.1.0.1+N or a comma list"
    )
    fleet.add_argument("--seed", type=int, default=0)
    prof = p.add_argument_group("behaviour (the default profile)")
    prof.add_argument("--flow", choices=["sync", "async", "async-multi"], default="sync")
    prof.add_argument("--steps", default=None, help="comma-separated step names")
    prof.add_argument("--steps-mode", choices=["together", "partials"], default=None)
    for name in ("sync", "ack", "step", "final"):
        prof.add_argument(
            f"--{name}-delay",
            type=Delay.parse,
            default=Delay(),
            help="0.2 | uniform:0.1,0.3 | exponential:0.2 | lognormal:MEDIAN,P99",
        )
    prof.add_argument(
        "--results",
        action="append",
        default=[],
        help="result mix, e.g. SUCCESSFUL=98,ERROR_PROCESSING=1,NOT_SUPPORTED=1",
    )
    prof.add_argument("--sync-status", type=int, default=201, choices=[200, 201, 202, 204])
    prof.add_argument("--ack-status", type=int, default=201, choices=[200, 201, 202, 204])
    prof.add_argument("--version", dest="response_version", default="1.0")
    prof.add_argument("--concurrency", type=int, default=1, help="operations per device")
    prof.add_argument("--when-busy", choices=["queue", "reject"], default="queue")
    prof.add_argument("--queue-limit", type=int, default=1000)
    prof.add_argument(
        "--op",
        action="append",
        default=[],
        metavar="NAME=FLOW",
        help="a flow of its own for one operation (e.g. UPDATE=async-multi)",
    )
    faults = p.add_argument_group("faults")
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=P",
        help="probability of a fault: " + ", ".join(FAULT_NAMES),
    )
    faults.add_argument("--drip-bytes", type=int, default=8)
    faults.add_argument("--drip-interval", type=float, default=0.05)
    resp = p.add_argument_group("platform (async answers, sleepy devices)")
    resp.add_argument("--platform-url", default=None, help="http(s)://host:port of the south API")
    resp.add_argument("--platform-api-key", default=None)
    resp.add_argument("--platform-base-path", default="/south/v80/devices")
    resp.add_argument("--retries", type=int, default=3)
    resp.add_argument("--backoff-base", type=float, default=0.1)
    resp.add_argument("--backoff-max", type=float, default=2.0)
    resp.add_argument("--max-connections", type=int, default=64)
    resp.add_argument("--insecure", action="store_true", help="do not verify the platform's TLS")
    resp.add_argument("--ca-file", default=None, help="CA of the platform's certificate")
    resp.add_argument("--sleepy-share", type=float, default=0.0, help="share of polling devices")
    resp.add_argument("--poll-period", type=float, default=60.0)
    resp.add_argument("--poll-jitter", type=float, default=0.1)
    resp.add_argument("--collect-after-refresh", action="store_true")
    run = p.add_argument_group("run")
    run.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    run.add_argument("--quiet", action="store_true", help="no live status line")
    p.set_defaults(func=main)


def build_config(args: argparse.Namespace) -> FleetConfig:
    """The ``FleetConfig`` the options describe (raises ``ConfigError`` naming the key)."""
    results = _floats(_pairs(args.results, "results"), "results") or {"SUCCESSFUL": 1.0}
    with config_section("default"):
        default = Profile(
            flow=args.flow,
            steps=tuple(s.strip() for s in args.steps.split(",")) if args.steps else None,
            steps_mode=args.steps_mode,
            delays=Delays(
                sync=args.sync_delay,
                ack=args.ack_delay,
                step=args.step_delay,
                final=args.final_delay,
            ),
            results=results,  # type: ignore[arg-type]  # codes are validated by Profile
            sync_status=args.sync_status,
            ack_status=args.ack_status,
            version=args.response_version,
            concurrency=args.concurrency,
            when_busy=args.when_busy,
            queue_limit=args.queue_limit,
        )
    profiles: dict[str, Profile] = {}
    for name, flow in _pairs(args.op, "profiles").items():
        with config_section(f"profiles.{name}"):
            profiles[name] = Profile(
                flow=flow,  # type: ignore[arg-type]  # validated by Profile
                delays=default.delays,
                results=default.results,
                sync_status=default.sync_status,
                ack_status=default.ack_status,
                version=default.version,
                concurrency=default.concurrency,
                when_busy=default.when_busy,
                queue_limit=default.queue_limit,
            )
    fault_table: dict[str, Any] = _floats(_pairs(args.fault, "faults"), "faults")
    unknown = sorted(set(fault_table) - set(FAULT_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown fault {unknown[0]!r}; expected one of {', '.join(FAULT_NAMES)}", key="faults"
        )
    with config_section("faults"):
        faults = Faults(**fault_table, drip_bytes=args.drip_bytes, drip_interval=args.drip_interval)
    with config_section("responder"):
        responder = Responder(
            platform_url=args.platform_url,
            api_key=args.platform_api_key,
            base_path=args.platform_base_path,
            retries=args.retries,
            backoff_base=args.backoff_base,
            backoff_max=args.backoff_max,
            max_connections=args.max_connections,
            verify_tls=not args.insecure,
            ca_file=args.ca_file,
        )
    with config_section("sleepy"):
        sleepy = Sleepy(
            share=args.sleepy_share,
            poll_period=args.poll_period,
            jitter=args.poll_jitter,
            collect_after_refresh=args.collect_after_refresh,
        )
    return FleetConfig(
        count=args.count,
        id_pattern=args.id_pattern,
        first_index=args.first_index,
        host=args.host,
        http_port=args.http_port,
        https_port=args.https_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        base_path=args.base_path,
        api_key=args.api_key,
        addresses=_addresses(args.addresses),
        default=default,
        profiles=profiles,
        faults=faults,
        responder=responder,
        sleepy=sleepy,
        seed=args.seed,
    )


def _errors(counters: dict[str, int]) -> int:
    return sum(
        v
        for k, v in counters.items()
        if k.startswith(("device.http.", "device.fault.")) or k.endswith(".undelivered")
    )


def status_line(stats: dict[str, int], previous: dict[str, int], elapsed: float) -> str:
    """``ops/s, in flight, errors`` since the previous line (pure, for tests)."""
    received = stats.get("device.ops.received", 0) - previous.get("device.ops.received", 0)
    rate = received / elapsed if elapsed > 0 else 0.0
    return (
        f"devices {stats.get('device.devices', 0)}  ops/s {rate:8.1f}  "
        f"in flight {stats.get('device.ops.in_flight', 0):6d}  "
        f"total {stats.get('device.ops.received', 0)}  errors {_errors(stats)}"
    )


def summary(stats: dict[str, int], metrics: Metrics, elapsed: float) -> str:
    """The end-of-run report: every non-zero counter and the callback latency."""
    lines = [f"fleet ran {elapsed:.1f} s; {stats.get('device.ops.received', 0)} operations"]
    width = max((len(k) for k in stats), default=0)
    lines.extend(f"  {k:<{width}}  {v}" for k, v in sorted(stats.items()) if v)
    phase = metrics.phases.get("callback")
    if phase is not None and phase.intended.count:
        figures = percentiles_ms(phase.intended.merged())
        shown = "  ".join(f"{k} {v}" for k, v in figures.items())
        lines.append(f"  callback latency (ms): {shown}")
    return "\n".join(lines)


async def _status(handle: FleetHandle, out: TextIO) -> None:
    tty = out.isatty()
    previous = handle.statistics()
    last = trio.current_time()
    while True:
        await trio.sleep(STATUS_PERIOD)
        now = trio.current_time()
        stats = handle.statistics()
        line = status_line(stats, previous, now - last)
        out.write(f"\r{line}\x1b[K" if tty else line + "\n")
        out.flush()
        previous, last = stats, now


async def _run(config: FleetConfig, args: argparse.Namespace, out: TextIO) -> tuple[bool, str]:
    metrics = Metrics()
    interrupted = False
    start = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def fleet(task_status: trio.TaskStatus[FleetInfo] = trio.TASK_STATUS_IGNORED) -> None:
            await run_fleet(config, metrics, task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: stop the status line and the ^C handler

        async def control(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    if interrupted:  # the second ^C: stop now
                        nursery.cancel_scope.cancel()
                        return
                    interrupted = True
                    print("\nloadgen devices: draining (^C again to stop now)", file=out)
                    handle.shutdown()

        info: FleetInfo = await nursery.start(fleet)
        handle = info.handle
        await nursery.start(control)
        where = ", ".join(u for u in (info.http_url, info.https_url) if u)
        print(f"loadgen devices: {config.count} devices on {where}", file=out, flush=True)
        if info.ca_pem is not None and args.ca_out is not None:
            args.ca_out.write_bytes(info.ca_pem)
            print(f"loadgen devices: self-signed CA written to {args.ca_out}", file=out)
        if not args.quiet:
            nursery.start_soon(_status, handle, out)
        if args.duration is not None:
            nursery.start_soon(_stop_after, handle, args.duration)
    stats = handle.statistics()
    if not args.quiet and out.isatty():
        out.write("\n")
    return interrupted, summary(stats, metrics, trio.current_time() - start)


async def _stop_after(handle: FleetHandle, seconds: float) -> None:
    await trio.sleep(seconds)
    handle.shutdown()


def main(args: argparse.Namespace) -> int:
    """Run the fleet the options describe; 0 when ``--duration`` passed, 130 on Ctrl-C."""
    config = build_config(args)
    out = sys.stderr
    interrupted, text = trio.run(_run, config, args, out)
    print(text, file=out)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
