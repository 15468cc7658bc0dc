"""``loadgen run`` and ``loadgen validate``."""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from loadgen.campaign.scenario import load_scenario
from loadgen.errors import ConfigError
from loadgen.report.summary import format_summary
from loadgen.scale.shard import Shard

__all__ = ["register"]


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.scenarios:
        missing: list[str] = []
        try:
            loaded = load_scenario(path, args.set or (), missing=missing)
        except ConfigError as exc:
            failed += 1
            print(f"INVALID {exc}", flush=True)
            continue
        scenario = loaded.scenario
        print(
            f"ok      {path}: campaign {scenario.campaign.name!r}, sides {scenario.campaign.sides}, "
            f"{scenario.load_seconds:g} s of load, {len(scenario.thresholds)} thresholds",
            flush=True,
        )
        if missing:
            print(
                f"        needs the environment variables {', '.join(sorted(set(missing)))} "
                "to run (validated with stand-ins)",
                flush=True,
            )
    return 2 if failed else 0


def _run(args: argparse.Namespace) -> int:
    loaded = load_scenario(args.scenario, args.set or ())
    shards = args.shards if args.shards is not None else loaded.scenario.campaign.shards
    if args.shard is None and shards not in (1, None):
        from loadgen.scale.local import run_local_shards

        code: int = run_local_shards(
            Path(args.scenario),
            overrides=args.set or (),
            shards=shards,
            results_root=Path(args.results) if args.results else None,
            quiet=args.quiet,
        )
        return code
    from loadgen.campaign.runner import run_campaign

    shard = Shard.parse(args.shard) if args.shard else None
    progress = "quiet" if args.quiet else args.progress
    outcome = trio.run(
        lambda: run_campaign(
            loaded,
            results_root=Path(args.results) if args.results else None,
            shard=shard,
            start_at=args.start_at,
            progress=progress,
            directory=Path(args.directory) if args.directory else None,
        )
    )
    if not args.quiet:
        print()
        print(format_summary(outcome.summary))
    print(f"\nresults: {outcome.directory}")
    if outcome.report is not None:
        print(f"report:  {outcome.report}")
    if outcome.interrupted:
        return 130
    return outcome.exit_code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a campaign from a scenario file",
        description="Run the campaign a scenario file describes and write its results folder "
        "(summary.json, timeseries.csv, .hlog interval logs, report.html). Exit code 99 when a "
        "threshold failed, 130 when interrupted, 2 for a scenario error.",
    )
    run.add_argument("scenario", metavar="SCENARIO")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a scenario value, e.g. --set devices.count=50 (repeatable; TOML values)",
    )
    run.add_argument("--results", metavar="DIR", help="results root (default: output.results)")
    run.add_argument("--shard", metavar="I/N", help="run shard I of N (devices and rate split)")
    run.add_argument(
        "--shards",
        type=lambda v: v if v == "auto" else int(v),
        default=None,
        metavar="N",
        help="run N shard processes here and merge them ('auto': one per core)",
    )
    run.add_argument(
        "--start-at", type=float, default=None, metavar="EPOCH", help="common start of all shards"
    )
    run.add_argument(
        "--progress", choices=["auto", "bar", "lines", "quiet"], default=None, help="live display"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no live display, no table")
    run.add_argument("--directory", metavar="DIR", help=argparse.SUPPRESS)  # exact folder (shards)
    run.set_defaults(func=_run)

    validate = sub.add_parser(
        "validate",
        help="check scenario files without running them",
        description="Validate scenario files (types, unknown keys, thresholds, environment "
        "variables) exactly as 'run' does before any load; exit 2 when one is invalid.",
    )
    validate.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    validate.add_argument("--set", action="append", metavar="KEY=VALUE")
    validate.set_defaults(func=_validate)
