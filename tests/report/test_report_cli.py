"""``loadgen report`` and ``loadgen compare`` through their argparse registration."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from report_fixtures import Recorded
from trio.testing import MockClock

from loadgen.commands.report import register
from loadgen.errors import ConfigError

MakeRun = Callable[..., Awaitable[Recorded]]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="loadgen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


async def test_report_rebuilds_and_prints_the_summary(
    make_run: MakeRun, autojump_clock: MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = await make_run(seconds=3, finish=False)

    code = run_cli(["report", str(recorded.directory)])

    out = capsys.readouterr().out
    assert code == 0  # a failed threshold is reported, not turned into an exit code
    assert "campaign synthetic  (interrupted)" in out
    assert "✗ error_rate < 0.1%" in out
    assert f"report:  {recorded.directory / 'report.html'}" in out
    assert (recorded.directory / "summary.json").exists()
    assert (recorded.directory / "report.html").exists()


async def test_compare_prints_the_table(
    make_run: MakeRun, autojump_clock: MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await make_run("a", seconds=2)
    b = await make_run("b", seconds=2)

    code = run_cli(["compare", str(a.directory), str(b.directory)])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"A: {a.directory}  (synthetic")
    assert "no regression beyond 5%" in out


def test_not_a_results_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a results folder"):
        run_cli(["report", str(tmp_path)])


def test_registering_does_not_load_matplotlib() -> None:
    """``loadgen --help`` must stay fast: the plotting stack loads only when a report is drawn."""
    probe = "import sys, loadgen.commands.report; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
