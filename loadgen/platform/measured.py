"""A measured window for the in-flight table: a warm-up that is run but not counted (pure).

Why
---
A capacity step warms the target up at a rate and then measures a hold at the same rate. The
hold's figures must describe operations *intended* during the hold only: an operation intended
during the warm-up that ends during the hold (or times out there) is the warm-up's, and a
histogram that mixed the two would hide a target still settling. Switching ``Metrics`` at the
hold's start time would not do: it splits by *end* time, and matching by operation id needs one
table for both windows.

How
---
``MeasuredTable`` is the ``InflightTable`` with a second recording target. Every call that ends
in a recording or a counter names its operation; when that operation's ``t_intended`` is before
``measure_from``, the table's recording targets (``metrics``, ``counters`` and the phase
recorders) point at ``warmup`` for the length of the call, and back after it. Each operation
therefore lands entirely on one side, and each side keeps the table's invariants on its own:
``ops.issued == ops.completed + ops.timed_out + ops.errors`` and ``ops.sent == ops.issued -
ops.timed_out_queued`` once nothing is live.

Operations of the hold pay one comparison per call, and runs without a measured window use the
plain ``InflightTable``, so the hot path of ``loadgen run`` is untouched. What is not tied to
one live operation stays in ``metrics`` for the whole run: south API messages for an id that has
already ended (``south.late``, ``south.duplicate``, ``south.orphan``: only the id is left) and
the sender's lateness, which describes the generator, judged over the whole step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadgen.metrics.registry import Metrics, PhaseRecorder
from loadgen.platform.inflight import InflightTable, Operation

__all__ = ["MeasuredTable"]

_Targets = tuple[Metrics, Any, PhaseRecorder, PhaseRecorder, PhaseRecorder, PhaseRecorder]


def _targets(metrics: Metrics) -> _Targets:
    return (
        metrics,
        metrics.counters,
        metrics.phase("ack"),
        metrics.phase("first_response"),
        metrics.phase("complete"),
        metrics.phase("step"),
    )


class MeasuredTable(InflightTable):
    """An ``InflightTable`` that records operations intended before ``measure_from`` (trio
    time) into ``warmup`` instead of ``metrics``; see the module docstring."""

    __slots__ = ("_main", "_warm", "measure_from", "warmup")

    def __init__(
        self,
        metrics: Metrics,
        *,
        warmup: Metrics | None = None,
        measure_from: float = float("-inf"),
        **options: Any,
    ) -> None:
        super().__init__(metrics, **options)
        self.warmup = warmup if warmup is not None else Metrics()
        self.measure_from = measure_from
        self._main = _targets(metrics)
        self._warm = _targets(self.warmup)

    def __repr__(self) -> str:
        return (
            f"<MeasuredTable live={len(self.live)} measure_from={self.measure_from:.6f} "
            f"measured_sent={self._main[1]['ops.sent']} warmup_sent={self._warm[1]['ops.sent']}>"
        )

    def _use(self, targets: _Targets) -> None:
        (self.metrics, self.counters, self._ack, self._first, self._complete, self._step) = targets

    # Each override: an operation of the measured window goes straight through; a warm-up one
    # runs the same code with the warm-up targets in place.

    def open(self, op: Operation) -> float:
        if op.t_intended >= self.measure_from:
            return super().open(op)
        self._use(self._warm)
        try:
            return super().open(op)
        finally:
            self._use(self._main)

    def written(self, op: Operation, now: float) -> None:
        if op.t_intended >= self.measure_from:
            super().written(op, now)
            return
        self._use(self._warm)
        try:
            super().written(op, now)
        finally:
            self._use(self._main)

    def ack(self, op: Operation, now: float) -> None:
        if op.t_intended >= self.measure_from:
            super().ack(op, now)
            return
        self._use(self._warm)
        try:
            super().ack(op, now)
        finally:
            self._use(self._main)

    def final(
        self, op: Operation, now: float, code: str, steps: Sequence[Any], *, sync: bool
    ) -> None:
        if op.t_intended >= self.measure_from:
            super().final(op, now, code, steps, sync=sync)
            return
        self._use(self._warm)
        try:
            super().final(op, now, code, steps, sync=sync)
        finally:
            self._use(self._main)

    def partial(self, op: Operation, now: float, steps: Sequence[Any]) -> None:
        if op.t_intended >= self.measure_from:
            super().partial(op, now, steps)
            return
        self._use(self._warm)
        try:
            super().partial(op, now, steps)
        finally:
            self._use(self._main)

    def error(self, op: Operation, now: float, counter: str) -> None:
        if op.t_intended >= self.measure_from:
            super().error(op, now, counter)
            return
        self._use(self._warm)
        try:
            super().error(op, now, counter)
        finally:
            self._use(self._main)

    def superseded(self, op: Operation) -> None:
        if op.t_intended >= self.measure_from:
            super().superseded(op)
            return
        self._use(self._warm)
        try:
            super().superseded(op)
        finally:
            self._use(self._main)

    def misfit(self, op: Operation, wrong: Sequence[str], now: float) -> bool:
        if op.t_intended >= self.measure_from:
            return super().misfit(op, wrong, now)
        self._use(self._warm)
        try:
            return super().misfit(op, wrong, now)
        finally:
            self._use(self._main)

    def _time_out(self, op: Operation, deadline: float, *, cut: bool = False) -> None:
        # ``error`` may call this for a warm-up operation with the warm-up targets already in
        # place (a failure at the deadline, rule 5 of ``inflight``): restoring the main targets
        # here would send the rest of that ``error`` call to the wrong side.
        if op.t_intended >= self.measure_from or self.counters is self._warm[1]:
            super()._time_out(op, deadline, cut=cut)
            return
        self._use(self._warm)
        try:
            super()._time_out(op, deadline, cut=cut)
        finally:
            self._use(self._main)
