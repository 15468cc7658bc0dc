"""Issue 7 acceptance: ``--shard i/N`` splits a campaign exactly; ``--shards N`` runs and merges.

``apply_shard`` and ``k8s-manifest`` are checked in process and fast. The ``--shards`` tests are
real time: ``run_local_shards`` starts real ``python -m loadgen run --shard i/N`` processes at a
common instant (the start barrier, once all are ready), and each shard's two sides talk over
loopback sockets; each test takes 6 to 10 s.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from loadgen.campaign.scenario import Scenario, load_scenario
from loadgen.cli import main
from loadgen.report.results import load_run
from loadgen.scale.shard import Shard, apply_shard

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
SHORT_STAGE = 'platform.arrival.stages=[{duration="1s", rate=40}]'


def _scenario(*overrides: str, path: Path = SMOKE) -> Scenario:
    return load_scenario(path, overrides).scenario


def _shards(scenario: Scenario, count: int) -> list[Scenario]:
    return [apply_shard(scenario, Shard(index, count)) for index in range(count)]


@pytest.mark.parametrize(("devices", "count"), [(1001, 3), (100_000, 7), (5, 5), (50, 1)])
def test_shards_split_the_devices_and_the_rate_exactly(devices: int, count: int) -> None:
    whole = _scenario(
        f"devices.count={devices}",
        "devices.first_index=100",
        "devices.http_port=1123",
        "devices.https_port=11235",
        "platform.south.port=8000",
    )
    shards = _shards(whole, count)
    assert whole.devices is not None
    assert whole.platform is not None

    owned = []
    for shard in shards:
        assert shard.devices is not None
        owned.extend(
            range(shard.devices.first_index, shard.devices.first_index + shard.devices.count)
        )
    assert owned == list(range(100, 100 + devices))  # the ranges tile the fleet, in order
    for stage_index, stage in enumerate(whole.platform.arrival.stages):
        rates = [s.platform.arrival.stages[stage_index].rate for s in shards if s.platform]
        assert sum(rates) == pytest.approx(stage.rate)
        assert all(
            s.platform.arrival.stages[stage_index].ramp == stage.ramp for s in shards if s.platform
        )
    for index, shard in enumerate(shards):
        assert shard.devices is not None
        assert shard.platform is not None
        assert shard.devices.http_port == 1123 + index
        assert shard.devices.https_port == 11235 + index
        assert shard.platform.south.port == 8000 + index
    assert len({s.devices.seed for s in shards if s.devices}) == count
    assert len({s.platform.seed for s in shards if s.platform}) == count


def test_a_shard_keeps_any_free_port_free() -> None:
    for shard in _shards(_scenario(), 3):
        assert shard.devices is not None
        assert shard.platform is not None
        assert shard.devices.http_port == 0
        assert shard.platform.south.port == 0


def test_with_both_sides_every_shard_has_devices_to_target() -> None:
    """Regression: the placeholder targets (count 1) were split too, so shard 0 of 2 got none
    and failed with 'count: expected at least 1 device' before any load."""
    for shard in _shards(_scenario("devices.count=20"), 2):
        assert shard.devices is not None
        assert shard.devices.count == 10
        assert shard.platform is not None
        assert shard.platform.targets.count >= 1  # replaced by the shard's fleet at run time


def test_closed_model_concurrency_adds_up() -> None:
    """Regression: ``concurrency // N`` lost the remainder (10 over 3 shards ran 9)."""
    whole = _scenario('platform.arrival.model="closed"', "platform.arrival.concurrency=10")
    concurrencies = [s.platform.arrival.concurrency for s in _shards(whole, 3) if s.platform]
    assert sorted(concurrencies) == [3, 3, 4]


def test_platform_only_targets_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_API_KEY", "k")
    example = REPO / "scenarios" / "real-devices.example.toml"
    whole = _scenario("platform.targets.count=10", path=example)
    firsts = []
    for shard in _shards(whole, 3):
        assert shard.platform is not None
        targets = shard.platform.targets
        firsts.extend(range(targets.first_index, targets.first_index + targets.count))
    assert firsts == list(range(10))


