"""The soak (``make soak``): per-minute figures and verdict (pure, exact numbers), and its thin
runner end to end on a few one-second "minutes" of the shipped soak scenario."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from loadgen.bench.soak import main
from loadgen.bench.soakcheck import Limits, Minute, format_table, per_minute, verdict
from loadgen.metrics.hdr import LatencyRecorder

MB = 1_000_000


def histogram_of(*ms: float):  # type: ignore[no-untyped-def]
    recorder = LatencyRecorder("complete")
    for value in ms:
        recorder.record(value / 1000)
    return recorder.rollover()


def test_minutes_are_whole_minutes_of_the_load_window() -> None:
    """3.5 minutes of load: 3 whole minutes; samples, intervals and counter lines after 180 s
    (the half minute and the drain) are in none."""
    rss = [(t, (100 + t // 60) * MB) for t in range(1, 240)]  # 100 MB, 101 MB, 102 MB ...
    intervals = [
        (1.0, histogram_of(*[10.0] * 99, 50.0)),
        (60.0, histogram_of(10.0)),  # ends at 60 s: the first minute's
        (61.0, histogram_of(*[20.0] * 100)),
        (150.0, histogram_of(*[30.0] * 98, 900.0, 900.0)),
        (200.0, histogram_of(5000.0)),  # after the whole minutes: ignored
    ]
    counters = [
        (0.5, {"ops.sent": 10}),
        (60.0, {"ops.sent": 600, "ops.completed": 590}),
        (120.0, {"ops.sent": 1200, "ops.completed": 1195, "ops.errors": 1}),
        (180.0, {"ops.sent": 1800, "ops.completed": 1790, "ops.errors": 2, "ops.timed_out": 3}),
        (190.0, {"ops.sent": 1900}),
    ]

    minutes = per_minute(load_seconds=210.0, rss=rss, intervals=intervals, counters=counters)

    assert [m.index for m in minutes] == [1, 2, 3]
    # 1..60 s: 59 samples of 100 MB and one (t=60) of 101 MB; and so on
    assert [(m.rss_mb, m.rss_max_mb) for m in minutes] == [(100.0, 101.0), (101.0, 102.0),
                                                          (102.0, 103.0)]  # fmt: skip
    assert minutes[0].p99_ms == pytest.approx(10.0, rel=1e-3)  # 10 ms x100, 50 ms once
    assert minutes[1].p99_ms == pytest.approx(20.0, rel=1e-3)
    assert minutes[2].p99_ms == pytest.approx(900.0, rel=1e-3)  # 30 ms x98, 900 ms x2
    assert [dict(m.counts) for m in minutes] == [
        {
            "ops.issued": 0,
            "ops.sent": 600,
            "ops.completed": 590,
            "ops.timed_out": 0,
            "ops.errors": 0,
        },
        {
            "ops.issued": 0,
            "ops.sent": 600,
            "ops.completed": 605,
            "ops.timed_out": 0,
            "ops.errors": 1,
        },
        {
            "ops.issued": 0,
            "ops.sent": 600,
            "ops.completed": 595,
            "ops.timed_out": 3,
            "ops.errors": 1,
        },
    ]


def minute(index: int, rss: float | None = 100.0, p99: float | None = 10.0) -> Minute:
    return Minute(index=index, rss_mb=rss, rss_max_mb=rss, p99_ms=p99, counts={})


ACCOUNTED = {
    "issued": 10,
    "sent": 9,
    "timed_out_queued": 1,
    "completed": 7,
    "timed_out": 2,
    "errors": 1,
}


@pytest.mark.parametrize(
    ("minutes", "operations", "expected"),
    [
        pytest.param(
            [minute(1, 50.0, 99.0), minute(2), minute(3, 110.0, 20.0)],
            ACCOUNTED,
            [],
            id="pass: +10 MB and 2x are the limits",
        ),
        pytest.param(
            [minute(1), minute(2), minute(3, 110.1)],
            ACCOUNTED,
            ["RSS grew 10.1 MB from minute 2 to minute 3 (100.0 -> 110.1 MB; limit 10 MB)"],
            id="RSS",
        ),
        pytest.param(
            [minute(1), minute(2), minute(3, p99=20.5)],
            ACCOUNTED,
            [
                "p99(complete) drifted 2.05x from minute(s) 2 to 3 (10.000 -> 20.500 ms, medians;"
                " limit 2x)"
            ],
            id="p99",
        ),
        pytest.param(
            [
                minute(1),
                *(
                    minute(k, p99=p99)
                    for k, p99 in zip(
                        range(2, 11), (10, 40, 11, 12, 12, 13, 40, 20, 19), strict=True
                    )
                ),
            ],
            ACCOUNTED,
            [],
            id="p99: one bad minute is no drift (medians of 2-4 and 8-10: 11 and 20 ms)",
        ),
        pytest.param(
            [
                minute(1),
                *(
                    minute(k, p99=p99)
                    for k, p99 in zip(
                        range(2, 11), (10, 9, 11, 12, 12, 13, 25, 23, 21), strict=True
                    )
                ),
            ],
            ACCOUNTED,
            [
                "p99(complete) drifted 2.30x from minute(s) 2-4 to 8-10 (10.000 -> 23.000 ms,"
                " medians; limit 2x)"
            ],
            id="p99: a trend over ten minutes",
        ),
        pytest.param(
            [minute(1), minute(2)],
            {**ACCOUNTED, "issued": 11, "sent": 10},
            ["+1 operations unaccounted for: issued 11, completed + timed out + errors 10"],
            id="accounting",
        ),
        pytest.param(
            [minute(1), minute(2)],
            {**ACCOUNTED, "sent": 8},
            ["-1 operations sent unaccounted for: sent 8, issued - timed out queued 9"],
            id="sent",
        ),
        pytest.param(
            [minute(1)],
            ACCOUNTED,
            ["too short to judge: 1 whole minute(s), 2 at least"],
            id="short",
        ),
        pytest.param(
            [minute(1), minute(2, rss=None), minute(3, p99=None)],
            ACCOUNTED,
            [
                "RSS was not sampled in the second or the last minute",
                "no operation completed in minute(s) 2 or 3",
            ],
            id="missing",
        ),
    ],
)
def test_verdict(minutes: list[Minute], operations: dict[str, int], expected: list[str]) -> None:
    assert verdict(minutes, operations, Limits()) == expected


def test_table_has_one_line_per_minute() -> None:
    minutes = [
        Minute(index=1, rss_mb=101.25, rss_max_mb=103.0, p99_ms=12.345, counts={"ops.sent": 6000}),
        Minute(index=2, rss_mb=None, rss_max_mb=None, p99_ms=None, counts={}),
    ]
    lines = format_table(minutes).splitlines()
    assert lines[0].split() == ["min", "RSS", "MB", "max", "MB", "p99", "ms", "issued", "sent",
                                "completed", "timed", "out", "errors"]  # fmt: skip
    assert lines[2].split() == ["1", "101.2", "103.0", "12.35", "0", "6,000", "0", "0", "0"]
    assert lines[3].split() == ["2", "-", "-", "-", "0", "0", "0", "0", "0"]
    assert max(map(len, lines)) <= 80


def run_soak(tmp_path: Path, *extra: str) -> list[str]:
    argv = ["--duration", "3s", "--minute", "1s", "--rate", "50", "--results", str(tmp_path),
            "--set", "devices.count=20", *extra]  # fmt: skip
    return argv


@pytest.mark.timeout(60)
def test_the_runner_prints_a_line_per_minute_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real time (~7 s: 3 s of load, the drain, the south API's linger): the shipped soak
    scenario through the campaign runner, judged on one-second minutes (p99 over 50 operations
    is too noisy for 2x, hence the wide drift limit here)."""
    code = main(run_soak(tmp_path, "--max-p99-drift", "1000"))
    out = capsys.readouterr().out

    assert code == 0, out
    table = out[out.index("x1s") :].splitlines()
    rows = [line.split() for line in table[2:5]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all(float(row[1]) > 10 for row in rows)  # RSS, MB
    # the counts of the minutes add up to the cumulative counters at the last one's end
    [folder] = tmp_path.glob("soak/*")
    lines = [orjson.loads(line) for line in (folder / "counters.jsonl").read_bytes().splitlines()]
    at_3s = next(line["counters"] for line in lines if line["t_s"] == 3.0)
    assert sum(int(row[4].replace(",", "")) for row in rows) == at_3s["ops.issued"] > 140
    assert sum(int(row[5].replace(",", "")) for row in rows) == at_3s["ops.sent"]
    assert sum(int(row[6].replace(",", "")) for row in rows) == at_3s["ops.completed"]
    assert "PASS  RSS flat, p99 steady, every operation accounted for" in out
    assert (folder / "report.html").exists()  # an ordinary results folder


@pytest.mark.timeout(60)
def test_the_runner_exits_99_with_its_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(run_soak(tmp_path, "--max-rss-growth", "-1000", "--max-p99-drift", "1000"))
    out = capsys.readouterr().out

    assert code == 99
    assert "FAIL  RSS grew" in out
    assert "PASS" not in out


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--duration", "ten minutes", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["loadgen soak: --duration: expected a duration such as 250ms, 1.5s, 2m or a "
                   "number of seconds, got 'ten minutes'"]  # fmt: skip
    stages = 'platform.arrival.stages=[{duration="1s", rate=0}]'
    assert main(["--set", stages, "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "loadgen soak: scenarios/soak.toml: platform.arrival.stages: expected a rate > 0 in the"
        " scenario's last stage, or --rate"
    ]
