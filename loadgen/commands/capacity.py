"""``loadgen capacity``: search the highest rate (or fleet size) a scenario's target sustains.

Argument parsing and the live lines only; the steps are ``loadgen.campaign.capacity_run``, the
search ``loadgen.campaign.capacity``. Exit code 0 when the search found a sustainable rate, 99
when the target failed at the first step, 2 for a scenario or usage error, 130 when interrupted
(``capacity.json`` then holds every step measured so far).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Final

import trio

from loadgen.campaign.capacity import SearchConfig, StepResult
from loadgen.campaign.capacity_run import (
    CAPACITY_JSON,
    CapacityOutcome,
    StepPlan,
    format_step,
    run_capacity,
)
from loadgen.commands.flags import add_flags, name_flags
from loadgen.commands.run import _from_file
from loadgen.commands.tables import RUN_FLAGS
from loadgen.dashboard.board import Board
from loadgen.dashboard.server import Controls, open_dashboard
from loadgen.errors import ConfigError
from loadgen.metrics.thresholds import parse_threshold
from loadgen.report.results import new_run_directory
from loadgen.units import parse_duration

__all__ = ["register"]

EXIT_NOTHING_PASSED = 99
#: The searches' defaults, from the records (a device count is searched in whole steps).
RATE_SEARCH = SearchConfig()
DEVICE_SEARCH = SearchConfig(start_rate=10, max_rate=100_000, integral=True)
PLAN = StepPlan()
#: The run commands' own rows (one validation, one message naming the flag, one default: the
#: scenario's ``output``): the results root, the HTML switch (capacity.html here), the dashboard.
_RESULTS: Final = tuple(
    dataclasses.replace(flag, help="skip capacity.html") if flag.option == "--no-html" else flag
    for flag in RUN_FLAGS
    if flag.option in ("--results", "--no-html")
)
_DASHBOARD: Final = tuple(
    flag for flag in RUN_FLAGS if flag.option in ("--dashboard", "--dashboard-token")
)


def _seconds(text: str) -> float:
    """``3``, ``3s``, ``500ms``: seconds."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = float(parse_duration(text))  # type: ignore[arg-type]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a duration, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0.01 or 1%, got {text!r}") from None