def test_k8s_manifest_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = ["k8s-manifest", str(SMOKE), "--shards", "4", "--image", "registry.example/lg:1"]
    code = main(manifest)

    assert code == 0
    config_map, _, job = yaml.safe_load_all(capsys.readouterr().out)
    assert config_map["kind"] == "ConfigMap"
    assert config_map["data"]["scenario.toml"] == SMOKE.read_text(encoding="utf-8")
    assert job["kind"] == "Job"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shard") + 1] == "$(SHARD_INDEX)/4"
    assert "--start-at" not in args


def test_k8s_manifest_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "job.yaml"
    code = main(["k8s-manifest", str(SMOKE), "--shards", "2", "--image", "x", "-o", str(out)])

    assert code == 0
    assert capsys.readouterr().out == ""
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out.read_text())]
    assert kinds == ["ConfigMap", "Service", "Job"]


# --- real shard processes ------------------------------------------------------------------------


def _summary(directory: Path) -> dict[str, Any]:
    summary: dict[str, Any] = orjson.loads((directory / "summary.json").read_bytes())
    return summary


def _run_shards(results: Path, *overrides: str) -> tuple[int, Path]:
    argv = ["run", str(SMOKE), "--shards", "2", "--results", str(results), "-q"]
    for assignment in overrides:
        argv += ["--set", assignment]
    code = main(argv)
    [merged] = [p for p in results.glob("*/*") if p.is_dir()]
    return code, merged


def _hlog_count(directory: Path, recorder: str) -> int:
    total = load_run(directory).totals.get(recorder)
    return 0 if total is None else int(total.get_total_count())


@pytest.mark.slow
def test_two_local_shards_run_together_and_merge_exactly(tmp_path: Path) -> None:
    """Real time: two shard processes on a common wall-clock start (module docstring), ~7 s."""
    code, merged = _run_shards(tmp_path, SHORT_STAGE, "devices.count=20")

    assert code == 0
    folders = sorted(merged.glob("shard-*-of-2"))
    assert [f.name for f in folders] == ["shard-0-of-2", "shard-1-of-2"]
    shards = [_summary(folder) for folder in folders]
    total = _summary(merged)
    assert (merged / "report.html").is_file()
    assert all((folder / "report.html").is_file() for folder in folders)
    assert not total["interrupted"]
    for key, value in total["operations"].items():
        assert value == sum(s["operations"][key] for s in shards), key
    assert total["operations"]["sent"] == 40  # 1 s at 40/s, 20/s per shard
    for name, value in total["counters"].items():
        assert value == sum(s["counters"].get(name, 0) for s in shards), name
    for phase in ("ack", "first_response", "complete", "callback"):
        count = total["latency_ms"][phase]["count"]
        assert count == sum(s["latency_ms"][phase]["count"] for s in shards), phase
        assert count == _hlog_count(merged, phase) == sum(_hlog_count(f, phase) for f in folders)
    assert total["offered_rate"] == pytest.approx(sum(s["offered_rate"] for s in shards))
    assert total["extra"]["devices"]["device.devices"] == 20
    # a common start: the shards began within a fraction of a second of each other
    starts = [orjson.loads((f / "run.json").read_bytes())["started_at"] for f in folders]
    assert max(starts) - min(starts) < 0.5


@pytest.fixture
def port_pair() -> Iterator[int]:
    """A free port P whose neighbour P + 1 is held here: shard 1 (fixed ports + 1) cannot bind."""
    for _ in range(50):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        port: int = held.getsockname()[1] - 1
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            held.close()
            continue
        held.listen()
        try:
            yield port
        finally:
            held.close()
        return
    pytest.fail("no pair of neighbouring free ports")


