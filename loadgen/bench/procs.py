"""Process plumbing shared by the benchmarks: peers in their own pinned processes.

A benchmark pair is two processes, each pinned to its own core when there are two, talking
over loopback; a peer announces itself with one line on stdout (``READY <port>``, ``WARM``,
then a JSON line), and CPU time is read from ``/proc`` for the measured window only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

__all__ = ["TWO_CORES", "core_args", "cpu_seconds", "expect", "pin", "spawn"]

TWO_CORES = (os.cpu_count() or 1) >= 2
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def spawn(module: str, args: list[str]) -> subprocess.Popen[str]:
    """``python -m module args...`` with its stdout readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )


def expect(stream: IO[str] | None, prefix: str, what: str) -> str:
    """The next line of a peer, which must start with ``prefix``."""
    assert stream is not None
    line = stream.readline()
    if not line.startswith(prefix):
        raise RuntimeError(f"benchmark {what} said {line!r}, expected {prefix!r}")
    return line


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def core_args(cpu: int) -> list[str]:
    """``--cpu N`` for a peer when this machine has two cores to pin to, else nothing."""
    return ["--cpu", str(cpu)] if TWO_CORES else []


def pin(cpu: int | None) -> None:
    """Pin this process to one core (when asked and possible)."""
    if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})
