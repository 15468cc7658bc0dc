"""``loadgen report RESULTS_DIR`` and ``loadgen compare A B``.

``report`` rebuilds ``summary.json`` and ``report.html`` from what is on disk (the way to finish
a run that was killed, or to redraw an old one with a newer loadgen) and prints the summary.
It reports, it does not judge: the exit code is 0 even when a threshold failed, because the run
that failed it already said so with its own exit code.

The work is imported inside each command so that ``loadgen --help`` does not load matplotlib.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["compare_main", "register", "report_main"]

EXIT_REGRESSION = 99  # as a failed threshold


def report_main(args: argparse.Namespace) -> int:
    from loadgen.report.console import format_summary
    from loadgen.report.rebuild import rebuild

    directory: Path = args.results_dir
    summary, report = rebuild(directory)
    print(format_summary(summary))
    print()
    print(f"summary: {directory / 'summary.json'}")
    print(f"report:  {report}")
    return 0


def compare_main(args: argparse.Namespace) -> int:
    from loadgen.report.compare import compare

    text, regressions = compare(args.a, args.b)
    print(text)
    return EXIT_REGRESSION if regressions and args.fail_on_regression else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = subparsers.add_parser(
        "report",
        help="rebuild summary.json and report.html from a results folder (also after a kill)",
        description="Rebuild summary.json and report.html from the HdrHistogram logs, counters "
        "and time series of a results folder, and print the summary.",
    )
    report.add_argument("results_dir", type=Path, metavar="RESULTS_DIR")
    report.set_defaults(func=report_main)
    compare = subparsers.add_parser(
        "compare",
        help="compare two runs and mark regressions",
        description="Compare two runs (results folders or summary.json files): rates, "
        "operation counts, error rate and latency percentiles per phase, B against A.",
    )
    compare.add_argument("a", type=Path, metavar="A", help="the baseline run")
    compare.add_argument("b", type=Path, metavar="B", help="the run compared with it")
    compare.add_argument(
        "--fail-on-regression",
        action="store_true",
        help=f"exit {EXIT_REGRESSION} when B regressed against A (for CI)",
    )
    compare.set_defaults(func=compare_main)
