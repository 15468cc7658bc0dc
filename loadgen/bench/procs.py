"""Process plumbing shared by the benchmarks: peers in their own pinned processes.

A benchmark pair is two processes, each pinned to its own core when there are two, talking
over loopback; a peer announces itself with one line on stdout (``READY <port>``, ``WARM``,
then a JSON line), and CPU time is read from ``/proc`` for the measured window only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = [
    "TWO_CORES",
    "against_fast_peer",
    "core_args",
    "cpu_seconds",
    "expect",
    "fast_peer",
    "machine_control",
    "measure_pair",
    "pin",
    "spawn",
]

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


def measure_pair(
    server: tuple[str, list[str]], client: tuple[str, list[str]], what: str
) -> tuple[dict[str, Any], float | None]:
    """Run a server peer on core 1 and a client peer on core 0 against it.

    ``server`` and ``client`` are (module, arguments); the client gets ``--port`` from the
    server's ``READY`` line. Returns the client's JSON result and the server's CPU seconds over
    the client's measured window (between its ``WARM`` line and its result), or None off Linux.
    """
    server_process = spawn(server[0], [*server[1], *core_args(1)])
    try:
        port = expect(server_process.stdout, "READY", f"{what} server").split()[1]
        client_process = spawn(client[0], [*client[1], "--port", port, *core_args(0)])
        try:
            expect(client_process.stdout, "WARM", f"{what} client")
            cpu0 = cpu_seconds(server_process.pid)
            result: dict[str, Any] = orjson.loads(
                expect(client_process.stdout, "{", f"{what} client")
            )
            cpu1 = cpu_seconds(server_process.pid)
        finally:
            client_process.wait(timeout=60)
            _close_pipe(client_process)
    finally:
        server_process.terminate()
        server_process.wait(timeout=30)
        _close_pipe(server_process)
    return result, None if cpu0 is None or cpu1 is None else cpu1 - cpu0


def _close_pipe(process: subprocess.Popen[str]) -> None:
    if process.stdout is not None:
        process.stdout.close()


@contextmanager
def fast_peer() -> Iterator[tuple[int, int]]:
    """The fast peer server (``loadgen.bench.peer server --kind fast``) on core 1, for the
    ``with`` block: its (port, pid); stopped, and its pipe closed, on the way out."""
    server = spawn("loadgen.bench.peer", ["server", "--kind", "fast", *core_args(1)])
    try:
        port = int(expect(server.stdout, "READY", "fast server").split()[1])
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)
        _close_pipe(server)


def against_fast_peer(client: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run the peer ``client`` module (core 0) against the fast peer server (core 1), given
    ``--port`` and ``args``; its last stdout line, a JSON object."""
    with fast_peer() as (port, _):
        out = subprocess.run(
            [sys.executable, "-m", client, "--port", str(port), *args, *core_args(0)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            check=True,
        )  # fmt: skip
    result: dict[str, Any] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return result


def core_args(cpu: int) -> list[str]:
    """``--cpu N`` for a peer when this machine has two cores to pin to, else nothing."""
    return ["--cpu", str(cpu)] if TWO_CORES else []


def pin(cpu: int | None) -> None:
    """Pin this process to one core (when asked and possible)."""
    if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _burn(seconds: float) -> float:
    """Iterations of a fixed pure-Python loop per CPU-second of this process."""
    table: dict[int, int] = {}
    done = 0
    cpu0 = time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for i in range(1000):
            table[i % 97] = table.get(i % 97, 0) + i
        done += 1
    return done / (time.process_time() - cpu0)


def machine_control(seconds: float = 2.0) -> dict[str, float]:
    """How much one busy process slows another on this machine, for pure CPU work.

    The same loop runs alone, then as two processes at once (each pinned to its own core when
    there are two); the ratio is what any two-process figure (two shards) must be read against,
    since a VM's cores are not always independent.
    """
    alone = spawn("loadgen.bench.procs", ["burn", str(seconds), *core_args(0)])
    single = float(expect(alone.stdout, "", "burn").strip())
    alone.wait(timeout=60)
    pair = [spawn("loadgen.bench.procs", ["burn", str(seconds), *core_args(i)]) for i in (0, 1)]
    each = [float(expect(p.stdout, "", "burn").strip()) for p in pair]
    for process in pair:
        process.wait(timeout=60)
    return {
        "one_process": round(single, 1),
        "two_processes_each": round(sum(each) / 2, 1),
        "efficiency": round(sum(each) / 2 / single, 3),
    }


if __name__ == "__main__":  # python -m loadgen.bench.procs burn SECONDS [--cpu N]
    args = sys.argv[1:]
    if args[:1] != ["burn"]:
        raise SystemExit("usage: python -m loadgen.bench.procs burn SECONDS [--cpu N]")
    if "--cpu" in args:
        pin(int(args[args.index("--cpu") + 1]))
    print(_burn(float(args[1])), flush=True)
