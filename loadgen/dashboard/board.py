"""What the live dashboard shows: every interval of the run folded into one JSON-able state.

``Board`` is an interval sink (like the progress line and the Prometheus exporter): it is called
once per interval with the run's ``Interval`` and keeps

- one *frame* per interval (the time axis of the charts): offered / sent / achieved rates, in
  flight, the interval's bad ends, CPU, stage and phase, and p50/p90/p99 of every latency phase
  with its service-time twin, read from the interval histograms;
- the state so far, rebuilt from the recorders' own totals (``Interval.cumulative``: nothing
  is accumulated here) and the counters with the same code as ``summary.json``
  (``build_summary``), so what the page shows at the end is what the summary says: totals,
  the percentile spectrum, errors by cause with their first message, result codes, the
  per-operation table, thresholds evaluated live, generator health with its saturation
  verdict, the fleet's flows and faults;
- the capacity search's steps (``step``), the controls used (``control``) and, once the run has
  ended, its summary (``finish``).

Nothing here reads a clock or awaits: the server (``loadgen.dashboard.server``) turns a change of
``version`` into server-sent events. Cost: one summary per interval, off the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from hdrh.histogram import HdrHistogram

from loadgen.metrics.hdr import values_at
from loadgen.metrics.health import HealthLimits, p99_ms, saturation_reasons
from loadgen.metrics.intervals import Interval
from loadgen.metrics.thresholds import Threshold
from loadgen.report.summary import build_summary

__all__ = ["SPECTRUM", "Board"]

#: Percentiles of the spectrum chart (HdrHistogram's plotter: 1 / (1 - p) on a log axis).
SPECTRUM: Final = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)
#: Latency phases charted over time, in order (those the run records).
CHARTED: Final = ("complete", "ack", "first_response", "callback")
#: Frames kept for a client that connects late (an hour at 1 s; older ones are thinned).
MAX_FRAMES: Final = 3600
_OPS: Final = (
    "issued", "sent", "completed", "succeeded", "failed", "timed_out", "errors", "rejected",
)  # fmt: skip


def _many(histogram: HdrHistogram | None, percentiles: Sequence[float]) -> list[float | None]:
    """Milliseconds at each percentile (100: the max), in one vectorised pass (``values_at``):
    this runs in the event loop every interval."""
    if histogram is None or not histogram.get_total_count():
        return [None for _ in percentiles]
    values = values_at(histogram, [min(p, 100.0) for p in percentiles])
    top = float(histogram.get_max_value()) / 1000
    return [top if p >= 100.0 else v / 1000 for p, v in zip(percentiles, values, strict=True)]


def _ms(histogram: HdrHistogram | None, percentile: float) -> float | None:
    return _many(histogram, [percentile])[0]


def _three(histogram: HdrHistogram | None) -> list[float | None] | None:
    if histogram is None or not histogram.get_total_count():
        return None
    return _many(histogram, [50.0, 90.0, 99.0])


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class Board:
    """The dashboard's state (see the module docstring). ``listeners`` are called (no
    arguments) after every change."""

    def __init__(
        self,
        *,
        title: str,
        sides: str,
        total_seconds: float,
        thresholds: Sequence[Threshold] = (),
        limits: HealthLimits | None = None,
        open_model: bool = False,
        kind: str = "run",
    ) -> None:
        self.meta: dict[str, Any] = {
            "title": title,
            "sides": sides,
            "kind": kind,
            "total_seconds": total_seconds if math.isfinite(total_seconds) else None,
            "open_model": open_model,
            "thresholds": [threshold.expression for threshold in thresholds],
        }
        self.thresholds = tuple(thresholds)
        self.limits = limits or HealthLimits()
        self.frames: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {"ended": False}
        self.steps: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []
        self.version = 0
        self.epoch = 0  # one more each time old frames are thinned (clients start again)
        self.listeners: list[Callable[[], None]] = []
        self._offered_count = 0.0
        self._load_seconds = 0.0
        self._cpu_seconds = 0.0  # CPU %·s over the load phase (its mean judges the generator)

    def __repr__(self) -> str:
        return f"<Board {self.meta['title']} frames={len(self.frames)} v{self.version}>"

    # --- feeding ---------------------------------------------------------------------------------

    def __call__(self, interval: Interval) -> None:
        frame = self._frame(interval)
        self.frames.append(frame)
        if len(self.frames) > MAX_FRAMES:
            # keep the start and every other old frame: the whole run stays on the chart
            head = self.frames[: MAX_FRAMES // 2]
            self.frames = head[::2] + self.frames[MAX_FRAMES // 2 :]
            self.epoch += 1
        self.state = self._state(interval)
        self._changed()

    def step(self, index: int, step: Mapping[str, Any]) -> None:
        """A capacity step has been judged: ``StepResult.as_dict()`` of step ``index``."""
        p99 = step.get("p99_ms") or {}
        self.steps.append(
            {
                "index": index,
                "offered_rate": step.get("offered_rate"),
                "achieved_rate": step.get("achieved_rate"),
                "p99_ms": {key: value for key, value in p99.items() if value is not None},
                "verdict": step.get("verdict"),
                "reasons": list(step.get("reasons") or ()),
            }
        )
        self._changed()

    def control(self, record: Mapping[str, Any]) -> None:
        """A control was used (``{"at_s", "kind", ...}``, as written to run.json)."""
        self.controls.append(dict(record))
        self._changed()

    def finish(self, summary: Mapping[str, Any] | None, text: str = "") -> None:
        """The run has ended; ``summary`` is its summary.json (None: a capacity search)."""
        ended: dict[str, Any] = {"ended": True, "verdict": text}
        if summary is not None:
            ended["summary"] = {
                key: summary.get(key)
                for key in ("offered_rate", "achieved_rate", "sent_rate", "error_rate",
                            "operations", "interrupted", "load_duration_s")
            }  # fmt: skip
            ended["summary"]["p99_complete_ms"] = (
                (summary.get("latency_ms") or {}).get("complete", {}).get("p99")
            )
            ended["thresholds"] = summary.get("thresholds") or []
        self.state = {**self.state, **ended}
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self.listeners):
            listener()

    # --- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything, for a client that has just connected."""
        return {
            "meta": self.meta,
            "frames": self.frames,
            "state": self.state,
            "steps": self.steps,
            "controls": self.controls,
            "version": self.version,
            "epoch": self.epoch,
        }

    def update(self, after: int) -> dict[str, Any]:
        """What a client that has the frames up to index ``after`` (exclusive) needs."""
        return {
            "first": after,
            "frames": self.frames[after:],
            "state": self.state,
            "steps": self.steps,
            "controls": self.controls,
            "version": self.version,
        }

    # --- the frame of one interval --------------------------------------------------------------

    def _frame(self, interval: Interval) -> dict[str, Any]:
        length = interval.length or 1.0
        changed, gauges, hists = interval.counters, interval.gauges, interval.histograms
        offered = _number(gauges.get("offered_rate"))
        latency = {}
        for phase in CHARTED:
            three = _three(hists.get(phase))
            if three is not None:
                latency[phase] = three
                twin = _three(hists.get(f"{phase}.service"))
                if twin is not None:
                    latency[f"{phase}.service"] = twin
        frame: dict[str, Any] = {
            "t": round(interval.end, 3),
            "stage": str(gauges.get("stage") or ""),
            "phase": str(gauges.get("phase") or ""),
            "offered": offered,
            "sent": changed.get("ops.sent", 0) / length,
            "achieved": changed.get("ops.completed", 0) / length,
            "served": changed.get("device.ops.received", 0) / length,
            "in_flight": _number(gauges.get("in_flight")),
            "queued": _number(gauges.get("queued")),
            "failed": changed.get("ops.failed", 0),
            "timed_out": changed.get("ops.timed_out", 0),
            "errors": changed.get("ops.errors", 0),
            "cpu": _number(gauges.get("cpu_percent")),
            "lateness_p99": _ms(hists.get("lateness"), 99.0),
            "loop_lag_p99": _ms(hists.get("loop_lag"), 99.0),
            "latency": latency,
        }
        if frame["phase"] != "drain":
            self._load_seconds += interval.length
            if offered is not None:
                self._offered_count += offered * interval.length
            cpu = frame["cpu"]
            if cpu is not None:
                self._cpu_seconds += cpu * interval.length
        return frame

    # --- the state so far -------------------------------------------------------------------------

    def _state(self, interval: Interval) -> dict[str, Any]:
        load_s = self._load_seconds or None
        offered = None if load_s is None or not self.meta["open_model"] else (
            round(self._offered_count / load_s, 3)
        )  # fmt: skip
        run = {
            "load_duration_s": load_s,
            "offered_rate": offered,
            "notes": interval.notes,
        }
        # the recorders that recorded something (those the summary of the run shows)
        so_far = {name: h for name, h in interval.cumulative.items() if h.get_total_count()}
        summary = build_summary(so_far, interval.totals, run)
        totals = interval.totals
        main = "callback" if self.meta["sides"] == "devices" else "complete"
        spectrum = {
            name: [[p, v] for p, v in zip(SPECTRUM, _many(so_far.get(name), SPECTRUM), strict=True)]
            for name in (main, f"{main}.service")
            if name in so_far
        }
        by_operation = self._by_operation(summary, interval)
        cpu_mean = self._cpu_seconds / load_s if load_s else None
        lateness = p99_ms(so_far.get("lateness"))
        lag = p99_ms(so_far.get("loop_lag"))
        health = {
            "lateness_p99_ms": lateness,
            "loop_lag_p99_ms": lag,
            "cpu_percent": None if cpu_mean is None else round(cpu_mean, 1),
            "late_sends": int(totals.get("ops.late_sends", 0)),
            "reasons": saturation_reasons(
                self.limits,
                lateness_p99_ms=lateness,
                loop_lag_p99_ms=lag,
                cpu_percent=cpu_mean,
                queue_full=int(totals.get("ops.rejected.queue_full", 0)),
            ),
        }
        end = interval.end
        total = self.meta["total_seconds"]
        gauges = interval.gauges
        phase = str(gauges.get("phase") or "")
        return {
            "ended": False,
            "t": round(end, 3),
            "stage": str(gauges.get("stage") or ""),
            "phase": phase,
            "time_left_s": None if total is None or phase == "drain" else max(0.0, total - end),
            "in_flight": _number(gauges.get("in_flight")),
            "queued": _number(gauges.get("queued")),
            "operations": {key: int(totals.get(f"ops.{key}", 0)) for key in _OPS},
            "rates": {
                "offered": offered,
                "sent": summary["sent_rate"],
                "achieved": summary["achieved_rate"],
            },
            "error_rate": summary["error_rate"],
            "latency_ms": {
                name: summary["latency_ms"].get(name)
                for name in (main, "service", "ack", "first_response")
                if (summary["latency_ms"].get(name) or {}).get("count")
            },
            "spectrum": spectrum,
            "errors_by_cause": summary["errors_by_cause"][:20],
            "results": summary["results"],
            "by_operation": by_operation,
            "thresholds": [t.evaluate(summary).as_dict() for t in self.thresholds],
            "health": health,
            "fleet": self._fleet(totals, interval),
        }

    def _by_operation(self, summary: Mapping[str, Any], interval: Interval) -> list[dict[str, Any]]:
        """Locust's statistics table: a row per operation name (with the platform's breakdown
        by name) and the total; rates are over the load so far and the last interval."""
        load_s = self._load_seconds or 1.0
        length = interval.length or 1.0
        rows = []
        named: Mapping[str, Mapping[str, Any]] = summary.get("by_operation") or {}
        complete = summary["latency_ms"].get("complete") or {}
        ops = summary["operations"]
        total_row = {
            "name": "all",
            "count": ops["completed"] + ops["timed_out"] + ops["errors"],
            "bad": ops["failed"] + ops["timed_out"] + ops["errors"],
            "rate": ops["completed"] / load_s,
            "current": interval.counters.get("ops.completed", 0) / length,
            "latency_ms": {k: complete.get(k) for k in ("p50", "p90", "p99", "max")},
        }
        for name, row in named.items():
            latency = row.get("latency_ms") or {}
            recent = interval.histograms.get(f"complete.{name}")
            rows.append(
                {
                    "name": name,
                    "count": row["count"],
                    "bad": row["failed"] + row["timed_out"] + row["errors"],
                    "rate": row["count"] / load_s,
                    "current": (0 if recent is None else recent.get_total_count()) / length,
                    "latency_ms": {k: latency.get(k) for k in ("p50", "p90", "p99", "max")},
                }
            )
        return [*rows, total_row]

    def _fleet(self, totals: Mapping[str, int], interval: Interval) -> dict[str, Any] | None:
        """Operations the virtual devices served per flow, and the faults they injected."""
        if not any(name.startswith("device.") for name in totals):
            return None
        length = interval.length or 1.0
        flows = {
            "sync": totals.get("device.ops.sync", 0),
            "async": totals.get("device.ops.async", 0),
            "sleepy": totals.get("device.sleepy.operations", 0),
        }
        return {
            "received": totals.get("device.ops.received", 0),
            "served_per_s": interval.counters.get("device.ops.received", 0) / length,
            "completed": totals.get("device.ops.completed", 0),
            "flows": {name: count for name, count in flows.items() if count},
            "faults": {
                name.removeprefix("device.fault."): count
                for name, count in sorted(totals.items())
                if name.startswith("device.fault.") and count
            },
            "refused": {
                name.removeprefix("device."): count
                for name, count in sorted(totals.items())
                if (name.startswith("device.http.") or name == "device.busy.rejected") and count
            },
            "undelivered": sum(v for k, v in totals.items() if k.endswith(".undelivered")),
        }
