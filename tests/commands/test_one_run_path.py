"""One run path: ``run``, ``devices`` and ``platform`` leave the same results folder, rebuild with
``loadgen report`` and drain on SIGINT the same way (exit 130, every operation accounted once).

Real processes and real time (SIGINT needs a main thread of its own, and the point is what a
user's terminal sees): each test runs a few seconds of load on loopback and stops it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import orjson
import pytest

SCENARIOS: Final = Path(__file__).parents[2] / "scenarios"
LAYOUT: Final = {
    "run.json", "scenario.toml", "summary.json", "timeseries.csv", "counters.jsonl",
    "report.html", "complete.hlog", "callback.hlog",
}  # fmt: skip
LOADGEN: Final = (sys.executable, "-m", "loadgen")


def _start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LOADGEN, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(process: subprocess.Popen[str], pattern: str, timeout: float = 20.0) -> str:
    """The first stderr line matching ``pattern`` (the process keeps running)."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if re.search(pattern, line):
            return line
        if not line and process.poll() is not None:
            break
    pytest.fail(f"no line matching {pattern!r}")


def _interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return out, err


def _folder(root: Path, campaign: str) -> Path:
    [folder] = (root / campaign).iterdir()
    return folder


def _check(folder: Path, layout: set[str]) -> dict[str, object]:
    assert layout <= {path.name for path in folder.iterdir()}
    summary: dict[str, object] = orjson.loads((folder / "summary.json").read_bytes())
    rebuilt = subprocess.run(
        [*LOADGEN, "report", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = orjson.loads((folder / "summary.json").read_bytes())
    assert again["operations"] == summary["operations"]
    assert again["interrupted"] == summary["interrupted"]
    return summary


def _accounted(summary: dict[str, object]) -> None:
    ops = summary["operations"]
    assert isinstance(ops, dict)
    assert ops["sent"] > 0
    assert ops["sent"] == ops["completed"] + ops["timed_out"] + ops["errors"]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[str]:
    """A fleet served by ``loadgen devices`` (its own results under tmp/fleet); its URL."""
    process = _start(
        "devices", "--count", "100", "--http-port", "0", "--duration", "60s",
        "--progress", "lines", "--results", str(tmp_path / "fleet"),
    )  # fmt: skip
    line = _wait_for(process, r"devices: 100 listening on")
    yield line.rsplit(" ", 1)[-1].strip()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)


@pytest.mark.slow
def test_run_drains_on_sigint(tmp_path: Path) -> None:
    """Real time: ``loadgen run`` of the smoke scenario made 30 s long, stopped after ~1 s."""
    process = _start(
        "run", str(SCENARIOS / "smoke.toml"), "--set",
        'platform.arrival.stages=[{duration="30s", rate=50}]', "--progress", "lines",
        "--results", str(tmp_path),
    )  # fmt: skip
    _wait_for(process, r"^1\.0s/30\.0s")
    out, err = _interrupt(process)
    assert process.returncode == 130, err
    assert re.search(r"SIGINT: draining \d+ in flight — Ctrl-C again to stop now", err)
    assert "campaign smoke  (interrupted)" in out
    folder = _folder(tmp_path, "smoke")
    summary = _check(folder, LAYOUT)
    assert summary["interrupted"] is True
    _accounted(summary)
    assert summary["load_duration_s"] < 10  # the window that ran, not the 30 s planned
    # smoke.toml pins its seeds; the ones a run uses are in all three files alike
    saved = tomllib.loads((folder / "scenario.toml").read_text(encoding="utf-8"))
    seeds = {side: saved[side]["seed"] for side in ("devices", "platform")}
    assert orjson.loads((folder / "run.json").read_bytes())["seed"] == seeds
    assert summary["seed"] == seeds


@pytest.mark.slow
def test_platform_drains_on_sigint(fleet: str, tmp_path: Path) -> None:
    """Real time: ``loadgen platform`` against ``loadgen devices``, stopped after ~1 s."""
    process = _start(
        "platform", "--url", fleet, "--devices", "100", "--rate", "100", "--duration", "30s",
        "--op", "REBOOT_EQUIPMENT:3", "--op", "SET_CLOCK_EQUIPMENT:1",
        "--progress", "lines", "--results", str(tmp_path / "platform-runs"),
    )  # fmt: skip
    _wait_for(process, r"^1\.0s/30\.0s")
    out, err = _interrupt(process)
    assert process.returncode == 130, err
    assert "Ctrl-C again to stop now" in err
    assert "by operation" in out  # two names in the mix: the per-name table
    summary = _check(_folder(tmp_path / "platform-runs", "platform"), LAYOUT - {"callback.hlog"})
    _accounted(summary)
    assert set(summary["by_operation"]) == {"REBOOT_EQUIPMENT", "SET_CLOCK_EQUIPMENT"}


@pytest.mark.slow
def test_devices_drain_on_sigint(tmp_path: Path) -> None:
    """Real time: ``loadgen devices`` served for ~1 s, then SIGINT."""
    process = _start(
        "devices", "--count", "10", "--http-port", "0", "--progress", "lines",
        "--results", str(tmp_path),
    )  # fmt: skip
    _wait_for(process, r"^1\.0s")
    out, err = _interrupt(process)
    assert process.returncode == 130, err
    assert "Ctrl-C again to stop now" in err
    assert "campaign devices  (interrupted)" in out
    summary = _check(_folder(tmp_path, "devices"), LAYOUT - {"complete.hlog", "callback.hlog"})
    assert summary["interrupted"] is True
    assert summary["extra"]["devices"]["device.devices"] == 10  # type: ignore[index]
