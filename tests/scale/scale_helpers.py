"""Shared helpers of the shard tests (a module with a unique name, no package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from loadgen.report.results import load_run


def _json(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(path.read_bytes())
    return record


def check_exact_merge(folders: list[Path], merged: Path, *, sent: int) -> None:
    """The merged folder is the exact sum of the shards (counts, counters, histograms)."""
    shards = [_json(folder / "summary.json") for folder in folders]
    total = _json(merged / "summary.json")
    assert not total["interrupted"]
    assert total["operations"]["sent"] == sent
    for key, value in total["operations"].items():
        assert value == sum(s["operations"][key] for s in shards), key
    for name, value in total["counters"].items():
        assert value == sum(s["counters"].get(name, 0) for s in shards), name
    merged_run = load_run(merged)
    for phase in ("ack", "complete", "callback"):
        count = total["latency_ms"][phase]["count"]
        assert count == sum(s["latency_ms"][phase]["count"] for s in shards), phase
        assert count == merged_run.totals[phase].get_total_count()


def start_spread(folders: list[Path]) -> float:
    starts = [_json(folder / "run.json")["started_at"] for folder in folders]
    return float(max(starts) - min(starts))
