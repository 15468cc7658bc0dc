"""``python -m loadgen.bench``: run the self-benchmark, print the table, save the figures."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path

import orjson

from loadgen.bench.httpbench import PairResult, parser_figures, run_pair

# Figures the issues ask for: (what, numerator row, denominator row, at least).
HTTP_TARGETS = (
    ("fast path vs h11, req/s per core", "fast", "h11", 4.0),
    ("fast path vs httpx/hypercorn, req/s per core", "fast", "httpx", 30.0),
)


def _table(rows: list[PairResult]) -> str:
    head = (
        f"{'pair':<28}{'req/s':>10}{'client µs/req':>15}{'server µs/req':>15}"
        f"{'req/s per core':>16}{'errors':>8}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        server_us = "n/a" if row.server_us is None else f"{row.server_us:.1f}"
        lines.append(
            f"{row.name:<28}{row.rps:>10.0f}{row.client_us:>15.1f}{server_us:>15}"
            f"{row.per_core:>16.0f}{row.errors:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per pair")
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)

    print(
        f"loadgen self-benchmark on {platform.node()} ({os.cpu_count()} cores), "
        f"Python {platform.python_version()}",
        flush=True,
    )
    parse = parser_figures()
    print(
        f"\nparse one request: fast path {parse['fast_parse_us']:.2f} µs, "
        f"h11 {parse['h11_parse_us']:.2f} µs "
        f"(x{parse['h11_parse_us'] / parse['fast_parse_us']:.1f})",
        flush=True,
    )
    print(
        "\nHTTP/1.1 on loopback: client on core 0, server on core 1, 16 keep-alive connections",
        flush=True,
    )
    pairs = [
        ("fast", "fast", "fast", "fast path (raw trio sockets)"),
        ("h11", "h11", "h11", "h11 (same server/pool, h11)"),
        ("httpx", "hypercorn", "httpx", "httpx client / hypercorn"),
    ]
    rows: dict[str, PairResult] = {}
    for key, server_kind, client_kind, label in pairs:
        rows[key] = run_pair(label, server_kind, client_kind, duration=args.duration)
        print(f"  measured {label}: {rows[key].rps:.0f} req/s", flush=True)
    print()
    print(_table(list(rows.values())))
    verdicts = []
    print()
    for what, num, den, target in HTTP_TARGETS:
        ratio = rows[num].per_core / rows[den].per_core if rows[den].per_core else float("inf")
        ok = ratio >= target
        verdicts.append({"figure": what, "ratio": round(ratio, 2), "target": target, "met": ok})
        print(f"{what}: x{ratio:.1f} (target >= x{target:g}) {'OK' if ok else 'BELOW TARGET'}")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / stamp
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "node": platform.node(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "parser": parse,
        "http_pairs": {key: row.as_dict() for key, row in rows.items()},
        "ratios": verdicts,
    }
    (out / "bench.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"\nfigures written to {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
