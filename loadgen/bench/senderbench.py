"""Sender benchmark: sync operations per second per core of the virtual platform's sender.

Two processes per measurement, as in ``httpbench``: the peer server (``loadgen.bench.peer server
--kind fast``, our fast HTTP server answering every operation request synchronously with a canned
response) pinned to core 1, and the sender (``loadgen.bench.senderpeer``) pinned to core 0. The
sender is the whole virtual platform (``run_platform`` in the closed model, saturating), so the
figure includes everything an operation costs the platform: schedule, mix, id, body, in-flight
table, deadline heap, HDR recording and the HTTP exchange. The reference in the same run is an
httpx-based sender doing the same operations the obvious way.

The figure that matters is *operations per CPU-second of the sender process*: it does not depend
on which side of the pair saturates first.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from loadgen.bench.procs import measure_pair

__all__ = ["TARGET_PER_CORE", "TARGET_RATIO", "sender_figures"]

TARGET_PER_CORE = 25_000.0
TARGET_RATIO = 20.0


def _measure(kind: str, duration: float, warmup: float, concurrency: int) -> dict[str, Any]:
    result, server_cpu = measure_pair(
        ("loadgen.bench.peer", ["server", "--kind", "fast"]),
        (
            "loadgen.bench.senderpeer",
            [
                "--kind",
                kind,
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--concurrency",
                str(concurrency),
            ],
        ),
        f"{kind} sender",
    )
    ops, cpu, wall = result["operations"], result["cpu_s"], result["wall_s"]
    return {
        "sender": kind,
        "operations": ops,
        "errors": result["errors"],
        "wall_s": round(wall, 3),
        "sender_cpu_s": round(cpu, 3),
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 3),
        "ops_per_s": round(ops / wall, 1) if wall else 0.0,
        "cpu_us_per_op": round(cpu / ops * 1e6, 2) if ops else None,
        "ops_per_cpu_s": round(ops / cpu, 1) if cpu else 0.0,
    }


def sender_figures(duration: float = 3.0, *, warmup: float = 1.0) -> list[dict[str, Any]]:
    """One row per sender (``platform``, then the ``httpx`` reference), plus the verdicts in
    the platform row: ``per_core_target`` (ops per CPU-second >= 25,000) and ``ratio_vs_httpx``
    (>= 20)."""
    rows = [
        _measure("platform", duration, warmup, concurrency=64),
        _measure("httpx", duration, warmup, concurrency=16),
    ]
    ours, reference = rows
    ratio = (
        ours["ops_per_cpu_s"] / reference["ops_per_cpu_s"] if reference["ops_per_cpu_s"] else None
    )
    ours["ratio_vs_httpx"] = None if ratio is None else round(ratio, 1)
    ours["per_core_target"] = TARGET_PER_CORE
    ours["per_core_met"] = ours["ops_per_cpu_s"] >= TARGET_PER_CORE
    ours["ratio_target"] = TARGET_RATIO
    ours["ratio_met"] = ratio is not None and ratio >= TARGET_RATIO
    return rows


if __name__ == "__main__":
    for row in sender_figures(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0):
        print(orjson.dumps(row).decode())