def _capacity(args: argparse.Namespace) -> int:
    loaded = _from_file(args, (*_RESULTS, *_DASHBOARD))  # the file, --set and flags, as run
    scenario = loaded.scenario
    output = scenario.output
    expressions = args.slo if args.slo else list(scenario.thresholds)
    slos = tuple(parse_threshold(text, key=f"--slo {text!r}") for text in expressions)
    plan = StepPlan(
        dimension=args.dimension,
        warmup=args.warmup,
        hold=args.hold,
        slos=slos,
        max_error_rate=args.max_error_rate,
        rate=args.rate,
    )
    base = DEVICE_SEARCH if args.dimension == "devices" else RATE_SEARCH
    config = dataclasses.replace(
        base,
        start_rate=base.start_rate if args.start_rate is None else args.start_rate,
        max_rate=base.max_rate if args.max_rate is None else args.max_rate,
        growth=args.growth,
        resolution=args.resolution,
        max_steps=args.max_steps,
    )
    root = Path(output.results)
    slo_text = ", ".join(expressions) or "none (achieved and error rate only)"
    print(f"capacity search of {scenario.campaign.name} by {args.dimension}; SLOs: {slo_text}")
    made: list[Path] = []

    def folder() -> Path:
        """The results folder, made once the dashboard (if any) serves: an address that cannot
        be served leaves nothing behind."""
        made.append(new_run_directory(root, f"{scenario.campaign.name}-capacity"))
        print(f"results: {made[0]}", flush=True)
        return made[0]

    board = Board(
        title=f"{scenario.campaign.name} capacity ({args.dimension})",
        sides=scenario.campaign.sides,
        total_seconds=float("inf"),
        kind="capacity",
    )

    def show(index: int, step: StepResult) -> None:
        print(format_step(index, step, args.dimension), flush=True)
        board.step(index, step.as_dict())

    async def search() -> CapacityOutcome:
        return await run_capacity(
            loaded, plan, config, directory=folder(), on_step=show, html=output.html
        )

    async def watched(address: str) -> CapacityOutcome:
        """The search with the live dashboard: its Stop ends the search as Ctrl-C does."""
        async with open_dashboard(board, address, token=output.dashboard_token) as server:
            stopped: list[bool] = []
            with trio.CancelScope() as scope:

                def stop() -> dict[str, Any]:
                    stopped.append(True)
                    scope.cancel()
                    return {"kind": "stop", "at_s": None, "steps": len(board.steps)}

                server.controls = Controls(stop=stop)
                outcome = await search()
                board.finish(None, "finished")
                return outcome
            board.finish(None, "stopped")
            raise KeyboardInterrupt  # the same end as Ctrl-C: exit 130, the steps so far kept

    try:
        if output.dashboard is not None:
            outcome = trio.run(watched, output.dashboard)
        else:
            outcome = trio.run(search)
    except KeyboardInterrupt:
        if made:
            print(f"\ninterrupted: the steps measured so far are in {made[0] / CAPACITY_JSON}")
        raise
    except ConfigError as exc:  # the dashboard's address (a port in use): name the flag if given
        raise name_flags(exc, _DASHBOARD, args) from None
    print()
    print(outcome.result.verdict_text())
    print(f"\nresults: {outcome.directory / CAPACITY_JSON}")
    if outcome.report is not None:
        print(f"report:  {outcome.report}")
    return 0 if outcome.result.max_sustainable_rate is not None else EXIT_NOTHING_PASSED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``loadgen capacity`` to the top-level subcommands."""
    cap = sub.add_parser(
        "capacity",
        help="find the highest rate (or fleet size) that meets the SLOs",
        description="Run the scenario's sides in steps (a warm-up, then a measured hold, at one "
        "rate each), doubling the rate while every SLO holds, then bisecting between the last "
        "passing and the first failing rate. Writes capacity.json and capacity.html under "
        "results/<campaign>-capacity/<UTC timestamp>/.",
    )
    cap.add_argument("scenario", metavar="SCENARIO")
    cap.add_argument(
        "--slo",
        action="append",
        metavar="EXPR",
        help="a step passes when this holds on its hold, e.g. 'p99(complete) < 500ms' "
        "(repeatable; default: the scenario's thresholds)",
    )
    cap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value")
    cap.add_argument(
        "--dimension",
        choices=["rate", "devices"],
        default="rate",
        help="search the offered rate, or the device count at a fixed --rate",
    )
    cap.add_argument(
        "--start-rate",
        type=float,
        metavar="R",
        help=f"first step (default {RATE_SEARCH.start_rate:g}/s; "
        f"{DEVICE_SEARCH.start_rate:g} devices)",
    )
    cap.add_argument(
        "--growth", type=float, default=RATE_SEARCH.growth, metavar="G",
        help="factor per step (default %(default)g)",
    )  # fmt: skip
    cap.add_argument(
        "--max-rate",
        type=float,
        metavar="R",
        help=f"highest step (default {RATE_SEARCH.max_rate:g}/s; "
        f"{DEVICE_SEARCH.max_rate:g} devices)",
    )
    cap.add_argument(
        "--resolution", type=float, default=RATE_SEARCH.resolution, metavar="F",
        help="stop when hi/lo - 1 <= F (default %(default)g)",
    )  # fmt: skip
    cap.add_argument(
        "--max-steps", type=int, default=RATE_SEARCH.max_steps, metavar="N",
        help="(default %(default)d)",
    )  # fmt: skip
    cap.add_argument(
        "--warmup", type=_seconds, default=PLAN.warmup, metavar="DURATION",
        help="of each step, not measured (default %(default)g s)",
    )  # fmt: skip
    cap.add_argument(
        "--hold", type=_seconds, default=PLAN.hold, metavar="DURATION",
        help="measured part of each step (default %(default)g s)",
    )  # fmt: skip
    cap.add_argument(
        "--max-error-rate",
        type=_fraction,
        default=PLAN.max_error_rate,
        metavar="F",
        help=f"failed + timed out + errors over issued (default {PLAN.max_error_rate * 100:g}%%)",
    )
    cap.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="R",
        help="the fixed rate of --dimension devices (default: the scenario's highest stage)",
    )
    add_flags(cap, "results", _RESULTS)
    add_flags(cap, "live dashboard of the steps", _DASHBOARD)
    cap.set_defaults(func=_capacity)
