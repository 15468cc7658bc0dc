"""Device-side benchmark: sync operations answered per core by the fleet, and bytes per device.

``device_figures`` runs the fleet's handler behind three servers in one run (the project's fast
path, the same server forced through h11, hypercorn via an ASGI adapter), each as a server
process pinned to core 1 with the project's fast client pinned to core 0 (separate processes,
``loadgen.bench.devicepeer``). The figure of merit is *operations per server CPU-second*: how
many sync operations one core of this machine answers with that server, which does not depend
on which side of the pair saturated first. The client's figures are returned beside it.

``memory_per_device`` starts an idle fleet of ``count`` devices and an empty one, each in a
fresh process, and divides the RSS difference by ``count``: what one idle device costs.

Both return plain numbers and print nothing; ``loadgen.bench.__main__`` formats them.
"""

from __future__ import annotations

import subprocess
import sys

import orjson

from loadgen.bench.procs import measure_pair

__all__ = ["SERVER_KINDS", "device_figures", "memory_per_device"]

#: (kind, label) of the servers compared, the reference last.
SERVER_KINDS = (
    ("fast", "device fleet, fast path"),
    ("h11", "device fleet, same server on h11"),
    ("hypercorn", "device fleet on hypercorn (ASGI)"),
)


def run_device_pair(
    kind: str,
    *,
    duration: float,
    warmup: float = 0.5,
    concurrency: int = 16,
    devices: int = 1000,
    count: int = 10_000,
) -> dict[str, object]:
    """One measured window of one server kind against the fast client."""
    result, server_cpu = measure_pair(
        ("loadgen.bench.devicepeer", ["server", "--kind", kind, "--count", str(count)]),
        (
            "loadgen.bench.devicepeer",
            [
                "client",
                "--devices",
                str(devices),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--concurrency",
                str(concurrency),
            ],
        ),
        f"device {kind}",
    )
    requests = int(result["requests"])
    wall = float(result["wall_s"])
    client_cpu = float(result["cpu_s"])
    return {
        "kind": kind,
        "operations": requests,
        "errors": int(result["errors"]),
        "wall_s": round(wall, 3),
        "ops_per_s": round(requests / wall, 1) if wall else 0.0,
        "server_cpu_s": server_cpu,
        "client_cpu_s": round(client_cpu, 3),
        "server_us_per_op": round(server_cpu / requests * 1e6, 2)
        if server_cpu and requests
        else None,
        "client_us_per_op": round(client_cpu / requests * 1e6, 2) if requests else None,
        # The figure of merit: sync operations answered per CPU-second of the fleet's core.
        "ops_per_core_s": round(requests / server_cpu, 1) if server_cpu else None,
    }


def device_figures(duration: float) -> list[dict[str, object]]:
    """Sync ops answered per second per core: the fleet on the fast path, on h11, on hypercorn.

    Each row also carries ``vs_h11`` (its ops per core over the h11 row's); the issue's target
    is ``vs_h11 >= 3`` for the fast path.
    """
    rows = []
    for kind, label in SERVER_KINDS:
        row = run_device_pair(kind, duration=duration)
        row["name"] = label
        rows.append(row)
    h11 = rows[1]["ops_per_core_s"]
    for row in rows:
        mine = row["ops_per_core_s"]
        ok = isinstance(mine, float) and isinstance(h11, float) and h11 > 0
        row["vs_h11"] = round(mine / h11, 2) if ok else None  # type: ignore[operator]
    return rows


def _fleet_rss(count: int) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "loadgen.bench.devicepeer", "memory", "--count", str(count)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(orjson.loads(out.stdout.splitlines()[-1])["rss_bytes"])


def memory_per_device(count: int = 100_000) -> dict[str, object]:
    """RSS of an idle fleet of ``count`` devices over an empty fleet, and per device.

    The issue's bound: 100,000 devices add at most 200 MB (2,000 bytes per device).
    """
    empty = _fleet_rss(0)
    full = _fleet_rss(count)
    delta = full - empty
    return {
        "count": count,
        "empty_rss_bytes": empty,
        "fleet_rss_bytes": full,
        "delta_bytes": delta,
        "bytes_per_device": round(delta / count, 1) if count else None,
        "within_200mb_per_100k": delta / count * 100_000 <= 200e6 if count else True,
    }