@pytest.mark.slow
def test_a_shard_that_cannot_start_stops_them_all_at_the_barrier(
    tmp_path: Path, port_pair: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real time: two shard processes, one of which fails to bind its fixed port, ~5 s.

    Issue 13: no shard starts a load its campaign cannot run whole. The one that fails says so
    at the barrier, the other fails at once (not at the 60 s timeout) naming it, and nothing is
    left to merge."""
    code, merged = _run_shards(
        tmp_path, SHORT_STAGE, "devices.count=20", f"devices.http_port={port_pair}"
    )

    assert code == 1
    err = capsys.readouterr().err
    assert "shard 0/2 failed with exit code 2" in err
    assert "shard 1/2 failed with exit code 2" in err
    assert "no shard left any results" in err
    assert not list(merged.glob("shard-*"))  # neither began its load: no folder left
    assert not (merged / "summary.json").exists()


@pytest.mark.slow
def test_a_campaign_of_100000_devices_across_shards_reports_all_of_them(tmp_path: Path) -> None:
    """Real time: two shard processes of 50,000 devices each, 2 s at 200 ops/s, ~8 s."""
    code, merged = _run_shards(
        tmp_path,
        'platform.arrival.stages=[{duration="2s", rate=200}]',
        "devices.count=100000",
        "output.html=false",  # the shards' own reports; the merged one is always written
    )

    assert code == 0
    shards = [_summary(folder) for folder in sorted(merged.glob("shard-*-of-2"))]
    assert [s["extra"]["devices"]["device.devices"] for s in shards] == [50_000, 50_000]
    total = _summary(merged)
    assert total["extra"]["devices"]["device.devices"] == 100_000
    assert total["counters"]["device.devices"] == 100_000
    assert total["operations"]["sent"] == sum(s["operations"]["sent"] for s in shards) == 400
    assert total["operations"]["completed"] == 400
    report = (merged / "report.html").read_text(encoding="utf-8")
    assert "device.devices" in report
    assert "100000" in report or "100,000" in report


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_sharded_run_stopped_with_sigint_is_merged_over_the_window_it_ran(
    tmp_path: Path,
) -> None:
    """Real time: two shard processes of a 30 s plan, SIGINT to the parent ~2 s into the load
    (issue 15, item 5), ~8 s. The shards run in their own sessions, so a terminal's Ctrl-C
    reaches only the parent, which passes it on: the test signals the parent alone."""
    command = [
        sys.executable, "-m", "loadgen", "run", str(SMOKE), "--shards", "2",
        "--results", str(tmp_path), "-q",
        "--set", 'platform.arrival.stages=[{duration="30s", rate=40}]',
        "--set", "devices.count=20",
    ]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The shards write run.json (with the load's common start) before the load begins.
        deadline = time.monotonic() + 20
        starts: list[float] = []
        while len(starts) < 2 and time.monotonic() < deadline and parent.poll() is None:
            starts = [
                orjson.loads(path.read_bytes())["started_at"]
                for path in tmp_path.glob("*/*/shard-*-of-2/run.json")
            ]
            time.sleep(0.05)
        assert len(starts) == 2, "the shards did not start"
        time.sleep(max(0.0, max(starts) + 2.0 - time.time()))
        parent.send_signal(signal.SIGINT)
        out, err = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()

    assert parent.returncode == 130, (out.decode(), err.decode())
    [merged] = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    folders = sorted(merged.glob("shard-*-of-2"))
    shards = [_summary(folder) for folder in folders]
    total = _summary(merged)
    assert all(shard["interrupted"] for shard in shards)
    assert total["interrupted"] is True
    windows = [shard["load_duration_s"] for shard in shards]
    assert all(1.0 < window < 10.0 for window in windows), windows
    assert 1.0 < total["load_duration_s"] < 10.0
    assert total["load_duration_s"] == pytest.approx(max(windows))
    # Each shard offered and achieved ~20/s over its own window; the merge, their sum over
    # the common window (not 40/s's worth of operations spread over the 30 s plan).
    for shard in shards:
        assert shard["offered_rate"] == pytest.approx(20.0, rel=0.1)
        assert shard["achieved_rate"] == pytest.approx(20.0, rel=0.25)
    assert total["offered_rate"] == pytest.approx(sum(s["offered_rate"] for s in shards))
    assert total["achieved_rate"] == pytest.approx(sum(s["achieved_rate"] for s in shards), rel=0.1)
    for key, value in total["operations"].items():
        assert value == sum(s["operations"][key] for s in shards), key
    rows = load_run(merged).timeseries
    assert rows
    for column in ("stage", "offered_rate", "in_flight", "phase"):
        assert all(row.get(column) not in (None, "") for row in rows), (column, rows)
    assert {row["phase"] for row in rows} <= {"load", "drain"}
    assert rows[0]["phase"] == "load"
