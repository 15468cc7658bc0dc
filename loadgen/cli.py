"""``loadgen`` command line: the commands of ``loadgen.commands``, errors and exit codes.

Exit codes: 0 success, 2 bad input (a usage, configuration or scenario error: one line on
stderr naming the flag, key or file and what was expected, never a traceback), 99 a threshold
failed (as k6), 130 interrupted, 1 a shard crashed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from loadgen import __version__
from loadgen.errors import ConfigError, first_of

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, like every other bad input, and takes
    no abbreviated flags (``--rat`` must not quietly mean ``--rate``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _bench(args: argparse.Namespace) -> int:
    from loadgen.bench.__main__ import main as bench_main

    return bench_main(args.bench_args)


def _registrars() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    from loadgen.commands.capacity import register as capacity
    from loadgen.commands.report import register as report
    from loadgen.commands.run import register as run
    from loadgen.commands.scale import register as scale

    return [run, capacity, report, scale]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadgen",
        description="Load generator for the OpenGate HTTP operations protocol.",
    )
    parser.add_argument("--version", action="version", version=f"loadgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(
            dest="command", metavar="COMMAND", required=True, parser_class=_Parser
        ),
    )
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
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:
        error = first_of(exc, ConfigError)
        if error is None:
            raise
        print(f"loadgen {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return code


if __name__ == "__main__":
    sys.exit(main())
