"""``loadgen compare``: the change of every figure between two summaries, regressions marked."""

from __future__ import annotations

import copy
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from report_fixtures import Recorded
from trio.testing import MockClock

from loadgen.report.compare import Change, compare, compare_summaries, diff
from loadgen.report.rebuild import rebuild

MakeRun = Callable[..., Awaitable[Recorded]]


def figures(p50: float, p99: float, count: int = 1000) -> dict[str, Any]:
    return {"p50": p50, "p90": p50 * 1.5, "p99": p99, "p999": p99 * 1.2, "max": p99 * 2,
            "mean": p50, "count": count}  # fmt: skip


def summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "campaign": "checkout",
        "started_at": "2024-05-01T10:00:00+00:00",
        "offered_rate": 100.0,
        "sent_rate": 100.0,
        "achieved_rate": 99.5,
        "error_rate": 0.001,
        "operations": {
            "sent": 3000,
            "completed": 2985,
            "succeeded": 2982,
            "failed": 3,
            "timed_out": 0,
            "errors": 0,
            "rejected": 0,
        },
        "latency_ms": {
            "ack": figures(1.0, 4.0),
            "first_response": {"count": 0},
            "complete": figures(20.0, 80.0),
            "step": {"count": 0},
            "callback": {"count": 0},
            "service": figures(18.0, 60.0),
        },
        "service_ms": {"ack": figures(1.0, 3.0), "complete": figures(18.0, 60.0)},
        "generator": {"saturated": False},
    }
    return {**base, **changes}


def rows(text: str) -> dict[str, str]:
    """metric -> the rest of its line."""
    out = {}
    for line in text.splitlines():
        for change in ("offered rate /s", "achieved rate /s", "error rate %", "operations failed",
                       "operations timed_out", "operations sent", "complete p99 ms",
                       "complete p50 ms", "complete (service) p99 ms", "ack p50 ms"):  # fmt: skip
            if line.startswith(change + "  "):
                out[change] = line[len(change) :].split()
    return out


def test_identical_runs_compare_clean() -> None:
    text = compare_summaries(summary(), summary())

    assert "no regression beyond 5%" in text
    assert "REGRESSION" not in text
    assert "first_response" not in text  # a phase neither run measured is left out


def test_regressions_and_improvements_are_marked() -> None:
    a = summary()
    b = copy.deepcopy(a)
    b["latency_ms"]["complete"]["p99"] = 120.0  # +50 %: worse
    b["latency_ms"]["complete"]["p50"] = 20.5  # +2.5 %: within tolerance
    b["service_ms"]["complete"]["p99"] = 30.0  # -50 %: better
    b["achieved_rate"] = 80.0  # -19.6 %: worse
    b["error_rate"] = 0.02
    b["operations"]["timed_out"] = 12  # from 0: worse, infinitely
    b["operations"]["sent"] = 4000  # the schedule's business: no verdict

    text = compare_summaries(a, b, labels=("base", "candidate"))
    table = rows(text)

    assert text.startswith("A: base  (checkout, started 2024-05-01T10:00:00+00:00)")
    assert table["complete p99 ms"] == ["80", "120", "+40", "+50.0%", "REGRESSION"]
    assert table["complete p50 ms"] == ["20", "20.5", "+0.5", "+2.5%"]
    assert table["complete (service) p99 ms"] == ["60", "30", "-30", "-50.0%", "better"]
    assert table["achieved rate /s"] == ["99.5", "80", "-19.5", "-19.6%", "REGRESSION"]
    assert table["error rate %"] == ["0.1", "2", "+1.9", "+1900.0%", "REGRESSION"]
    assert table["operations timed_out"] == ["0", "12", "+12", "new", "REGRESSION"]
    assert table["operations sent"] == ["3,000", "4,000", "+1,000", "+33.3%"]
    assert table["offered rate /s"] == ["100", "100", "+0", "+0.0%"]
    assert text.splitlines()[-1].startswith("4 regression(s) beyond 5%: achieved rate /s")


def test_missing_figures_and_notes() -> None:
    b = summary(interrupted=True, generator={"saturated": True}, offered_rate=None)

    text = compare_summaries(summary(), b)

    assert rows(text)["offered rate /s"] == ["100", "-", "-", "-"]
    assert "note: run B was interrupted" in text
    assert "note: the generator saturated in run B" in text


@pytest.mark.parametrize(
    ("a", "b", "direction", "relative", "verdict"),
    [
        (10.0, 10.4, 1, 0.04, ""),
        (10.0, 10.6, 1, 0.06, "REGRESSION"),
        (10.0, 9.4, 1, -0.06, "better"),
        (10.0, 9.4, -1, -0.06, "REGRESSION"),
        (0.0, 0.0, 1, 0.0, ""),
        (0.0, 1.0, 1, math.inf, "REGRESSION"),
        (10.0, 20.0, 0, 1.0, ""),
        (None, 1.0, 1, None, ""),
    ],
)
def test_change_verdicts(
    a: float | None, b: float | None, direction: int, relative: float | None, verdict: str
) -> None:
    change = Change("m", a, b, direction)

    assert change.relative == (None if relative is None else pytest.approx(relative))
    assert change.verdict == verdict


async def test_compare_two_run_folders_one_killed(
    make_run: MakeRun, autojump_clock: MockClock, tmp_path: Path
) -> None:
    finished = await make_run("finished", seconds=4)
    killed = await make_run("killed", seconds=3, finish=False)
    rebuild(finished.directory)
    (finished.directory / "copy.json").write_bytes(
        (finished.directory / "summary.json").read_bytes()
    )

    text, regressions = compare(finished.directory, killed.directory)

    assert not (killed.directory / "summary.json").exists()  # compare writes nothing
    assert "note: run B was interrupted" in text
    assert rows(text)["operations sent"][:2] == [f"{finished.sent:,}", f"{killed.sent:,}"]
    same, none = compare(finished.directory / "copy.json", finished.directory)
    assert "no regression" in same
    assert none == 0
    assert regressions == text.count("REGRESSION")
    assert len(diff(orjson.loads((finished.directory / "copy.json").read_bytes()), {})) > 10
