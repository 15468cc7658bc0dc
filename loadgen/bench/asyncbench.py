"""The async loop of ``make bench``: its ceiling beside the sync loop's, and bytes in flight.

- **ceiling**: both sides on loopback in 2 shard processes (``loadgen run --shards``), every
  operation acknowledged then answered by one final POST after ``final`` seconds (1 s). The rate
  climbs a ladder (x1.25 a rung) until a rung is not clean: the generator saturated, an operation
  timed out or failed to get an answer, or ``complete`` p99 above the device's delay + 100 ms.
  The ceiling is the last clean rung. The sync loop (the same runs with the sync flow, ``complete``
  p99 within 100 ms) climbs the same way, as the in-run reference; its ``ceiling_10ms`` is the
  last rung before the first whose ``complete`` p99 is over 10 ms. 100,000 devices addressed in
  turn: a device gets its next operation seconds after its last one ended, so no operation
  queues behind another at its device (a device runs one at a time: with 10,000 devices at
  4,000 ops/s, a tenth of the operations would wait a whole final delay for their turn).
- **bytes per operation in flight** on each side (``loadgen.bench.inflightmem``): the fleet with
  50,000 operations waiting for their final, the platform likewise (tracemalloc: exact).

The ceiling is a timing: on a machine shared with other work it is lower than the machine's
(other processes take the cores); the bytes are not.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import orjson

from loadgen.bench.inflightmem import fleet_bytes_per_operation, platform_bytes_per_operation

__all__ = ["async_loop_figures", "inflight_memory_figures"]

LADDER: Final = 1.25
SLACK_MS: Final = 100.0  # complete p99 allowed above the device's own delay
#: The sync loop's second ceiling (issue 17): the last rung of the climb's unbroken run of clean
#: rungs with complete p99 within this, so the rate is read beside a latency a user would accept.
TIGHT_P99_MS: Final = 10.0


def _scenario(flow: str, rate: float, duration: float, final: float) -> str:
    final_delay = (
        f'delays.final = {{ kind = "fixed", value = "{final}s" }}' if flow != "sync" else ""
    )
    return f"""thresholds = []
[campaign]
name = "bench-{flow}"
sides = "both"
shards = 2
[devices]
count = 100000
http_port = 0
seed = 1
[devices.default]
flow = "{flow}"
{final_delay}
[platform]
seed = 1
device_choice = "round-robin"
[platform.south]
linger = "0s"
[platform.arrival]
stages = [{{ duration = "{duration}s", rate = {rate:.0f} }}]
[platform.timeouts]
timeout = "10s"
[[platform.mix]]
name = "REFRESH_INFO"
"""


def run_rung(flow: str, rate: float, *, duration: float, final: float) -> dict[str, Any]:
    """One run at ``rate``: what the summary says, and whether it was clean."""
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-") as tmp:
        root = Path(tmp)
        scenario = root / "scenario.toml"
        scenario.write_text(_scenario(flow, rate, duration, final), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "loadgen", "run", str(scenario), "--results",
             str(root / "results"), "-q", "--no-html"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        summaries = sorted((root / "results").glob("*/*/summary.json"))
        if not summaries:
            return {"rate": rate, "clean": False, "reason": done.stderr.strip()[-300:]}
        summary = orjson.loads(summaries[-1].read_bytes())
    ops = summary["operations"]
    complete = (summary["latency_ms"].get("complete") or {}).get("p99")
    generator = summary.get("generator") or {}
    bound = (final * 1000.0 if flow != "sync" else 0.0) + SLACK_MS
    reasons = list(generator.get("reasons") or []) if generator.get("saturated") else []
    if ops["timed_out"] or ops["errors"]:
        reasons.append(f"{ops['timed_out']} timed out, {ops['errors']} errors")
    if complete is None or complete > bound:
        reasons.append(f"complete p99 {complete} ms > {bound:.0f} ms")
    return {
        "rate": rate,
        "sent": ops["sent"],
        "completed": ops["completed"],
        "complete_p99_ms": complete,
        "ack_p99_ms": (summary["latency_ms"].get("ack") or {}).get("p99"),
        "lateness_p99_ms": (generator.get("lateness_ms") or {}).get("p99"),
        "saturated": bool(generator.get("saturated")),
        "clean": not reasons,
        "reason": "; ".join(reasons),
    }


def _climb(flow: str, start: float, rungs: int, duration: float, final: float) -> dict[str, Any]:
    rows = []
    rate = start
    for _ in range(rungs):
        row = run_rung(flow, rate, duration=duration, final=final)
        rows.append(row)
        if not row["clean"]:
            break
        rate *= LADDER
    clean = [row["rate"] for row in rows if row["clean"]]
    tight = None  # the last rung before the first one past TIGHT_P99_MS (no noise picked)
    for row in rows:
        p99 = row["complete_p99_ms"]
        if not row["clean"] or p99 is None or p99 > TIGHT_P99_MS:
            break
        tight = row["rate"]
    return {
        "flow": flow,
        "ceiling_ops_per_s": max(clean) if clean else None,
        "ceiling_10ms_ops_per_s": tight,
        "rungs": rows,
    }


def async_loop_figures(duration: float = 3.0, final: float = 1.0, rungs: int = 8) -> dict[str, Any]:
    """The async loop's ceiling (2 shards, ``final`` s final delay) and the sync loop's."""
    return {
        "final_delay_s": final,
        "shards": 2,
        "async": _climb("async", 4000.0, rungs, duration, final),
        "sync": _climb("sync", 8000.0, rungs, duration, final),
    }


def inflight_memory_figures(count: int = 50_000) -> dict[str, Any]:
    """Bytes per operation in flight: the fleet (async, waiting for the final) and the platform
    (acknowledged, waiting for the final), ``count`` operations each."""
    return {
        "fleet": fleet_bytes_per_operation(count),
        "fleet_update_steps": fleet_bytes_per_operation(count, "UPDATE", "async-multi"),
        "platform": platform_bytes_per_operation(count),
        "platform_update": platform_bytes_per_operation(count, "UPDATE"),
    }
