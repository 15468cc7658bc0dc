"""Issue 13 acceptance: real shard processes started apart meet at the barrier, start their load
together, and merge exactly.

Real time and real processes (the point is separate event loops and wall clocks reading one
folder): four ``python -m loadgen run --shard i/4 --barrier DIR`` started 1 s apart, ~10 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scale_helpers import check_exact_merge, start_spread

from loadgen.scale.merge import merge_runs

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
OVERRIDES = (
    'platform.arrival.stages=[{duration="1s", rate=40}]',
    "devices.count=20",
    "output.html=false",
)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_four_shards_started_3_s_apart_start_within_50_ms_and_merge_exactly(
    tmp_path: Path,
) -> None:
    """Real time (module docstring)."""
    barrier = tmp_path / "barrier"
    folders = [tmp_path / f"shard-{i}-of-4" for i in range(4)]
    processes = []
    began = time.monotonic()
    for index, folder in enumerate(folders):
        if index:
            time.sleep(1.0)  # the last starts 3 s after the first
        command = [
            sys.executable, "-m", "loadgen", "run", str(SMOKE), "--shard", f"{index}/4",
            "--barrier", str(barrier), "--directory", str(folder), "--quiet",
        ]  # fmt: skip
        for assignment in OVERRIDES:
            command += ["--set", assignment]
        processes.append(
            subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ
            )
        )
    assert time.monotonic() - began >= 3.0
    errors = [p.communicate(timeout=60)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors

    spread = start_spread(folders)
    print(f"load starts spread over {spread * 1000:.1f} ms")
    assert spread < 0.050
    merged = merge_runs(folders, tmp_path / "merged")
    from loadgen.report.rebuild import rebuild

    rebuild(merged)
    check_exact_merge(folders, merged, sent=40)


@pytest.mark.slow
def test_a_shard_alone_at_the_barrier_fails_in_one_line(tmp_path: Path) -> None:
    """Real time: one shard of two, a 0.5 s timeout; exit 2, one line, no folder, ~3 s."""
    folder = tmp_path / "shard-0-of-2"
    command = [
        sys.executable, "-m", "loadgen", "run", str(SMOKE), "--shard", "0/2",
        "--barrier", str(tmp_path / "barrier"), "--barrier-timeout", "0.5",
        "--barrier-lead", "0.2", "--directory", str(folder), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert lines == [
        "loadgen run: --barrier: 1 of 2 shards ready after 0.5 s; missing shard 1 "
        f"(in {tmp_path / 'barrier'})"
    ], lines
    assert not folder.exists()
