"""Issue 5 acceptance: every shipped scenario validates, runs (shortened) and leaves a complete folder.

The end-to-end runs are real time: both sides talk over real loopback sockets, which the mock
clock cannot drive (it would jump past every round trip), and ``run.json``/the ``.hlog`` files are
stamped with the wall clock. Each run is shortened with ``--set`` to about a second of load.
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
from campaign_helpers import (
    SCENARIOS,
    SHORT,
    SHORT_STAGE,
    check_results_folder,
    load_summary,
    only_run,
    run_cli,
    sets,
)

from loadgen.campaign.runner import run_campaign
from loadgen.campaign.scenario import load_scenario

SHIPPED = sorted(SCENARIOS.glob("*.toml"))
IN_PROCESS = [path for path in SHIPPED if not path.name.endswith(".example.toml")]
EXAMPLES = [path for path in SHIPPED if path.name.endswith(".example.toml")]
# what each example needs from the environment (the ones without a default)
EXAMPLE_ENV = {
    "real-devices.example.toml": {"DEVICE_API_KEY"},
    "real-platform.example.toml": {"DEVICE_API_KEY", "OPENGATE_API_KEY"},
    "real-opengate.example.toml": {"OPENGATE_API_KEY"},
}
# beyond SHORT: what keeps a scenario's own slow parts (long delays, timeouts, polls) to ~1 s
EXTRA = {
    "faults.toml": ('platform.timeouts.timeout="1s"', 'platform.timeouts.ack_timeout="500ms"'),
    # 3 % of updates fail by design: 500 operations, so the error rate measures the mix
    "firmware-update.toml": (
        'devices.default.delays.step={kind="fixed", value="5ms"}',
        'platform.arrival.stages=[{duration="2s", rate=250}]',
        "devices.count=500",
    ),
    "sleepy-devices.toml": ('devices.sleepy.poll_period="200ms"',),
    # the north side's own stages: the same second at the same rate as SHORT's
    "north-e2e.toml": ('north.arrival.stages=[{duration="1s", rate=20}]', "north.seed=11"),
    # minutes of steps become milliseconds; the grace no longer needs to wait for them
    "fleet-update.toml": (
        'devices.default.delays.step={kind="uniform", low="2ms", high="8ms"}',
        'devices.default.delays.final={kind="fixed", value="5ms"}',
        'platform.drain_grace="10s"',
    ),
}


def test_the_shipped_scenarios_are_all_there() -> None:
    names = {path.name for path in SHIPPED}
    assert {"smoke.toml", "default.toml", "soak.toml", *EXAMPLE_ENV} <= names
    assert len(IN_PROCESS) >= 7


def test_every_shipped_scenario_validates(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEVICE_API_KEY", "OPENGATE_API_KEY", "OPENGATE_SOUTH_URL", "DEVICE_URL",
                 "OPENGATE_NORTH_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)

    code, out, _ = run_cli(["validate", *map(str, SHIPPED)], capsys)

    assert code == 0, out
    lines = out.splitlines()
    for path in SHIPPED:
        assert any(line.startswith(f"ok      {path}:") for line in lines), path
    # the examples validate with stand-ins for their secrets, and say which ones
    for name, needed in EXAMPLE_ENV.items():
        at = next(i for i, line in enumerate(lines) if name in line)
        note = lines[at + 1]
        assert "validated with stand-ins" in note
        assert set(note.split("variables ")[1].split(" to run")[0].split(", ")) == needed


def test_validate_with_the_variables_set_needs_no_stand_ins(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICE_API_KEY", "k1")
    monkeypatch.setenv("OPENGATE_API_KEY", "k2")

    code, out, _ = run_cli(["validate", *map(str, EXAMPLES)], capsys)

    assert code == 0
    assert "stand-ins" not in out


@pytest.mark.slow
def _last(overrides: list[str], key: str) -> Any:
    """The value the last override of ``key`` gives it."""
    [*_, text] = (o.split("=", 1)[1] for o in overrides if o.startswith(key + "="))
    return tomllib.loads(f"v = {text}")["v"]


@pytest.mark.parametrize("path", IN_PROCESS, ids=lambda p: p.stem)
def test_each_shipped_scenario_runs_shortened(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real time: both sides over loopback sockets (see the module docstring), ~1 s of load."""
    # seeded: a shipped scenario must pass as shipped, and a test run of it must not depend on luck
    overrides = [*SHORT, "devices.seed=11", "platform.seed=11", *EXTRA.get(path.name, ())]
    stages, count = _last(overrides, "platform.arrival.stages"), _last(overrides, "devices.count")

    code, out, err = run_cli(
        ["run", str(path), *sets(*overrides), "--results", str(tmp_path), "-q"], capsys
    )

    directory = only_run(tmp_path)
    summary = check_results_folder(directory)
    failed = [t for t in summary["thresholds"] if not t["ok"]]
    assert not failed, failed  # shipped scenarios pass their own thresholds
    assert code == 0, (out, err)
    assert f"results: {directory}" in out
    assert not summary["interrupted"]
    ops = summary["operations"]
    assert ops["sent"] > 0
    assert ops["completed"] + ops["timed_out"] + ops["errors"] == ops["sent"]
    assert summary["offered_rate"] == pytest.approx(stages[0]["rate"])
    assert len(summary["thresholds"]) == len(tomllib.loads(path.read_text())["thresholds"])
    # the saved scenario is the resolved one: overrides applied
    saved = tomllib.loads((directory / "scenario.toml").read_text(encoding="utf-8"))
    assert saved["devices"]["count"] == count
    assert saved["platform"]["arrival"]["stages"] == stages
    # the fleet's figures, and its size as a counter (what a merge of shards sums)
    assert summary["extra"]["devices"]["device.devices"] == count
    assert summary["counters"]["device.devices"] == count


