"""``loadgen run SCENARIO --shards N``: N shard processes on this machine, merged at the end.

One process per core is how a Python load generator uses a machine: each shard is a whole
``loadgen run --shard i/N`` with its own event loop, its own devices and ``rate/N``; all start at
the same wall-clock instant (``--start-at``), write their own folder, and are merged exactly
(histograms added interval by interval) by the same code as ``loadgen merge``. While they run,
one combined progress line sums their ``counters.jsonl``. A shard that crashes is reported; the
others' data is kept and merged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import orjson

from loadgen.campaign.scenario import load_scenario
from loadgen.report.results import new_run_directory
from loadgen.report.summary import format_summary
from loadgen.scale.merge import merge_runs

__all__ = ["run_local_shards"]

START_LEAD: Final = 3.0  # seconds between spawning the shards and their common start
POLL: Final = 1.0


def _last_counters(directory: Path) -> dict[str, int]:
    path = directory / "counters.jsonl"
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            counters: dict[str, int] = orjson.loads(line)["counters"]
        except (orjson.JSONDecodeError, KeyError):
            continue
        return counters
    return {}


def run_local_shards(
    scenario_path: Path,
    *,
    overrides: Sequence[str] = (),
    shards: int | str = "auto",
    results_root: Path | None = None,
    quiet: bool = False,
) -> int:
    from loadgen.report.rebuild import rebuild

    loaded = load_scenario(scenario_path, overrides)
    count = (os.cpu_count() or 1) if shards == "auto" else int(shards)
    root = results_root or Path(loaded.scenario.output.results)
    base = new_run_directory(root, loaded.scenario.campaign.name)
    start_at = time.time() + START_LEAD
    folders = [base / f"shard-{i}-of-{count}" for i in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    for index, folder in enumerate(folders):
        command = [
            sys.executable, "-m", "loadgen", "run", str(scenario_path),
            "--shard", f"{index}/{count}", "--start-at", f"{start_at:.3f}",
            "--directory", str(folder), "--quiet",
        ]  # fmt: skip
        for assignment in overrides:
            command += ["--set", assignment]
        processes.append(
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        )
    print(f"{count} shards started, load begins at {time.ctime(start_at)}", file=sys.stderr)
    try:
        while any(p.poll() is None for p in processes):
            time.sleep(POLL)
            if not quiet:
                totals: dict[str, int] = {}
                for folder in folders:
                    for name, value in _last_counters(folder).items():
                        totals[name] = totals.get(name, 0) + value
                running = sum(p.poll() is None for p in processes)
                print(
                    f"{max(0.0, time.time() - start_at):6.1f}s  shards running {running}/{count}"
                    f"  sent {totals.get('ops.sent', 0)}  completed {totals.get('ops.completed', 0)}"
                    f"  timed out {totals.get('ops.timed_out', 0)}  errors {totals.get('ops.errors', 0)}",
                    file=sys.stderr,
                    flush=True,
                )
    except KeyboardInterrupt:
        for process in processes:
            process.send_signal(2)  # each shard drains and writes its results
        for process in processes:
            process.wait()
    crashed = [
        (index, process.returncode)
        for index, process in enumerate(processes)
        if process.returncode not in (0, 99, 130)
    ]
    for index, code in crashed:
        print(f"shard {index}/{count} failed with exit code {code}", file=sys.stderr)
    usable = [folder for folder in folders if (folder / "run.json").exists()]
    if not usable:
        print("no shard left any results", file=sys.stderr)
        return 1
    merge_runs(usable, base)
    summary, report = rebuild(base)
    if not quiet:
        print(format_summary(summary))
    failed = f", {len(crashed)} failed" if crashed else ""
    print(f"\nresults: {base} (merged from {len(usable)} of {count} shards{failed})")
    print(f"report:  {report}")
    if crashed:
        return 1
    return 99 if any(not t.get("ok") for t in summary.get("thresholds", [])) else 0
