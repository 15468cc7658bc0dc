"""``loadgen`` command line: argument parsing, exit codes, nothing else.

Each area registers its own subcommand (``register(subparsers)``) and does its work in its own
module; this file only wires them together and turns errors into exit codes:
0 success, 2 configuration or usage error, 99 a threshold failed (as k6), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from loadgen import __version__
from loadgen.errors import ConfigError

__all__ = ["main"]

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_THRESHOLDS = 99
EXIT_INTERRUPTED = 130


def _bench(args: argparse.Namespace) -> int:
    from loadgen.bench.__main__ import main as bench_main

    return bench_main(args.bench_args)


def _registrars() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    from loadgen.campaign.capacity_cli import register as capacity
    from loadgen.campaign.cli import register as campaign
    from loadgen.device.cli import register as devices
    from loadgen.platform.cli import register as platform
    from loadgen.report.cli import register as report
    from loadgen.scale.cli import register as scale

    return [campaign, capacity, devices, platform, report, scale]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgen",
        description="Load generator for the OpenGate HTTP operations protocol.",
    )
    parser.add_argument("--version", action="version", version=f"loadgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(sub)
    bench = sub.add_parser("bench", help="self-benchmark of this machine (as make bench)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
