"""The end-to-end figure of ``make bench`` (issue 10): north side -> OpenGate stand-in -> devices.

``loadgen north`` runs as a child process (``--shards 2`` on a 2-core machine: each shard holds
its own north side, stand-in and fleet) at a given job rate. Reported: jobs/s achieved, the
``closed`` p50/p99, whether the generator said it was saturated, CPU-seconds per job (all the
processes of the run, from ``getrusage(RUSAGE_CHILDREN)``: the robust figure on a shared machine)
and the resident memory of the process tree sampled every half second, compared between the
first and the last third of the load (flat: within 10 %). The load average is noted beside it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["north_figure"]

#: north -> stand-in -> sync devices answering at once: the platform's own cost per job.
_SCENARIO = """
[campaign]
name = "north-bench"
sides = "north"

# The three hops' connection pools are sized for the rate (Little's law: 2,500 jobs/s per process
# at ~20 ms per exchange under load keeps ~50 connections busy on each hop; 64 would queue).
[north]
close_by = "callback"
dispatch_timeout = "5s"
max_connections = 256

[north.arrival]
stages = [{{ duration = "{duration:g}s", rate = {rate:g} }}]

[north.timeouts]
timeout = "10s"

[[north.mix]]
name = "REFRESH_INFO"

[platform]
max_connections = 256

[platform.north]
callback_connections = 256

[devices]
count = {devices}
http_port = 0

[devices.default]
flow = "sync"
"""

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants (Linux /proc; 0 elsewhere)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * _PAGE
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += rss.get(pid, 0)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return total


def north_figure(
    rate: float, duration: float, *, processes: int = 2, devices: int = 0
) -> dict[str, Any]:
    """``processes`` independent ``loadgen run`` processes (north side + stand-in + fleet each)
    at ``rate / processes`` jobs/s for ``duration`` s; their figures, summed.

    Separate processes rather than ``--shards``: the shard splitter does not split the north
    side's rate yet (and empties the stand-in's placeholder target range): see the report."""
    share = rate / processes
    # A job holds its device until it closes: the fleet must exceed rate x closed latency
    # with room for a slow second (README, "Correlation").
    devices = devices or max(2000, int(share * 2))
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-north-") as tmp:
        load_before = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        procs = []
        for i in range(processes):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            scenario = folder / "north-bench.toml"
            scenario.write_text(_SCENARIO.format(rate=share, duration=duration, devices=devices))
            command = [
                sys.executable, "-m", "loadgen", "run", str(scenario),
                "--results", str(folder), "--progress", "quiet",
            ]  # fmt: skip
            procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        samples: list[tuple[float, int]] = []
        while any(proc.poll() is None for proc in procs):
            samples.append(
                (time.perf_counter() - started, sum(_tree_rss(proc.pid) for proc in procs))
            )
            time.sleep(0.5)
        summaries = []
        for i, proc in enumerate(procs):
            _, stderr = proc.communicate()
            found = sorted((Path(tmp) / str(i)).glob("north-bench/*/summary.json"))
            if proc.returncode not in (0, 99) or not found:
                return {"rate": rate, "error": f"exit {proc.returncode}: {stderr.strip()[-300:]}"}
            summaries.append(orjson.loads(found[-1].read_bytes()))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    created = sum(int(s.get("jobs", {}).get("created", 0)) for s in summaries)
    closed = [s["latency_ms"].get("closed", {}) for s in summaries]
    generators = [s.get("generator", {}) for s in summaries]
    # Memory over the load (after start-up, before the drain), in thirds. The first third fills
    # what is kept for a time window (finished jobs for N2/N3, ended ids for late messages:
    # ``keep_finished``, the close timeout + 10 s); flat means the last third is within 10 %
    # of the middle one, with the first third printed beside them.
    loaded = [rss for at, rss in samples if 2.0 <= at <= duration + 1.0] or [
        rss for _, rss in samples
    ]
    third = max(1, len(loaded) // 3)
    first = sum(loaded[:third]) / third
    middle_part = loaded[third:-third] or loaded[:third]
    early = sum(middle_part) / len(middle_part)
    late = sum(loaded[-third:]) / third
    return {
        "rate": rate,
        "duration_s": duration,
        "processes": processes,
        "devices_per_process": devices,
        "jobs_created": created,
        "jobs_closed": sum(int(s.get("jobs", {}).get("closed", 0)) for s in summaries),
        "jobs_rejected": sum(int(s.get("jobs", {}).get("rejected", 0)) for s in summaries),
        "jobs_per_s": round(sum(float(s.get("achieved_rate") or 0) for s in summaries), 1),
        # The union's p99 is not the max of the parts' p99s, but it lies between them.
        "closed_p50_ms": [c.get("p50") for c in closed],
        "closed_p99_ms": [c.get("p99") for c in closed],
        # Where the tail comes from: each hop's p99 (from the intended creation time), per process.
        "hops_p99_ms": {
            hop: [s["latency_ms"].get(hop, {}).get("p99") for s in summaries]
            for hop in ("job_accepted", "dispatch", "device_done", "closed")
        },
        "loop_lag_p99_ms": [g.get("loop_lag_p99_ms") for g in generators],
        "cpu_percent": [g.get("cpu_percent") for g in generators],
        "saturated": any(bool(g.get("saturated")) for g in generators),
        "saturation_reasons": sorted({r for g in generators for r in g.get("reasons", [])}),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_job": round(cpu / created * 1e3, 3) if created else None,
        "rss_mb_first_third": round(first / 1e6, 1),
        "rss_mb_middle_third": round(early / 1e6, 1),
        "rss_mb_last_third": round(late / 1e6, 1),
        "rss_change": round(late / early - 1, 3) if early else None,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average": round(load_before, 2),
    }
