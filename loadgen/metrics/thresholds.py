"""Thresholds: small readable pass/fail expressions over a run's summary.

    p99(complete) < 250ms          a percentile of a latency phase, with a unit (us, ms, s)
    error_rate < 0.1%              a ratio, as a fraction or a percentage
    timeouts == 0                  an operation count
    achieved_rate >= 0.98 * offered_rate    a metric against a multiple of another

Grammar: ``METRIC OP VALUE`` where OP is one of < <= > >= == != and VALUE is a number (with a
unit for latencies, optionally a %), a metric, or ``NUMBER * METRIC``. Latency metrics are
``FUNC(PHASE)`` with FUNC in p50 p90 p99 p999 max mean (``p99.9`` is accepted for p999) and PHASE
in ack first_response complete step callback service, or ``FUNC(lateness)`` /
``FUNC(loop_lag)`` for the generator's own health.

Every expression is parsed when the scenario is validated, before any load: an unknown metric,
a missing unit or a malformed expression is a ``ConfigError`` naming the key and saying what was
expected (k6 silently passes a misspelled metric; this does not). A metric with no data at the
end of the run (e.g. p99 of a phase that never happened) fails the threshold rather than passing
it vacuously, and says so; so does a right-hand metric with no data (``offered_rate`` of a
closed-model run), whatever the operator.

Numbers are compared as the decimals they are written as. A limit is converted to the summary's
unit in decimal arithmetic (``0.7%`` is exactly 0.007, ``1234us`` exactly 1.234 ms) and a
``NUMBER * METRIC`` multiplies the two decimals as written in ``summary.json``: binary floating
point would make ``error_rate <= 0.7%`` fail at an error rate of exactly 0.007 (0.7 / 100 is
0.006999999999999999), so a boundary would fall on the wrong side of ``<=`` and ``<``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from loadgen.errors import ConfigError

__all__ = ["Threshold", "ThresholdResult", "evaluate_all", "parse_threshold"]

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
LATENCY_FUNCS: Final = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p999", "p99.9": "p999",
                        "max": "max", "mean": "mean", "avg": "mean"}  # fmt: skip
LATENCY_PHASES: Final = (
    "ack", "first_response", "complete", "step", "callback", "service",
    # the north side's hops (issue 10): job created, dispatched, done on the device, closed
    "job_accepted", "dispatch", "device_done", "closed",
)  # fmt: skip
GENERATOR_SERIES: Final = ("lateness", "loop_lag")
RATIOS: Final = ("error_rate",)
RATES: Final = ("achieved_rate", "offered_rate", "sent_rate")
COUNTS: Final = {
    "issued": "issued",
    "sent": "sent",
    "timed_out_queued": "timed_out_queued",
    "completed": "completed",
    "succeeded": "succeeded",
    "failed": "failed",
    "timeouts": "timed_out",
    "timed_out": "timed_out",
    "errors": "errors",
    "rejected": "rejected",
}
_UNITS_MS: Final = {"us": Decimal("0.001"), "µs": Decimal("0.001"), "ms": Decimal(1),
                    "s": Decimal(1000)}  # fmt: skip

_EXPR_RE: Final = re.compile(r"^\s*(?P<left>.+?)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<right>.+?)\s*$")
_LATENCY_RE: Final = re.compile(r"^(?P<func>[a-z0-9.]+)\((?P<series>[a-z_]+)\)$")
_NUM: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NUMBER_RE: Final = re.compile(rf"^(?P<num>{_NUM})\s*(?P<unit>us|µs|ms|s|%)?$")
_SCALED_RE: Final = re.compile(rf"^(?P<factor>{_NUM})\s*\*\s*(?P<metric>.+)$")


@dataclass(frozen=True, slots=True)
class _Metric:
    kind: str  # "latency" | "ratio" | "rate" | "count"
    key: tuple[str, ...]  # path into the summary
    text: str

    def read(self, summary: Mapping[str, Any]) -> float | None:
        node: Any = summary
        for part in self.key:
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        # a hand-edited or foreign summary may hold anything here: only a number is data
        if isinstance(node, bool) or not isinstance(node, int | float):
            return None
        return float(node)


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    expression: str
    ok: bool
    actual: float | None
    limit: float | None
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "expression": self.expression,
            "ok": self.ok,
            "actual": self.actual,
            "limit": self.limit,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Threshold:
    expression: str
    metric: _Metric
    op: str
    factor: float
    other: _Metric | None  # VALUE = factor * other, or the constant `factor` when None

    def evaluate(self, summary: Mapping[str, Any]) -> ThresholdResult:
        actual = self.metric.read(summary)
        if actual is None:
            return ThresholdResult(
                self.expression, False, None, None, f"no data for {self.metric.text}"
            )
        if self.other is None:
            limit = self.factor
        else:
            base = self.other.read(summary)
            if base is None:
                return ThresholdResult(
                    self.expression, False, actual, None, f"no data for {self.other.text}"
                )
            # the two decimals as written (repr is the shortest decimal of each float)
            limit = float(Decimal(repr(self.factor)) * Decimal(repr(base)))
        ok = _OPERATORS[self.op](actual, limit)
        return ThresholdResult(self.expression, ok, actual, limit)


def _metric(text: str, key: str) -> _Metric:
    text = text.strip()
    match = _LATENCY_RE.match(text)
    if match:
        func = LATENCY_FUNCS.get(match["func"])
        if func is None:
            raise ConfigError(
                f"unknown statistic {match['func']!r} in {text!r}: expected one of "
                f"{', '.join(sorted(set(LATENCY_FUNCS)))}",
                key=key,
            )
        series = match["series"]
        if series in LATENCY_PHASES:
            return _Metric("latency", ("latency_ms", series, func), text)
        if series in GENERATOR_SERIES:
            return _Metric("latency", ("generator", f"{series}_ms", func), text)
        raise ConfigError(
            f"unknown latency phase {series!r} in {text!r}: expected one of "
            f"{', '.join((*LATENCY_PHASES, *GENERATOR_SERIES))}",
            key=key,
        )
    if text in RATIOS:
        return _Metric("ratio", (text,), text)
    if text in RATES:
        return _Metric("rate", (text,), text)
    if text in COUNTS:
        return _Metric("count", ("operations", COUNTS[text]), text)
    known = [*(f"FUNC({p})" for p in LATENCY_PHASES), *RATIOS, *RATES, *COUNTS]
    raise ConfigError(f"unknown metric {text!r}: expected one of {', '.join(known)}", key=key)


def _number(text: str, metric: _Metric, key: str, expression: str) -> float:
    match = _NUMBER_RE.match(text.strip())
    if not match:
        raise ConfigError(
            f"cannot read {text!r} in {expression!r}: expected a number, a metric or "
            "NUMBER * METRIC",
            key=key,
        )
    value = Decimal(match["num"])
    unit = match["unit"]
    if metric.kind == "latency":
        if unit is None or unit == "%":
            raise ConfigError(
                f"{expression!r}: a latency needs a unit (us, ms or s), e.g. 250ms", key=key
            )
        return float(value * _UNITS_MS[unit])
    if unit == "%":
        if metric.kind != "ratio":
            raise ConfigError(f"{expression!r}: % only applies to error_rate", key=key)
        return float(value / 100)
    if unit is not None:
        raise ConfigError(f"{expression!r}: {metric.text} takes no time unit", key=key)
    return float(value)


def parse_threshold(expression: str, *, key: str = "thresholds") -> Threshold:
    """Parse one expression; a ``ConfigError`` naming ``key`` when it is not valid."""
    match = _EXPR_RE.match(expression)
    if not match:
        raise ConfigError(
            f"cannot parse {expression!r}: expected METRIC OP VALUE, e.g. "
            "'p99(complete) < 250ms' (OP is one of < <= > >= == !=)",
            key=key,
        )
    metric = _metric(match["left"], key)
    right = match["right"].strip()
    scaled = _SCALED_RE.match(right)
    if scaled:
        other = _metric(scaled["metric"], key)
        factor = float(scaled["factor"])
        if not math.isfinite(factor):
            raise ConfigError(
                f"{expression!r}: the factor {scaled['factor']} is too large", key=key
            )
    elif _NUMBER_RE.match(right):
        other, factor = None, _number(right, metric, key, expression)
    else:
        other, factor = _metric(right, key), 1.0
    if other is not None and other.kind != metric.kind:
        raise ConfigError(
            f"{expression!r}: cannot compare {metric.text} ({metric.kind}) with "
            f"{other.text} ({other.kind})",
            key=key,
        )
    return Threshold(expression.strip(), metric, match["op"], factor, other)


def evaluate_all(thresholds: list[Threshold], summary: Mapping[str, Any]) -> list[ThresholdResult]:
    return [threshold.evaluate(summary) for threshold in thresholds]
