"""``loadgen run SCENARIO --shards N``: N shard processes on this machine, merged at the end.

One process per core is how a Python load generator uses a machine: each shard is a whole
``loadgen run --shard i/N`` with its own event loop, its own devices and ``rate/N``; all meet at
the start barrier a pod uses (``loadgen.scale.barrier``, a folder in the run's results) and start
their load at one instant once every one is ready, write their own folder, and are merged exactly
(histograms added interval by interval) by the same code as ``loadgen merge``.

While they run, the same progress line as a single process shows the shards' sums: counters
from their ``counters.jsonl``, in flight and rates from their ``timeseries.csv``, and p99 from
their ``complete.hlog`` read as it grows and added into one histogram (exact, not an average
of percentiles). Ctrl-C is passed on to every shard (the first drains, the second cuts the
drain); the merged run is then marked interrupted and the exit code is 130. A shard that
crashes is reported; the others' data is kept and merged.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import orjson
from hdrh.histogram import HdrHistogram

from loadgen.campaign.progress import Progress
from loadgen.campaign.scenario import LoadedScenario
from loadgen.metrics.hdr import decode
from loadgen.metrics.intervals import Interval
from loadgen.report.console import format_summary
from loadgen.report.results import new_run_directory
from loadgen.scale.barrier import DEFAULT_LEAD, DEFAULT_TIMEOUT, decide, read_arrivals
from loadgen.scale.merge import merge_runs

__all__ = ["run_local_shards"]

POLL: Final = 1.0


def _last_counters(directory: Path) -> dict[str, int]:
    try:
        lines = (directory / "counters.jsonl").read_bytes().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            counters: dict[str, int] = orjson.loads(line)["counters"]
        except (orjson.JSONDecodeError, KeyError):
            continue
        return counters
    return {}


def _last_row(directory: Path) -> dict[str, str]:
    try:
        text = (directory / "timeseries.csv").read_text(encoding="utf-8")
    except OSError:
        return {}
    rows = list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1])))
    return rows[-1] if rows else {}


class _HlogTail:
    """The interval histograms a growing ``.hlog`` file gained since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new(self) -> list[HdrHistogram]:
        try:
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        out = []
        for line in complete.splitlines():
            if not line or line.startswith((b"#", b'"')):
                continue
            payload = line.rsplit(b",", 1)[-1]
            out.append(decode(payload))
        return out


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


class _Combined:
    """Builds one ``Interval`` a poll from the shards' folders, for the same ``Progress``."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.tails = [_HlogTail(folder / "complete.hlog") for folder in folders]
        self.previous: dict[str, int] = {}
        self.index = 0

    def interval(self, start: float, end: float, final: bool = False) -> Interval:
        totals: dict[str, int] = {}
        for folder in self.folders:
            for name, value in _last_counters(folder).items():
                totals[name] = totals.get(name, 0) + value
        changed = {k: v - self.previous.get(k, 0) for k, v in totals.items()}
        self.previous = totals
        rows = [_last_row(folder) for folder in self.folders]
        complete: HdrHistogram | None = None
        for tail in self.tails:
            for histogram in tail.new():
                if complete is None:
                    complete = histogram
                else:
                    complete.add(histogram)
        gauges: dict[str, object] = {
            "in_flight": int(sum(_number(row.get("in_flight")) for row in rows)),
            "queued": int(sum(_number(row.get("queued")) for row in rows)),
            "offered_rate": sum(_number(row.get("offered_rate")) for row in rows),
            "stage": next((row["stage"] for row in rows if row.get("stage")), ""),
        }
        self.index += 1
        histograms = {} if complete is None else {"complete": complete}
        return Interval(self.index, start, end, histograms, changed, totals, gauges, final)


def _released_at(barrier: Path, count: int) -> float | None:
    """The common start the shards computed, read from the same files (None until then)."""
    verdict = decide(
        read_arrivals(barrier),
        count=count,
        now=time.time(),
        timeout=DEFAULT_TIMEOUT,
        lead=DEFAULT_LEAD,
    )
    return verdict.at


def run_local_shards(loaded: LoadedScenario, *, shards: int | str = "auto") -> int:
    """Run ``shards`` processes of the scenario, show their sum, merge; the exit code."""
    from loadgen.report.rebuild import rebuild

    scenario = loaded.scenario
    count = (os.cpu_count() or 1) if shards == "auto" else int(shards)
    base = new_run_directory(Path(scenario.output.results), scenario.campaign.name)
    path = loaded.save(base / "scenario.toml")
    barrier = base / "barrier"
    folders = [base / f"shard-{i}-of-{count}" for i in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    for index, folder in enumerate(folders):
        command = [
            sys.executable, "-m", "loadgen", "run", str(path),
            "--shard", f"{index}/{count}", "--barrier", str(barrier),
            "--directory", str(folder), "--quiet",
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # the shards get Ctrl-C from here, once per press, not from the terminal
                start_new_session=True,
            )
        )
    quiet = scenario.output.progress == "quiet"
    progress = Progress(
        scenario.load_seconds, mode=scenario.output.progress, sides=scenario.campaign.sides
    )
    progress.notice(f"{count} shards started; the load begins when all are ready")
    start_at: float | None = None  # the barrier's instant, once every shard has joined
    combined = _Combined(folders)
    interrupts = 0
    last = 0.0
    while any(p.poll() is None for p in processes):
        try:
            time.sleep(POLL)
        except KeyboardInterrupt:
            interrupts += 1
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)  # each shard drains, or cuts its drain
            progress.notice(
                "SIGINT: the shards drain what is in flight — Ctrl-C again to stop now"
                if interrupts == 1
                else "stopping now: what is still in flight is recorded at its deadline"
            )
            continue
        if start_at is None:
            start_at = _released_at(barrier, count)
            continue
        now = max(0.0, time.time() - start_at)
        if now > 0 and not quiet:
            progress(combined.interval(last, now))
            last = now
    progress.finish()
    shutil.rmtree(barrier, ignore_errors=True)  # the shards' ready files: nothing to keep
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
    merge_runs(usable, base, incomplete=bool(crashed) or len(usable) < count)
    summary, report = rebuild(base)
    if not quiet:
        print(format_summary(summary))
    failed = f", {len(crashed)} failed" if crashed else ""
    print(f"\nresults: {base} (merged from {len(usable)} of {count} shards{failed})")
    print(f"report:  {report}")
    if crashed:
        return 1
    if interrupts or summary.get("interrupted"):
        return 130
    return 99 if any(not t.get("ok") for t in summary.get("thresholds", [])) else 0
