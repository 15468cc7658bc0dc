"""The system figures of ``make bench`` beyond the HTTP pairs.

- **callback loop**: the platform's south API receiving device POSTs (parse, validate, correlate,
  count) on the fast server, on h11 and under hypercorn; messages per CPU-second of the server.
- **scheduler lateness at 50% of the sender ceiling**: the open model paced at half the measured
  closed-model ceiling; how late sends are after their intended times.
- **shards**: the sender with 1 shard process vs 2 at once against the same fast server, each
  at the same open-model rate; operations per sender CPU-second (sharding must cost nothing per
  core), with the server's CPU share reported beside it because this machine has two cores.
- **merge**: the time to merge 100 shard result folders exactly.

Each pair runs as separate pinned processes, like ``httpbench``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from loadgen.bench.procs import (
    TWO_CORES,
    against_fast_peer,
    cpu_seconds,
    expect,
    fast_peer,
    measure_pair,
    spawn,
)

__all__ = ["callback_figures", "merge_figure", "pacing_figure", "shard_figures"]


def callback_figures(duration: float = 3.0) -> list[dict[str, Any]]:
    rows = []
    for kind, label in (
        ("fast", "south API, fast path"),
        ("h11", "south API, h11"),
        ("hypercorn", "south API, hypercorn ASGI"),
    ):
        result, server_cpu = measure_pair(
            ("loadgen.bench.southpeer", ["server", "--kind", kind]),
            ("loadgen.bench.southpeer", ["client", "--duration", str(duration)]),
            f"south API {kind}",
        )
        requests = result["requests"]
        rows.append(
            {
                "name": label,
                "kind": kind,
                "messages": requests,
                "errors": result["errors"],
                "messages_per_s": round(requests / result["wall_s"], 1),
                "server_us_per_message": round(server_cpu / requests * 1e6, 2)
                if server_cpu and requests
                else None,
                "messages_per_core_s": round(requests / server_cpu, 1) if server_cpu else None,
            }
        )
    h11 = rows[1]["messages_per_core_s"]
    for row in rows:
        mine = row["messages_per_core_s"]
        row["vs_h11"] = round(mine / h11, 2) if mine and h11 else None
    return rows


def pacing_figure(rate: float, duration: float = 4.0) -> dict[str, Any]:
    return against_fast_peer(
        "loadgen.bench.pacepeer", ["--rate", f"{rate:.1f}", "--duration", str(duration)], 120
    )


def _pacers(port: int, count: int, rate: float, duration: float) -> list[dict[str, Any]]:
    pacers = [
        spawn(
            "loadgen.bench.pacepeer",
            [
                "--port", str(port), "--rate", f"{rate:.1f}", "--duration", str(duration),
                *(["--cpu", str(i % 2)] if TWO_CORES else []),
            ],
        )
        for i in range(count)
    ]  # fmt: skip
    try:
        return [orjson.loads(expect(pacer.stdout, "{", "pacer")) for pacer in pacers]
    finally:
        for pacer in pacers:
            pacer.wait(timeout=120)


def shard_figures(rate: float = 4000.0, duration: float = 3.0) -> dict[str, Any]:
    """Sender operations per CPU-second of one shard process, then of each of two at once.

    Every shard runs the open model at the same ``rate`` (a shard's share of a campaign), well
    below its ceiling. The target server is pinned to core 1 in both cases, so with two shards
    the one on core 0 shares its core with nothing, exactly like the single shard: comparing
    the two isolates what sharding itself costs per core. The shard on core 1 shares its core
    with the target server (this machine has two cores), and its figure is reported beside.
    """
    out: dict[str, Any] = {"rate_per_shard": rate}
    for shards in (1, 2):
        with fast_peer() as (port, server):
            wall0, cpu0 = time.perf_counter(), cpu_seconds(server)
            results = _pacers(port, shards, rate, duration)
            wall1, cpu1 = time.perf_counter(), cpu_seconds(server)
        per_shard = [
            round(int(r["sent"]) / float(r["load_cpu_s"]), 1) if r["load_cpu_s"] else None
            for r in results
        ]
        operations = sum(int(r["sent"]) for r in results)
        sender_cpu = sum(float(r["load_cpu_s"]) for r in results)
        server_share = (
            None
            if cpu0 is None or cpu1 is None
            else round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1)
        )
        out[f"{shards}_shard"] = {
            "shards": shards,
            "operations": operations,
            "completed": sum(int(r["completed"]) for r in results),
            "ops_per_sender_cpu_s": round(operations / sender_cpu, 1) if sender_cpu else None,
            "per_shard_ops_per_cpu_s": per_shard,
            "server_cpu_percent": server_share,
            "saturated": any(r["saturated"] for r in results),
        }
    one = out["1_shard"]["ops_per_sender_cpu_s"]
    two = out["2_shard"]["ops_per_sender_cpu_s"]
    alone = out["2_shard"]["per_shard_ops_per_cpu_s"][0]
    out["efficiency"] = round(two / one, 3) if one and two else None
    out["efficiency_core_alone"] = round(alone / one, 3) if one and alone else None
    return out


def _write_shards(root: Path, count: int, intervals: int) -> list[Path]:
    from loadgen.metrics.intervals import Interval
    from loadgen.metrics.registry import Metrics
    from loadgen.report.results import RunWriter

    folders = []
    for shard in range(count):
        metrics = Metrics(["complete", "ack"])
        folder = root / f"shard-{shard}"
        folder.mkdir()
        writer = RunWriter(folder, 1_764_000_000.0, {"campaign": "bench-merge", "interval": 1.0})
        for index in range(intervals):
            for value in range(1, 500):
                latency = value * 1e-4 * (1 + shard % 7)
                metrics.phase("complete").record(latency, latency / 2)
                metrics.phase("ack").record(value * 1e-5, value * 1e-5)
            metrics.count("ops.sent", 499)
            metrics.count("ops.completed", 499)
            histograms = {r.name: r.rollover() for r in metrics.recorders()}
            writer(
                Interval(
                    index,
                    float(index),
                    index + 1.0,
                    histograms,
                    {},
                    dict(metrics.counters),
                    {},
                    final=index == intervals - 1,
                )
            )
        writer.close()
        folders.append(folder)
    return folders


def merge_figure(count: int = 100, intervals: int = 10) -> dict[str, Any]:
    """Seconds to merge ``count`` shard folders of ``intervals`` intervals, 4 recorders each."""
    from loadgen.scale.merge import merge_runs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = _write_shards(root, count, intervals)
        start = time.perf_counter()
        merge_runs(folders, root / "merged")
        seconds = time.perf_counter() - start
    return {
        "shards": count,
        "intervals_each": intervals,
        "interval_logs": count * 4,
        "merge_s": round(seconds, 3),
    }
