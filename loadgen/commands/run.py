"""``loadgen run``, ``devices``, ``platform`` and ``validate``: every run is a campaign.

``devices`` and ``platform`` turn their flags into a one-sided scenario, the document a file
would hold (``loadgen.commands.tables``), so all three go the same way: document -> validation
-> ``execute`` -> ``run_campaign``. They write the same results folder, show the same progress,
stop the same way on Ctrl-C (the first drains, the second cuts the drain) and exit with the same
codes: 0, 99 when a threshold failed, 2 for bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from loadgen.campaign.scenario import (
    LoadedScenario,
    apply_override,
    read_document,
    set_key,
    validate_document,
)
from loadgen.commands.flags import Flag, add_flags, build_document, name_flags
from loadgen.commands.tables import DEVICE_FLAGS, NORTH_FLAGS, PLATFORM_FLAGS, RUN_FLAGS
from loadgen.errors import ConfigError, first_of
from loadgen.report.console import format_summary
from loadgen.report.results import new_run_directory
from loadgen.seeds import resolve_seed

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_THRESHOLDS",
    "execute",
    "one_sided_scenario",
    "register",
]

EXIT_OK = 0
EXIT_FAILED = 1  # a shard crashed
EXIT_CONFIG = 2
EXIT_THRESHOLDS = 99
EXIT_INTERRUPTED = 130


def _set_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any scenario key, e.g. --set devices.count=50 (repeatable; TOML values)",
    )


def one_sided_scenario(
    args: argparse.Namespace, side: str, flags: Sequence[Flag], source: str
) -> LoadedScenario:
    """The scenario a side's flags describe, validated as a file would be."""
    document: dict[str, Any] = {"campaign": {"name": side, "sides": side}, side: {}}
    if side == "devices":
        document["campaign"]["duration"] = math.inf  # until Ctrl-C, unless --duration
    try:
        build_document(document, flags, args)
        for assignment in args.set:
            apply_override(document, assignment)
        return LoadedScenario(validate_document(document, source), document, source)
    except ConfigError as exc:
        raise name_flags(exc, flags, args) from None


def _from_file(args: argparse.Namespace, flags: Sequence[Flag] = RUN_FLAGS) -> LoadedScenario:
    """The scenario file with ``--set`` and the command's ``flags`` applied, validated; an error
    names the flag that set the key."""
    document = read_document(args.scenario)
    for assignment in args.set or ():
        apply_override(document, assignment)
    try:
        build_document(document, flags, args)
        return LoadedScenario(
            validate_document(document, str(args.scenario)), document, args.scenario
        )
    except ConfigError as exc:
        raise name_flags(exc, flags, args) from None


def with_seeds(loaded: LoadedScenario) -> LoadedScenario:
    """The scenario with every seed it leaves open drawn now, in the scenario and in the
    document saved with the results: a run is reproducible from its folder (and its shards,
    which add their index, all start from the same seeds)."""
    scenario, document = loaded.scenario, copy.deepcopy(loaded.document)
    updates: dict[str, Any] = {}
    for side in ("devices", "platform", "north"):
        config = getattr(scenario, side)
        if config is not None and config.seed is None:
            seed = resolve_seed(None)
            set_key(document, f"{side}.seed", seed)
            updates[side] = dataclasses.replace(config, seed=seed)
    if not updates:
        return loaded
    return LoadedScenario(scenario.model_copy(update=updates), document, loaded.source)


