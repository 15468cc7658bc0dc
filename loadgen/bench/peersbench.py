"""In-run peers and the limit for the sender: a C epoll server as the target, Locust beside us.

Three processes, two at a time, as in the other pairs (client on core 0, server on core 1):

- the **target** is ``cserver/epoll_server.c``, a minimal HTTP/1.1 keep-alive server in C,
  compiled here with the system compiler (``cc``/``gcc``) into a temporary directory. It answers
  every request with a device's synchronous answer that fits the request, so it is the cheapest
  device a sender can meet: its CPU per request is the floor of one HTTP exchange over loopback on
  this machine, the physical-limit reference for the sender's own CPU per operation;
- **our sender** is the virtual platform in the closed model (``senderpeer --kind platform``, as
  in section [4]), 64 connections;
- **Locust** (``FastHttpUser``, 64 users, ``locustfile.py``) does the same operation against
  the same target, run headless as its own process.

The figure is *operations per CPU-second of the client process* over a measured window that
starts after the warm-up, for both clients; their ratio is the issue's "vs Locust, per core".
Without a compiler the section is skipped with a note; without Locust (the optional ``bench``
extra) its row is skipped with the command that installs it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from loadgen.bench.locustfile import RESULT_PREFIX, WARM_LINE
from loadgen.bench.procs import TWO_CORES, core_args, cpu_seconds, expect, spawn

__all__ = [
    "CONNECTIONS",
    "LOCUST_MISSING",
    "SOURCE",
    "TARGET_VS_LOCUST",
    "build_c_server",
    "c_server",
    "compiler",
    "locust_command",
    "peer_figures",
]

SOURCE = Path(__file__).with_name("cserver") / "epoll_server.c"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
TARGET_VS_LOCUST = 3.5
CONNECTIONS = 64
LOCUST_MISSING = "not installed: pip install -e '.[bench]'"


def compiler() -> str | None:
    """The system C compiler, if there is one."""
    return shutil.which("cc") or shutil.which("gcc")


def build_c_server(directory: Path, cc: str) -> Path:
    """Compile the C target into ``directory``; a failed build raises with the compiler's
    first error line."""
    binary = directory / "epoll_server"
    done = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(SOURCE)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise RuntimeError(f"{cc} could not build {SOURCE.name}: {first}")
    return binary


def locust_command() -> list[str] | None:
    """How to run Locust: this interpreter's module when the ``bench`` extra is installed,
    else a ``locust`` on PATH (another environment), else None."""
    if importlib.util.find_spec("locust") is not None:
        return [sys.executable, "-m", "locust"]
    found = shutil.which("locust")
    return [found] if found else None


def _pinned(cpu: int | None) -> Callable[[], None] | None:
    # Pinned before exec, so that every thread the peer starts later inherits the core.
    if cpu is None or not TWO_CORES or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def c_server(binary: Path, cpu: int | None = 1) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The C target running (pinned to ``cpu`` unless None): (process, port)."""
    process = subprocess.Popen(
        [str(binary), "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pinned(cpu),  # safe: the bench process starts no threads of its own
    )
    try:
        port = int(expect(process.stdout, "READY", "C server").split()[1])
        yield process, port
    finally:
        process.terminate()
        _finish(process, 30)


def _line(stream: IO[str] | None, prefix: str, what: str) -> str:
    """The next line of a chatty peer that starts with ``prefix`` (others are skipped)."""
    assert stream is not None
    for line in stream:
        if line.startswith(prefix):
            return line
    raise RuntimeError(f"{what} ended before it printed {prefix!r}")


def _row(
    ops: int, errors: int, cpu: float, wall: float, server_cpu: float | None
) -> dict[str, Any]:
    return {
        "operations": ops,
        "errors": errors,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "ops_per_s": round(ops / wall, 1) if wall else 0.0,
        "ops_per_cpu_s": round(ops / cpu, 1) if cpu else 0.0,
        "cpu_us_per_op": round(cpu / ops * 1e6, 2) if ops else None,
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 3),
        "server_us_per_request": round(server_cpu / ops * 1e6, 2) if ops and server_cpu else None,
    }


def _sender(
    server: subprocess.Popen[str], port: int, duration: float, warmup: float
) -> dict[str, Any]:
    client = spawn(
        "loadgen.bench.senderpeer",
        ["--kind", "platform", "--port", str(port), "--duration", str(duration),
         "--warmup", str(warmup), "--concurrency", str(CONNECTIONS), *core_args(0)],
    )  # fmt: skip
    try:
        expect(client.stdout, "WARM", "platform sender")
        cpu0 = cpu_seconds(server.pid)
        result = orjson.loads(expect(client.stdout, "{", "platform sender"))
        cpu1 = cpu_seconds(server.pid)
    finally:
        _finish(client, 60)
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return _row(result["operations"], result["errors"], result["cpu_s"], result["wall_s"],
                server_cpu)  # fmt: skip


