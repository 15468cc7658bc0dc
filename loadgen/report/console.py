"""The end-of-run summary for a terminal: 80 columns, one meaning per word.

- ``failed``: completed with a result other than SUCCESSFUL; ``timed out``: ended by a deadline;
  ``errors``: ended without an answer for another reason. Always three separate columns.
- ``issued``: operations started; ``sent``: of those, written to a connection. The difference
  timed out queued behind a busy pool, never sent: said on a line of its own when there are any.
- errors grouped by cause with the first message seen for each (``transport.connect  60  connect
  refused 127.0.0.1:1``), as k6 prints a cause and Locust a failures table;
- one row per operation name when the run had more than one;
- thresholds with their units, error rates as percentages, counts as integers, ✓ / ✗.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from loadgen.report.summary import NORTH_PHASES, PHASES

__all__ = ["format_summary", "threshold_value"]

WIDTH: Final = 80
_ERROR_PREFIXES: Final = ("transport.", "http.status.", "device.wrong_", "south.refused.")
_PERCENT_METRICS: Final = ("error_rate",)


def _ms(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def _rate(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1f}/s"


def threshold_value(expression: str, value: object) -> str:
    """A threshold's actual value or limit in the unit its metric is written in."""
    if not isinstance(value, int | float):
        return "-" if value is None else str(value)
    metric = re.split(r"<|>|=|!", expression, maxsplit=1)[0].strip()
    if metric.startswith(("p50", "p90", "p99", "max", "mean", "avg")):
        return f"{_ms(float(value))} ms"
    if metric in _PERCENT_METRICS:
        return f"{float(value) * 100:.3g} %"
    if metric.endswith("_rate"):
        return _rate(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _actual(threshold: Mapping[str, Any]) -> str:
    if threshold.get("actual") is None:
        return str(threshold.get("reason") or "no data")
    return threshold_value(str(threshold.get("expression", "")), threshold["actual"])


def _latency(summary: Mapping[str, Any]) -> list[str]:
    head = f"{'latency (ms)':<20}{'count':>10}" + "".join(
        f"{k:>10}" for k in ("p50", "p90", "p99", "p99.9", "max")
    )
    lines = [head]
    rows = [(phase, summary["latency_ms"].get(phase)) for phase in PHASES]
    rows.append(("service (complete)", summary["latency_ms"].get("service")))
    rows += [(phase, summary["latency_ms"].get(phase)) for phase in NORTH_PHASES]
    for name, figures in rows:
        if not figures or not figures.get("count"):
            continue
        lines.append(
            f"{name:<20}{figures['count']:>10}"
            + "".join(f"{_ms(figures[k]):>10}" for k in ("p50", "p90", "p99", "p999", "max"))
        )
    return lines if len(lines) > 1 else []


def _hops(summary: Mapping[str, Any]) -> list[str]:
    """A north run: the jobs' accounting and the time per hop (issue 10)."""
    jobs = summary.get("jobs")
    if not jobs:
        return []
    north = (summary.get("extra") or {}).get("north") or {}
    lines = [
        f"jobs        created {jobs['created']}  closed {jobs['closed']}  "
        f"timed out {jobs['timed_out']}  errors {jobs['errors']}  rejected {jobs['rejected']}",
        f"            correlation {north.get('correlation', '-')}  "
        f"closed by {north.get('close_by', '-')}",
        "",
        f"{'per hop (ms)':<20}{'count':>10}" + "".join(f"{k:>10}" for k in ("p50", "p90", "p99")),
    ]
    names = {"platform_dispatch": "platform dispatch", "device_work": "device work",
             "platform_close": "platform close"}  # fmt: skip
    for hop, figures in (summary.get("hops_ms") or {}).items():
        if figures and figures.get("count"):
            lines.append(
                f"{names.get(hop, hop):<20}{figures['count']:>10}"
                + "".join(f"{_ms(figures[k]):>10}" for k in ("p50", "p90", "p99"))
            )
    return lines


def _causes(summary: Mapping[str, Any]) -> list[str]:
    causes = summary.get("errors_by_cause") or []
    if not causes:
        return []
    lines = ["errors by cause" + " " * 23 + "count  first message"]
    for item in causes:
        first = str(item.get("first") or "")
        line = f"  {item['cause']:<34}{item['count']:>7}  {first}"
        lines.append(line if len(line) <= WIDTH else line[: WIDTH - 1] + "…")
    return lines


def _by_operation(summary: Mapping[str, Any]) -> list[str]:
    names = summary.get("by_operation") or {}
    if len(names) < 2:
        return []
    lines = [
        f"{'by operation':<21}{'count':>7}{'failed':>7}{'timed out':>10}{'errors':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    ]
    for name, row in sorted(names.items()):
        latency = row.get("latency_ms") or {}
        lines.append(
            f"{name[:20]:<21}{row.get('count', 0):>7}{row.get('failed', 0):>7}"
            f"{row.get('timed_out', 0):>10}{row.get('errors', 0):>7}"
            f"{_ms(latency.get('p50')):>9}{_ms(latency.get('p99')):>9}{_ms(latency.get('max')):>9}"
        )
    return lines


def _thresholds(summary: Mapping[str, Any]) -> list[str]:
    items = summary.get("thresholds") or []
    if not items:
        return []
    lines = ["thresholds"]
    for threshold in items:
        mark = "✓" if threshold.get("ok") else "✗"
        lines.append(f"  {mark} {threshold['expression']:<40} actual {_actual(threshold)}")
    failed = sum(1 for t in items if not t.get("ok"))
    if failed:
        lines.append(f"  {failed} of {len(items)} thresholds failed")
    return lines


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as the terminal shows it at the end of a run (and ``loadgen report``)."""
    ops = summary["operations"]
    title = f"campaign {summary.get('campaign') or '-'}"
    if summary.get("interrupted"):
        title += "  (interrupted)"
    blocks: list[list[str]] = [[title]]
    devices = (summary.get("extra") or {}).get("devices") or {}
    if ops.get("sent") or summary.get("offered_rate") is not None:
        issued = ops.get("issued", ops["sent"])
        counts = (
            f"operations  issued {issued}  sent {ops['sent']}  completed {ops['completed']}  "
            f"succeeded {ops['succeeded']}"
        )
        ends = f"            failed {ops['failed']}  timed out {ops['timed_out']}  errors {ops['errors']}"
        if ops.get("rejected"):
            ends += f"  rejected {ops['rejected']}"
        if ops.get("cut_by_grace"):
            ends += f"  (cut by the grace period {ops['cut_by_grace']})"
        rates = (
            f"rates       offered {_rate(summary.get('offered_rate'))}  "
            f"sent {_rate(summary.get('sent_rate'))}  achieved {_rate(summary.get('achieved_rate'))}"
            f"  error rate {summary.get('error_rate', 0) * 100:.2f} %"
        )
        blocks[0] += [counts, ends]
        if ops.get("timed_out_queued"):
            blocks[0].append(
                f"            of the timed out, {ops['timed_out_queued']} were never sent: "
                "queued behind a busy pool"
            )
        blocks[0].append(rates)
    if devices:
        served = devices.get("device.ops.received", 0)
        blocks[0].append(
            f"devices     {devices.get('device.devices', 0)} served {served} operations"
            f" in {summary.get('load_duration_s') or 0:.1f} s"
        )
    blocks.extend(
        block
        for block in (_hops(summary), _latency(summary), _causes(summary), _by_operation(summary))
        if block
    )
    generator = summary.get("generator", {})
    if generator.get("saturated"):
        blocks.append(
            [
                "GENERATOR SATURATED: these numbers describe the load generator, not the target:",
                *(f"  {reason}" for reason in generator.get("reasons", [])),
            ]
        )
    if block := _thresholds(summary):
        blocks.append(block)
    return "\n\n".join("\n".join(block) for block in blocks)