def execute(
    loaded: LoadedScenario,
    *,
    shard: str | None = None,
    shards: int | str | None = None,
    barrier: Path | None = None,
    barrier_timeout: float | None = None,
    barrier_lead: float | None = None,
    directory: Path | None = None,
) -> int:
    """Run a validated scenario (one process, one shard of it, or N local shards merged) and
    print the console summary; the exit code. A shard with a ``barrier`` folder starts its
    load with the other shards there (``loadgen.scale.barrier``)."""
    from loadgen.campaign.runner import run_campaign
    from loadgen.scale.barrier import DEFAULT_LEAD, DEFAULT_TIMEOUT, FileBarrier
    from loadgen.scale.shard import Shard, apply_shard

    loaded = with_seeds(loaded)
    scenario = loaded.scenario
    for warning in scenario.warnings():
        print(f"loadgen: warning: {warning}", file=sys.stderr)
    count = shards if shards is not None else scenario.campaign.shards
    if shard is None and count not in (1, None):
        from loadgen.scale.local import run_local_shards

        return run_local_shards(loaded, shards=count)
    part = Shard.parse(shard) if shard else Shard.whole()
    starter: FileBarrier | None = None
    if barrier is not None:
        if part.is_whole:
            raise ConfigError(
                "expected --shard I/N with it (the barrier waits for N)", key="--barrier"
            )
        starter = FileBarrier(
            barrier,
            index=part.index,
            count=part.count,
            timeout=DEFAULT_TIMEOUT if barrier_timeout is None else barrier_timeout,
            lead=DEFAULT_LEAD if barrier_lead is None else barrier_lead,
            notice=_stderr if scenario.output.progress != "quiet" else None,
        )
    if directory is None:
        directory = new_run_directory(Path(scenario.output.results), scenario.campaign.name)
        if not part.is_whole:
            directory = directory / f"shard-{part.index}-of-{part.count}"
    quiet = scenario.output.progress == "quiet"
    try:
        outcome = trio.run(
            lambda: run_campaign(
                loaded,
                scenario=apply_shard(scenario, part),
                directory=directory,
                shard=str(part),
                wait_to_start=None if starter is None else starter.wait,
            )
        )
    except BaseException as exc:
        if starter is not None:  # failed before the start: the other shards need not wait
            starter.abandon(str(first_of(exc, ConfigError) or exc) or type(exc).__name__)
        raise
    if not quiet:
        print()
        print(format_summary(outcome.summary))
    print(f"\nresults: {outcome.directory}")
    if outcome.report is not None:
        print(f"report:  {outcome.report}")
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    # a shard's thresholds judge only its part: the campaign's verdict is the merge's (and a
    # pod exiting 99 would fail its Job, which stops the other shards' pods mid-run)
    return EXIT_THRESHOLDS if outcome.thresholds_failed and part.is_whole else EXIT_OK


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    loaded = _from_file(args)
    try:
        return execute(
            loaded,
            shard=args.shard,
            shards=args.shards,
            barrier=Path(args.barrier) if args.barrier else None,
            barrier_timeout=args.barrier_timeout,
            barrier_lead=args.barrier_lead,
            directory=Path(args.directory) if args.directory else None,
        )
    except ConfigError as exc:  # found while starting (a port in use): name the flag if one
        raise name_flags(exc, RUN_FLAGS, args) from None


#: The one-sided commands: name -> (its flag table, help, description).
SIDES: dict[str, tuple[Sequence[Flag], str, str]] = {
    "devices": (
        DEVICE_FLAGS,
        "run a virtual device fleet",
        "Serve a virtual fleet until --duration or Ctrl-C; results as 'run'.",
    ),
    "platform": (
        PLATFORM_FLAGS,
        "send operations to devices at a rate and receive their responses",
        "The virtual platform against devices (ours or real); results as 'run'.",
    ),
}


def _side(args: argparse.Namespace) -> int:
    flags = (*SIDES[args.command][0], *RUN_FLAGS)
    try:
        return execute(one_sided_scenario(args, args.command, flags, ""))
    except ConfigError as exc:
        raise name_flags(exc, flags, args) from None


