"""``loadgen compare A B``: what changed between two runs, and whether it got worse.

Each row is one figure of the two summaries with its absolute and relative change (B - A). Every
metric has a direction: latencies, failures and the error rate are worse when they grow, the
achieved rate is worse when it falls; the offered rate and the plain operation counts depend on
the schedule and are shown without a verdict. A change in the bad direction by more than
``TOLERANCE`` (relative) is marked ``REGRESSION``; one in the good direction ``better``. The
tolerance sits well above HdrHistogram's own 0.1 % quantisation (3 significant digits), so two
identical runs compare clean and a real 5 % slip in a percentile shows.

A run is named by its results folder (its ``summary.json``, or a summary rebuilt in memory when
the run was killed before writing one; nothing is written) or by a ``summary.json`` path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from loadgen.errors import ConfigError
from loadgen.report.rebuild import rebuild_summary
from loadgen.report.results import load_run, read_json_object
from loadgen.report.summary import OPERATION_KEYS, PHASES

__all__ = ["TOLERANCE", "Change", "compare", "compare_summaries", "diff", "load_summary"]

TOLERANCE: Final = 0.05
WORSE_WHEN_HIGHER: Final = 1
WORSE_WHEN_LOWER: Final = -1
NEUTRAL: Final = 0
FIGURES: Final = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"),
                  ("max", "max"))  # fmt: skip
_BAD_COUNTS: Final = frozenset({"failed", "timed_out", "errors", "rejected"})


@dataclass(frozen=True, slots=True)
class Change:
    """One compared figure: the two values, the change and its verdict."""

    metric: str
    a: float | None
    b: float | None
    direction: int  # WORSE_WHEN_HIGHER, WORSE_WHEN_LOWER or NEUTRAL

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        """(B - A) / A; infinite when A is 0 and B is not, None when a side is missing."""
        delta = self.delta
        if delta is None or self.a is None:
            return None
        if self.a == 0:
            return 0.0 if delta == 0 else math.copysign(math.inf, delta)
        return delta / abs(self.a)

    @property
    def verdict(self) -> str:
        relative = self.relative
        if self.direction == NEUTRAL or relative is None or abs(relative) <= TOLERANCE:
            return ""
        return "REGRESSION" if relative * self.direction > 0 else "better"


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """Every compared figure of two summaries, in display order."""
    changes = [
        Change("offered rate /s", _float(a.get("offered_rate")), _float(b.get("offered_rate")), NEUTRAL),
        Change("sent rate /s", _float(a.get("sent_rate")), _float(b.get("sent_rate")), NEUTRAL),
        Change("achieved rate /s", _float(a.get("achieved_rate")), _float(b.get("achieved_rate")),
               WORSE_WHEN_LOWER),
        Change("error rate %", _percent(a.get("error_rate")), _percent(b.get("error_rate")),
               WORSE_WHEN_HIGHER),
    ]  # fmt: skip
    ops_a, ops_b = a.get("operations") or {}, b.get("operations") or {}
    changes += [
        Change(
            f"operations {key}",
            _float(ops_a.get(key, 0)),
            _float(ops_b.get(key, 0)),
            WORSE_WHEN_HIGHER if key in _BAD_COUNTS else NEUTRAL,
        )
        for key in OPERATION_KEYS
    ]
    for title, figures_a, figures_b in _phases(a, b):
        changes += [
            Change(f"{title} {label} ms", _float(figures_a.get(key)), _float(figures_b.get(key)),
                   WORSE_WHEN_HIGHER)
            for key, label in FIGURES
        ]  # fmt: skip
    return changes


def _percent(value: object) -> float | None:
    number = _float(value)
    return None if number is None else number * 100


def _phases(
    a: Mapping[str, Any], b: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(title, figures of A, figures of B) for every phase either run measured."""
    out = []
    for key, suffix in (("latency_ms", ""), ("service_ms", " (service)")):
        section_a, section_b = a.get(key) or {}, b.get(key) or {}
        for phase in PHASES:
            figures_a, figures_b = section_a.get(phase) or {}, section_b.get(phase) or {}
            if figures_a.get("count") or figures_b.get("count"):
                out.append((f"{phase}{suffix}", figures_a, figures_b))
    return out


def _show(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    text = f"{value:+,.3f}" if signed else f"{value:,.3f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _show_relative(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "new" if value > 0 else "gone"
    return f"{value * 100:+.1f}%"


def compare_summaries(
    a: Mapping[str, Any], b: Mapping[str, Any], *, labels: tuple[str, str] = ("A", "B")
) -> str:
    """The comparison table of two summaries, as plain text."""
    changes = diff(a, b)
    width = max(len(change.metric) for change in changes) + 2
    lines = [
        f"A: {labels[0]}  ({a.get('campaign') or '-'}, started {a.get('started_at') or '-'})",
        f"B: {labels[1]}  ({b.get('campaign') or '-'}, started {b.get('started_at') or '-'})",
        "",
        f"{'metric':<{width}}{'A':>14}{'B':>14}{'B - A':>14}{'change':>10}  verdict",
    ]
    lines.extend(
        f"{change.metric:<{width}}{_show(change.a):>14}{_show(change.b):>14}"
        f"{_show(change.delta, signed=True):>14}{_show_relative(change.relative):>10}"
        f"  {change.verdict}".rstrip()
        for change in changes
    )
    regressions = [change.metric for change in changes if change.verdict == "REGRESSION"]
    lines.append("")
    if regressions:
        lines.append(
            f"{len(regressions)} regression(s) beyond {TOLERANCE:.0%}: {', '.join(regressions)}"
        )
    else:
        lines.append(f"no regression beyond {TOLERANCE:.0%}")
    for label, summary in zip(("A", "B"), (a, b), strict=True):
        if summary.get("interrupted"):
            lines.append(f"note: run {label} was interrupted; its figures cover part of the run")
        if (summary.get("generator") or {}).get("saturated"):
            lines.append(f"note: the generator saturated in run {label}")
    return "\n".join(lines)


def load_summary(path: Path) -> dict[str, Any]:
    """A run's summary from its folder or its ``summary.json``; rebuilt in memory if missing."""
    if path.is_file():
        summary = read_json_object(path, "a summary.json")
        if not isinstance(summary.get("operations"), dict):
            raise ConfigError("expected a summary.json: it has no operations", source=str(path))
        return summary
    run = load_run(path)
    if run.summary is not None:
        return run.summary
    return rebuild_summary(run)  # a killed run's folder: summarise it, write nothing


def compare(a: Path, b: Path) -> tuple[str, int]:
    """The comparison table of two runs (results folders or summary.json files) and the number
    of regressions in it."""
    first, second = load_summary(a), load_summary(b)
    regressions = sum(1 for change in diff(first, second) if change.verdict == "REGRESSION")
    return compare_summaries(first, second, labels=(str(a), str(b))), regressions
