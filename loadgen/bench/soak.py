"""``python -m loadgen.bench.soak`` (``make soak``): the standing soak of the tool itself.

It runs ``scenarios/soak.toml`` (both sides on loopback) through the campaign runner, the one run
path, for ``--duration`` (``SOAK_DURATION``, 10 minutes by default), samples this process's RSS
once a second while it runs, then prints RSS, p99(complete) and the counts per minute and the
verdict of ``loadgen.bench.soakcheck``. Exit codes: 0 when the soak passed, 99 when it failed
(the reasons are printed; the run's own failed thresholds count too), 2 for bad input, 130 when
interrupted.

Why a bench module and not a ``loadgen soak`` command: the soak judges loadgen itself (its memory
and its latency over time on this machine), as ``make bench`` does, not a target; the run it
judges is an ordinary campaign whose results folder stays like any other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
import trio

from loadgen.bench.soakcheck import Limits, Minute, format_table, per_minute, verdict
from loadgen.campaign.runner import CampaignOutcome, run_campaign
from loadgen.campaign.scenario import (
    LoadedScenario,
    apply_override,
    read_document,
    validate_document,
)
from loadgen.errors import ConfigError
from loadgen.report.results import iter_hlog, new_run_directory
from loadgen.units import parse_duration

__all__ = ["main", "sample_rss"]

DEFAULT_SCENARIO: Final = "scenarios/soak.toml"
DEFAULT_DURATION: Final = "10m"
SAMPLE_PERIOD: Final = 1.0  # seconds between two RSS samples
EXIT_OK, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 99, 130
_DEFAULTS: Final = Limits()
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int | None:
    """This process's resident set size (None where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


async def sample_rss(samples: list[tuple[float, int]], period: float = SAMPLE_PERIOD) -> None:
    """Append ``(wall-clock epoch, RSS bytes)`` every ``period`` until cancelled. The wall clock
    only places a sample against the run's ``started_at``; the sleeps are on the trio clock."""
    next_at = trio.current_time()
    while True:
        rss = _rss_bytes()
        if rss is not None:
            samples.append((time.time(), rss))
        next_at += period
        await trio.sleep_until(next_at)


def _seconds(text: str, flag: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(str(exc), key=flag) from None
    if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"expected a finite duration > 0, got {text!r}", key=flag)
    return float(value)


def _scenario(args: argparse.Namespace, duration: float) -> tuple[LoadedScenario, float]:
    """The soak scenario with its load set to one stage of ``duration`` at its own rate (its
    last stage's) or ``--rate``."""
    document = read_document(args.scenario)
    for assignment in args.set:
        apply_override(document, assignment)
    stages = document.get("platform", {}).get("arrival", {}).get("stages") or [{}]
    rate = args.rate if args.rate is not None else stages[-1].get("rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
        raise ConfigError(
            "expected a rate > 0 in the scenario's last stage, or --rate",
            source=str(args.scenario),
            key="platform.arrival.stages",
        )
    apply_override(
        document, f'platform.arrival.stages=[{{duration="{duration}s", rate={float(rate)}}}]'
    )
    scenario = validate_document(document, str(args.scenario))
    return LoadedScenario(scenario, document, args.scenario), float(rate)


def _counter_lines(path: Path) -> Iterator[tuple[float, dict[str, int]]]:
    """``(t_s, cumulative counters)`` per line of ``counters.jsonl``, up to a line cut by a kill."""
    with path.open("rb") as lines:
        for line in lines:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                return
            if isinstance(record, dict) and isinstance(record.get("counters"), dict):
                yield float(record.get("t_s", 0.0)), record["counters"]


def figures(
    directory: Path, samples: Sequence[tuple[float, int]], length: float
) -> tuple[list[Minute], dict[str, Any]]:
    """The minutes of a finished soak's folder and its summary (files read as streams)."""
    summary: dict[str, Any] = orjson.loads((directory / "summary.json").read_bytes())
    run: dict[str, Any] = orjson.loads((directory / "run.json").read_bytes())
    started = float(run["started_at"])
    hlog = directory / "complete.hlog"
    intervals = ((end, h) for _, end, h in iter_hlog(hlog)) if hlog.exists() else iter(())
    minutes = per_minute(
        load_seconds=float(summary.get("load_duration_s") or 0.0),
        rss=((at - started, rss) for at, rss in samples),
        intervals=intervals,
        counters=_counter_lines(directory / "counters.jsonl"),
        length=length,
    )
    return minutes, summary


async def _soak(
    loaded: LoadedScenario, directory: Path
) -> tuple[CampaignOutcome, list[tuple[float, int]]]:
    samples: list[tuple[float, int]] = []
    outcome: CampaignOutcome | ConfigError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_rss, samples)
        try:
            outcome = await run_campaign(loaded, directory=directory)
        except ConfigError as exc:  # found while starting (a port in use): one line, not a group
            outcome = exc
        nursery.cancel_scope.cancel()
    if isinstance(outcome, ConfigError):
        raise outcome
    assert outcome is not None
    return outcome, samples


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen.bench.soak",
        description="Run the soak scenario for a long time and judge RSS, p99(complete) and the "
        "operations' accounting minute by minute. Exit code 99 when it fails.",
    )
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, help="(default %(default)s)")
    parser.add_argument(
        "--duration",
        default=os.environ.get("SOAK_DURATION") or DEFAULT_DURATION,
        help=f"load duration, e.g. 10m (default: $SOAK_DURATION or {DEFAULT_DURATION})",
    )
    parser.add_argument("--rate", type=float, default=None, help="ops/s (default: the scenario's)")
    parser.add_argument("--minute", default="60s", help="length of a 'minute' (default 60s)")
    parser.add_argument("--results", default="results", help="results root (default results)")
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=_DEFAULTS.max_rss_growth_mb,
        metavar="MB",
        help="last minute's RSS over the second's (default %(default)s MB)",
    )
    parser.add_argument(
        "--max-p99-drift",
        type=float,
        default=_DEFAULTS.max_p99_drift,
        metavar="X",
        help="last minute's p99 over the second's (default %(default)sx)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any scenario key (repeatable; TOML values)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        duration = _seconds(args.duration, "--duration")
        length = _seconds(args.minute, "--minute")
        limits = Limits(max_rss_growth_mb=args.max_rss_growth, max_p99_drift=args.max_p99_drift)
        loaded, rate = _scenario(args, duration)
        directory = new_run_directory(Path(args.results), loaded.scenario.campaign.name)
        print(f"soak: {duration:g} s at {rate:g} ops/s -> {directory}", flush=True)
        outcome, samples = trio.run(_soak, loaded, directory)
    except (ConfigError, ValueError) as exc:
        print(f"loadgen soak: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    minutes, summary = figures(outcome.directory, samples, length)
    print()
    print(format_table(minutes, length=length))
    reasons = verdict(minutes, summary.get("operations") or {}, limits)
    if outcome.thresholds_failed:
        failed = [t["expression"] for t in summary.get("thresholds", []) if not t.get("ok")]
        reasons.append(f"thresholds failed: {'; '.join(failed)}")
    print()
    for reason in reasons:
        print(f"FAIL  {reason}")
    if not reasons:
        print("PASS  RSS flat, p99 steady, every operation accounted for")
    print(f"results: {outcome.directory}")
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if reasons else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