def north_scenario(args: argparse.Namespace, flags: Sequence[Flag]) -> LoadedScenario:
    """``loadgen north``: the application side with its devices; against loadgen's stand-in
    (sides = "north") unless ``--url`` names a real north API (sides = "north-devices")."""
    document: dict[str, Any] = {
        "campaign": {"name": "north", "sides": "north"},
        "north": {},
        "devices": {"http_port": 0},
    }
    try:
        build_document(document, flags, args)
        for assignment in args.set:
            apply_override(document, assignment)
        if document["north"].get("url"):
            document["campaign"]["sides"] = "north-devices"
        else:
            document.setdefault("platform", {}).setdefault("south", {}).setdefault("linger", 0)
        return LoadedScenario(validate_document(document, ""), document, "")
    except ConfigError as exc:
        raise name_flags(exc, flags, args) from None


def _north(args: argparse.Namespace) -> int:
    flags = (*NORTH_FLAGS, *RUN_FLAGS)
    try:
        return execute(north_scenario(args, flags))
    except ConfigError as exc:
        raise name_flags(exc, flags, args) from None


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.scenarios:
        missing: list[str] = []
        try:
            document = read_document(path)
            for assignment in args.set:
                apply_override(document, assignment)
            scenario = validate_document(document, path, missing=missing)
        except ConfigError as exc:
            failed += 1
            print(f"INVALID {exc}", flush=True)
            continue
        print(
            f"ok      {path}: campaign {scenario.campaign.name!r}, sides {scenario.campaign.sides}, "
            f"{scenario.load_seconds:g} s of load, {len(scenario.thresholds)} thresholds",
            flush=True,
        )
        for warning in scenario.warnings():
            print(f"        warning: {warning}", flush=True)
        if missing:
            print(
                f"        needs the environment variables {', '.join(sorted(set(missing)))} "
                "to run (validated with stand-ins)",
                flush=True,
            )
    return EXIT_CONFIG if failed else EXIT_OK


def _shards(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 or 'auto', got {text!r}")
    return count


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a campaign from a scenario file",
        description="Run the campaign a scenario file describes and write its results folder "
        "(summary.json, timeseries.csv, .hlog interval logs, report.html). Exit code 99 when a "
        "threshold failed, 130 when interrupted, 2 for a scenario error.",
    )
    run.add_argument("scenario", metavar="SCENARIO")
    _set_flag(run)
    add_flags(run, "run", RUN_FLAGS)
    scale = run.add_argument_group("scale")
    scale.add_argument("--shard", metavar="I/N", help="run shard I of N (devices and rate split)")
    scale.add_argument(
        "--shards", type=_shards, metavar="N", help="N shard processes here ('auto': one per core)"
    )
    scale.add_argument(
        "--barrier", metavar="DIR", help="start with the other shards that join this folder"
    )
    scale.add_argument(
        "--barrier-timeout", type=_seconds, metavar="S", help="wait at most S for them (60)"
    )
    scale.add_argument(
        "--barrier-lead", type=_seconds, metavar="S", help="start S after the last joins (1)"
    )
    scale.add_argument("--directory", metavar="DIR", help=argparse.SUPPRESS)  # exact folder
    run.set_defaults(func=_run)

    for name, (flags, summary, description) in SIDES.items():
        side = sub.add_parser(name, help=summary, description=description)
        add_flags(side, name, flags)
        add_flags(side, "run", RUN_FLAGS)
        _set_flag(side)
        side.set_defaults(func=_side)

    north = sub.add_parser(
        "north",
        help="create operation jobs on a north API and follow them to the devices and back",
        description="The application side (issue 10): jobs at a rate on OpenGate's north API "
        "(loadgen's stand-in unless --url), run by virtual devices here; latency per hop "
        "(job_accepted, dispatch, device_done, closed). Results as 'run'.",
    )
    add_flags(north, "north", NORTH_FLAGS)
    add_flags(north, "run", RUN_FLAGS)
    _set_flag(north)
    north.set_defaults(func=_north)

    check = sub.add_parser(
        "validate",
        help="check scenario files without running them",
        description="Validate scenario files (types, unknown keys, thresholds, environment "
        "variables) exactly as 'run' does before any load; exit 2 when one is invalid.",
    )
    check.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    _set_flag(check)
    check.set_defaults(func=_validate)
