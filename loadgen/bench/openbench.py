"""The open model's figures of ``make bench`` (issue 17): its cost below saturation and its
behaviour past its ceiling.

- **at a fixed offered rate** (35,000 ops/s in the issue): the sender's CPU share, CPU µs per
  operation and send lateness p99 over the measured window, and whether the run flagged itself
  saturated;
- **offered twice the ceiling**: operations completed in each second of the window, which must
  each stay near the ceiling (no collapse as the queue fills), and resident memory at the first
  and last second (bounded: the queue refuses past ``MAX_QUEUED``).

Each figure is one pair of pinned processes, as everywhere in ``make bench``: the peer server
(``loadgen.bench.peer server --kind fast``) on core 1, the sender (``loadgen.bench.openpeer``,
the whole virtual platform) on core 0.

    python -m loadgen.bench.openbench [RATE [SECONDS]]
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from loadgen.bench.procs import against_fast_peer

__all__ = ["judge_overload", "open_figure", "overload_figure"]


def _run(args: list[str], seconds: float) -> dict[str, Any]:
    return against_fast_peer("loadgen.bench.openpeer", args, seconds + 120)


def open_figure(rate: float, duration: float = 3.0) -> dict[str, Any]:
    """The open model at ``rate`` ops/s offered for ``duration`` measured seconds."""
    result = _run(["--rate", f"{rate:.1f}", "--duration", str(duration)], duration)
    lateness = result.get("lateness_ms") or {}
    result["lateness_p99_ms"] = lateness.get("p99")
    return result


def overload_figure(ceiling: float, duration: float = 5.0) -> dict[str, Any]:
    """Offered twice ``ceiling`` for ``duration`` seconds: each second's completed operations
    against the ceiling, resident memory first and last, and whether it stayed bounded."""
    result = _run(["--rate", f"{2 * ceiling:.1f}", "--duration", str(duration)], duration)
    return judge_overload(result, ceiling)


def judge_overload(result: dict[str, Any], ceiling: float) -> dict[str, Any]:
    """``openpeer``'s ``result`` offered twice ``ceiling``, with its verdicts added:
    ``worst_second_vs_ceiling``, and ``rss_bounded``: over the second half, resident memory
    stays within 10 % of where it was halfway (what a few seconds fill, such as the ended ids
    kept for a window, is not growth)."""
    per_second = [int(second["completed"]) for second in result["seconds"]]
    rss = [second["rss_mb"] for second in result["seconds"] if second.get("rss_mb")]
    result["per_second"] = per_second
    result["worst_second_vs_ceiling"] = (
        round(min(per_second) / ceiling, 3) if per_second and ceiling else None
    )
    result["rss_mb_first_last"] = [rss[0], rss[-1]] if rss else None
    half = rss[len(rss) // 2 :]
    result["rss_bounded"] = bool(half) and max(half) <= 1.1 * half[0]
    return result


if __name__ == "__main__":
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 35_000.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    print(orjson.dumps(open_figure(rate, seconds)).decode())
