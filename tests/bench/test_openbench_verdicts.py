"""The verdicts of the overload figure, from a result as ``openpeer`` prints it."""

from __future__ import annotations

from typing import Any

from loadgen.bench.openbench import judge_overload


def result(completed: list[int], rss: list[float | None]) -> dict[str, Any]:
    return {"seconds": [{"completed": c, "rss_mb": r} for c, r in zip(completed, rss, strict=True)]}


def test_the_worst_second_is_judged_against_the_ceiling() -> None:
    judged = judge_overload(result([46_000, 41_000, 45_000, 44_000], [90.0] * 4), 45_000.0)
    assert judged["per_second"] == [46_000, 41_000, 45_000, 44_000]
    assert judged["worst_second_vs_ceiling"] == round(41_000 / 45_000, 3)


def test_memory_that_fills_early_then_holds_is_bounded() -> None:
    judged = judge_overload(result([1] * 6, [80.0, 120.0, 160.0, 170.0, 172.0, 171.0]), 1.0)
    assert judged["rss_mb_first_last"] == [80.0, 171.0]
    assert judged["rss_bounded"] is True


def test_memory_still_growing_in_the_second_half_is_not_bounded() -> None:
    judged = judge_overload(result([1] * 6, [80.0, 100.0, 120.0, 140.0, 160.0, 180.0]), 1.0)
    assert judged["rss_bounded"] is False


def test_no_memory_readings_is_not_bounded() -> None:
    judged = judge_overload(result([1, 1], [None, None]), 1.0)
    assert judged["rss_mb_first_last"] is None
    assert judged["rss_bounded"] is False