def _free_port() -> int:
    """A port free right now (the examples name the ports of both sides before either binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _wait_listening(port: int) -> None:
    with trio.fail_after(10):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


@pytest.mark.slow
async def test_the_two_examples_run_against_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real time, loopback sockets between two campaigns in this process (~3 s).

    The examples face real systems; here each plays the other's real system: the devices-only
    example (real-platform) serves the platform-only example (real-devices), which POSTs nothing
    itself but receives the fleet's asynchronous responses on its south API. Every secret comes
    from the environment and stays out of the results folders.
    """
    fleet_port, south_port = _free_port(), _free_port()
    secrets = {"DEVICE_API_KEY": "device-secret-1234", "OPENGATE_API_KEY": "south-secret-5678"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENGATE_SOUTH_URL", f"http://127.0.0.1:{south_port}")
    monkeypatch.setenv("DEVICE_URL", f"http://127.0.0.1:{fleet_port}")
    monkeypatch.setenv("SOUTH_HOST", "127.0.0.1")
    devices = load_scenario(
        SCENARIOS / "real-platform.example.toml",
        [
            'campaign.duration="3s"',
            "devices.count=10",
            'devices.host="127.0.0.1"',
            f"devices.http_port={fleet_port}",
            "devices.https_port=0",
            'devices.default.delays.final={kind="fixed", value="20ms"}',
        ],
    )
    platform = load_scenario(
        SCENARIOS / "real-devices.example.toml",
        [
            'platform.arrival.stages=[{duration="1s", rate=10}]',
            'platform.south.host="127.0.0.1"',
            f"platform.south.port={south_port}",
            'platform.south.api_key="${OPENGATE_API_KEY}"',  # the south API checks the key
            'platform.targets.id_pattern="loadgen-{:06d}"',  # the example fleet's ids
        ],
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_campaign(
                devices, directory=tmp_path / "devices" / "x" / "run", progress="quiet"
            )
        )
        await _wait_listening(fleet_port)
        operated = await run_campaign(
            platform, directory=tmp_path / "platform" / "x" / "run", progress="quiet"
        )

    fleet_dir = only_run(tmp_path / "devices")
    fleet = check_results_folder(fleet_dir)
    check_results_folder(operated.directory)
    ops = operated.summary["operations"]
    assert ops["sent"] == 10
    assert ops["succeeded"] == 10
    assert fleet["counters"]["device.ops.received"] == 10
    assert fleet["latency_ms"]["callback"]["count"] >= 10  # every final POSTed to the south API
    assert fleet["extra"]["devices"]["device.devices"] == 10
    # ${...} is saved as written; the values never reach a results folder
    saved = (fleet_dir / "scenario.toml").read_text(encoding="utf-8")
    assert 'api_key = "${DEVICE_API_KEY}"' in saved
    assert 'api_key = "${OPENGATE_API_KEY}"' in saved
    for folder in (fleet_dir, operated.directory):
        for path in folder.iterdir():
            text = path.read_bytes()
            assert not any(value.encode() in text for value in secrets.values()), path
    assert load_summary(operated.directory)["campaign"] == "real-devices"


def test_short_stage_override_is_what_the_runs_use() -> None:
    loaded = load_scenario(SCENARIOS / "smoke.toml", [SHORT_STAGE])
    assert loaded.scenario.load_seconds == 1.0
