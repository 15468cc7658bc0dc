"""Issue 5 acceptance: failed thresholds, Ctrl-C, SIGKILL, and ``loadgen compare`` on real runs.

All real time: the campaign's two sides talk over loopback sockets (the mock clock would jump
past every round trip), and the interruption tests need a separate ``python -m loadgen`` process
to signal, its results flushed to disk interval by interval on the wall clock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from campaign_helpers import (
    REPO,
    SCENARIOS,
    SHORT,
    check_results_folder,
    load_summary,
    only_run,
    run_cli,
    sets,
)

from loadgen.cli import main
from loadgen.report.results import read_hlog

SMOKE = SCENARIOS / "smoke.toml"
# a run long enough to be interrupted: 20 s planned, stopped after about 2 s
LONG = ('platform.arrival.stages=[{duration="20s", rate=50}]', "devices.count=20")
PLANNED_OPERATIONS = 20 * 50
WAIT = 30.0  # seconds: an upper bound on every wait below, never reached when things work


def _start(results: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "loadgen", "run", str(SMOKE), *sets(*LONG, *extra)]
    command += ["--results", str(results), "-q"]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )


def _wait_for_intervals(results: Path, process: subprocess.Popen[bytes], lines: int) -> Path:
    """The run's folder once ``lines`` intervals are on disk (the load is then running)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for counters in results.glob("*/*/counters.jsonl"):
            if counters.read_bytes().count(b"\n") >= lines:
                return counters.parent
        time.sleep(0.05)
    process.kill()
    raise AssertionError(
        f"no {lines} intervals within {WAIT} s: {process.communicate(timeout=WAIT)}"
    )


@pytest.mark.slow
def test_sigkill_leaves_logs_that_loadgen_report_turns_into_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real time: a separate process killed mid-run (see the module docstring), ~4 s."""
    process = _start(tmp_path)
    directory = _wait_for_intervals(tmp_path, process, lines=2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=WAIT)
    assert process.returncode == -signal.SIGKILL
    assert not (directory / "summary.json").exists()
    assert not (directory / "report.html").exists()

    code, out, _ = run_cli(["report", str(directory)], capsys)

    assert code == 0
    assert "(interrupted)" in out
    summary = check_results_folder(directory, killed=True)
    assert summary["interrupted"] is True
    assert "NOT FINISHED" in (directory / "report.html").read_text(encoding="utf-8")
    ops = summary["operations"]
    assert 0 < ops["sent"] < PLANNED_OPERATIONS
    assert summary["load_duration_s"] < 20
    # the numbers are those of the intervals on disk: the hlog totals
    for phase, recorder in (("complete", "complete"), ("ack", "ack"), ("callback", "callback")):
        total = sum(h.get_total_count() for _, _, h in read_hlog(directory / f"{recorder}.hlog"))
        assert summary["latency_ms"][phase]["count"] == total, phase
    # the fleet's size survives the kill (a counter, not only the live run's statistics)
    assert summary["extra"]["devices"]["device.devices"] == 20


@pytest.mark.slow
def test_ctrl_c_stops_the_load_drains_and_writes_results_marked_interrupted(
    tmp_path: Path,
) -> None:
    """Real time: a separate process interrupted mid-run (see the module docstring), ~4 s."""
    process = _start(tmp_path)
    directory = _wait_for_intervals(tmp_path, process, lines=2)
    interrupted_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=WAIT)

    assert process.returncode == 130, err
    assert time.monotonic() - interrupted_at < 10  # the drain, not the rest of the 20 s
    assert f"results: {directory}".encode() in out
    summary = check_results_folder(directory)
    assert summary["interrupted"] is True
    assert summary["extra"]["interrupted_by"] == "SIGINT"
    ops = summary["operations"]
    assert 0 < ops["sent"] < PLANNED_OPERATIONS
    # drained: every operation sent has its end, none is left uncounted
    assert ops["sent"] == ops["completed"] + ops["timed_out"] + ops["errors"]
    assert "INTERRUPTED" in (directory / "report.html").read_text(encoding="utf-8")


# Every operation is an UPDATE whose final response comes 20 s later: at the first Ctrl-C all of
# them are still in flight, and the drain (grace: min(timeout, 30 s)) would wait for them.
SLOW_FINALS = (
    'platform.mix=[{name="UPDATE"}]',
    'devices.profiles.UPDATE.delays.final={kind="fixed", value="20s"}',
    'platform.timeouts.timeout="25s"',
)


@pytest.mark.slow
def test_a_second_ctrl_c_cuts_the_drain_and_still_accounts_for_every_operation(
    tmp_path: Path,
) -> None:
    """Real time: a separate process interrupted twice mid-run (see the module docstring).

    The first Ctrl-C stops the load; the second cuts the drain: the operations still in flight
    are recorded as timed out at their deadlines, so the counts still add up, and the run ends
    long before the 20 s the finals would take.
    """
    process = _start(tmp_path, *SLOW_FINALS)
    directory = _wait_for_intervals(tmp_path, process, lines=2)
    interrupted_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=WAIT)

    assert process.returncode == 130, err
    assert time.monotonic() - interrupted_at < 8  # not the 20 s the finals would take
    summary = check_results_folder(directory)
    assert summary["interrupted"] is True
    ops = summary["operations"]
    # completed: a second UPDATE on a busy device is refused at once (ALREADY_IN_PROGRESS);
    # timed out: every UPDATE that was running, its final still 20 s away
    assert ops["timed_out"] > 0
    assert ops["sent"] == ops["completed"] + ops["timed_out"] + ops["errors"]
    assert summary["latency_ms"]["complete"]["count"] == ops["completed"] + ops["timed_out"]
    # the cut operations are recorded at their deadline (25 s after their intended time)
    assert summary["latency_ms"]["complete"]["max"] >= 25_000


@pytest.fixture(scope="module")
def two_smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A shortened smoke run, and one whose threshold cannot hold: (A, B, B's exit code)."""
    root = tmp_path_factory.mktemp("smoke-runs")
    assert main(["run", str(SMOKE), *sets(*SHORT), "--results", str(root / "a"), "-q"]) == 0
    impossible = sets(*SHORT, 'thresholds=["p99(complete) < 1us"]')
    code = main(["run", str(SMOKE), *impossible, "--results", str(root / "b"), "-q"])
    return only_run(root / "a"), only_run(root / "b"), code


@pytest.mark.slow
def test_a_failed_threshold_exits_99(two_smoke_runs: tuple[Path, Path, int]) -> None:
    """Real time: two ~1 s smoke runs over loopback (see the module docstring)."""
    _, failed, code = two_smoke_runs

    assert code == 99
    summary = check_results_folder(failed)
    [threshold] = summary["thresholds"]
    assert threshold["expression"] == "p99(complete) < 1us"
    assert threshold["ok"] is False
    assert not summary["interrupted"]


@pytest.mark.slow
def test_compare_prints_a_table_of_two_runs(
    two_smoke_runs: tuple[Path, Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Real time: the two runs of the fixture (see the module docstring)."""
    a, b, _ = two_smoke_runs

    code, out, _ = run_cli(["compare", str(a), str(b)], capsys)

    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"A: {a}")
    assert lines[1].startswith(f"B: {b}")
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", "A", "B", "B", "-", "A", "change", "verdict"]
    sent = load_summary(a)["operations"]["sent"], load_summary(b)["operations"]["sent"]
    row = next(line for line in lines if line.startswith("operations sent"))
    assert row.split()[2:4] == [str(sent[0]), str(sent[1])]
    assert any(line.startswith("complete p99 ms") for line in lines)