def _locust(
    command: list[str], server: subprocess.Popen[str], port: int, duration: float, warmup: float
) -> dict[str, Any]:
    env = {**os.environ, "LOADGEN_BENCH_WARMUP": str(warmup),
           "LOADGEN_BENCH_DURATION": str(duration)}  # fmt: skip
    bound = int(warmup + duration + 30)  # Locust stops itself after the window; this is a bound
    with tempfile.TemporaryFile("w+") as errors:
        client = subprocess.Popen(
            [*command, "-f", str(LOCUSTFILE), "--headless", "-u", str(CONNECTIONS),
             "-r", str(CONNECTIONS * 10), "--run-time", f"{bound}s",
             "--host", f"http://127.0.0.1:{port}", "--only-summary", "--loglevel", "WARNING"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True, env=env,
            preexec_fn=_pinned(0),
        )  # fmt: skip
        try:
            _line(client.stdout, WARM_LINE, "Locust")
            cpu0 = cpu_seconds(server.pid)
            line = _line(client.stdout, RESULT_PREFIX, "Locust")
            cpu1 = cpu_seconds(server.pid)
        except RuntimeError as exc:
            client.wait(timeout=60)
            errors.seek(0)
            said = errors.read().strip().splitlines()
            raise RuntimeError(f"{exc}: {said[-1] if said else 'nothing on stderr'}") from exc
        finally:
            _finish(client, bound)
    result = orjson.loads(line[len(RESULT_PREFIX) :])
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return _row(result["requests"], result["failures"], result["cpu_s"], result["wall_s"],
                server_cpu)  # fmt: skip


def _finish(process: subprocess.Popen[str], seconds: float) -> None:
    """Read a peer's last lines (its summary) until it exits; killed after ``seconds``."""
    try:
        process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def peer_figures(duration: float = 3.0, *, warmup: float = 1.0) -> dict[str, Any]:
    """Our sender and Locust against the C target, one after the other.

    ``{"skipped": why}`` without a compiler; otherwise ``sender`` and ``locust`` rows (Locust's
    is ``{"skipped": why}`` when it is not installed or fails), ``ratio_vs_locust`` (ops per
    CPU-second, ours over Locust's), ``c_server_us_per_request`` (the limit reference, from the
    sender's run) and ``sender_vs_limit`` (our CPU per operation over the C server's per request).
    """
    cc = compiler()
    if cc is None:
        return {"skipped": "no C compiler (cc or gcc) on PATH: no C target, no peers"}
    out: dict[str, Any] = {"compiler": cc, "connections": CONNECTIONS}
    with tempfile.TemporaryDirectory(prefix="loadgen-cserver-") as tmp:
        try:
            binary = build_c_server(Path(tmp), cc)
        except RuntimeError as exc:
            return {"skipped": str(exc)}
        with c_server(binary) as (server, port):
            out["sender"] = _sender(server, port, duration, warmup)
        command = locust_command()
        if command is None:
            out["locust"] = {"skipped": LOCUST_MISSING}
        else:
            with c_server(binary) as (server, port):
                try:
                    out["locust"] = _locust(command, server, port, duration, warmup)
                except RuntimeError as exc:
                    out["locust"] = {"skipped": f"Locust failed: {exc}"}
    sender, locust = out["sender"], out["locust"]
    ours = sender["ops_per_cpu_s"]
    theirs = locust.get("ops_per_cpu_s")
    out["ratio_vs_locust"] = round(ours / theirs, 2) if ours and theirs else None
    out["target_vs_locust"] = TARGET_VS_LOCUST
    limit = sender["server_us_per_request"]
    out["c_server_us_per_request"] = limit
    out["sender_vs_limit"] = (
        round(sender["cpu_us_per_op"] / limit, 1) if limit and sender["cpu_us_per_op"] else None
    )
    return out


def peer_lines(peers: dict[str, Any]) -> list[str]:
    """The section's console lines."""
    if "skipped" in peers:
        return [f"  skipped: {peers['skipped']}"]
    sender, locust = peers["sender"], peers["locust"]
    limit = peers["c_server_us_per_request"]
    lines = [
        f"  {'client':<24}{'ops/s':>7}{'ops/CPU-s':>11}{'µs CPU/op':>11}"
        f"{'C server µs/req':>16}{'errors':>7}"
    ]
    for name, row in (("loadgen sender (closed)", sender), ("Locust FastHttpUser", locust)):
        if "skipped" in row:
            lines.append(f"  {name:<24}skipped, {row['skipped']}")
            continue
        server_us = "n/a" if row["server_us_per_request"] is None else row["server_us_per_request"]
        lines.append(
            f"  {name:<24}{row['ops_per_s']:>7.0f}{row['ops_per_cpu_s']:>11.0f}"
            f"{row['cpu_us_per_op'] or 0:>11.1f}{server_us:>16}{row['errors']:>7}"
        )
    ratio = peers["ratio_vs_locust"]
    lines.append(
        f"  sender vs Locust, ops per CPU-second: "
        f"{'n/a' if ratio is None else f'{ratio}x'} (target {TARGET_VS_LOCUST}x)"
    )
    if limit:
        lines.append(
            f"  the limit: the C server, {limit} µs CPU per request "
            f"({1e6 / limit:,.0f} per CPU-second);"
        )
        lines.append(f"  the sender spends {peers['sender_vs_limit']}x that per operation")
    return lines


if __name__ == "__main__":  # python -m loadgen.bench.peersbench [SECONDS]
    figures = peer_figures(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
    print("\n".join(peer_lines(figures)))
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
