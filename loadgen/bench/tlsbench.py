"""TLS against plain: loadgen's sender against loadgen's fleet, over HTTP and over HTTPS.

One pair per transport, as in ``devicebench`` and ``senderbench``: the device fleet exactly as
``loadgen devices`` runs it (``loadgen.bench.devicepeer server --kind fast``, HTTPS on its own
port with a generated certificate) pinned to core 1, and the virtual platform's sender in the
closed model with 64 connections (``loadgen.bench.senderpeer``, verifying the fleet's
certificate against the CA the fleet wrote) pinned to core 0. Both sides' CPU is read over the
same measured window, so each pair gives two figures: the fleet's CPU per operation (server)
and the sender's (client). TLS costs are then ratios of operations per CPU-second, TLS over
plain, for each side: 1.0 means TLS is free, the issue's target is 0.7.

The pairs run ``ROUNDS`` times, in the order plain, TLS, TLS, plain (each transport as early on
average as the other), and each transport's figures are pooled over its rounds (operations and
CPU seconds summed): a shared machine's speed drifts by several per cent over tens of seconds,
and one 3 s window per transport read ratios from 0.69 to 0.86 for the same tree; so ordered,
both transports see the same steady drift.

``tls_figures`` returns plain numbers and prints nothing; ``loadgen.bench.__main__`` formats them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from loadgen.bench.procs import measure_pair

__all__ = ["CONNECTIONS", "ROUNDS", "TARGET_RATIO", "tls_figures"]

TARGET_RATIO = 0.7
CONNECTIONS = 64
ROUNDS = 2


def _pair(duration: float, warmup: float, ca_file: str | None) -> dict[str, Any]:
    tls = [] if ca_file is None else ["--tls", ca_file]
    sender = ["--kind", "platform", "--duration", str(duration), "--warmup", str(warmup),
              "--concurrency", str(CONNECTIONS), *tls]  # fmt: skip
    result, fleet_cpu = measure_pair(
        ("loadgen.bench.devicepeer", ["server", "--kind", "fast", *tls]),
        ("loadgen.bench.senderpeer", sender),
        "TLS sender/fleet" if tls else "plain sender/fleet",
    )
    return _row(
        "plain" if ca_file is None else "tls", int(result["operations"]), int(result["errors"]),
        float(result["wall_s"]), float(result["cpu_s"]), fleet_cpu,
    )  # fmt: skip


def _row(
    transport: str,
    ops: int,
    errors: int,
    wall: float,
    sender_cpu: float,
    fleet_cpu: float | None,
) -> dict[str, Any]:
    return {
        "transport": transport,
        "operations": ops,
        "errors": errors,
        "wall_s": round(wall, 3),
        "ops_per_s": round(ops / wall, 1) if wall else 0.0,
        "sender_cpu_s": round(sender_cpu, 3),
        "fleet_cpu_s": None if fleet_cpu is None else round(fleet_cpu, 3),
        "sender_us_per_op": round(sender_cpu / ops * 1e6, 2) if ops else None,
        "fleet_us_per_op": round(fleet_cpu / ops * 1e6, 2) if ops and fleet_cpu else None,
    }


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One transport's rounds as one row: their operations and CPU seconds summed."""
    fleet = [row["fleet_cpu_s"] for row in rounds]
    return {
        **_row(
            rounds[0]["transport"], sum(row["operations"] for row in rounds),
            sum(row["errors"] for row in rounds), sum(row["wall_s"] for row in rounds),
            sum(row["sender_cpu_s"] for row in rounds),
            None if None in fleet else sum(fleet),
        ),
        "rounds": rounds,
    }  # fmt: skip


def _ratio(plain_us: float | None, tls_us: float | None) -> float | None:
    """Operations per CPU-second over TLS / over plain (= plain µs per op / TLS µs per op)."""
    return round(plain_us / tls_us, 3) if plain_us and tls_us else None


def tls_figures(
    duration: float = 3.0, *, warmup: float = 1.0, rounds: int = ROUNDS
) -> dict[str, Any]:
    """``plain`` and ``tls`` rows (ops/s, CPU µs per operation of the fleet and of the sender,
    pooled over ``rounds`` taken plain, TLS, TLS, plain, ..., each round's own row under
    ``rounds``) and the two
    ratios, ``fleet_ratio`` and ``sender_ratio`` (TLS / plain per CPU-second)."""
    plains: list[dict[str, Any]] = []
    tlses: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loadgen-tlsbench-") as folder:
        for round_ in range(rounds):
            order = (None, "tls") if round_ % 2 == 0 else ("tls", None)  # ABBA
            for kind in order:
                if kind is None:
                    plains.append(_pair(duration, warmup, None))
                else:
                    tlses.append(_pair(duration, warmup, str(Path(folder) / f"ca{round_}.pem")))
    plain, tls = _pooled(plains), _pooled(tlses)
    return {
        "connections": CONNECTIONS,
        "plain": plain,
        "tls": tls,
        "fleet_ratio": _ratio(plain["fleet_us_per_op"], tls["fleet_us_per_op"]),
        "sender_ratio": _ratio(plain["sender_us_per_op"], tls["sender_us_per_op"]),
        "ops_ratio": round(tls["ops_per_s"] / plain["ops_per_s"], 3)
        if plain["ops_per_s"]
        else None,
        "target_ratio": TARGET_RATIO,
    }


if __name__ == "__main__":
    import sys

    import orjson

    print(orjson.dumps(tls_figures(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)).decode())
