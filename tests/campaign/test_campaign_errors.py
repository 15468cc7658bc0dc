"""Issue 5 acceptance: a broken scenario fails before any load, naming the file and the key.

Each case goes through ``loadgen run`` as a user would type it: exit code 2, one message on stderr
naming the scenario file and the key path, and no results folder (nothing ran, nothing to keep).
No case reaches the network, so these are fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from campaign_helpers import SCENARIOS, run_cli, sets

SMOKE = SCENARIOS / "smoke.toml"

# (id, overrides on smoke.toml, the key the message names, a word of the expectation)
BROKEN = [
    ("wrong-type", ['devices.count="many"'], "devices.count", "integer"),
    (
        "wrong-type-nested",
        ["platform.timeouts.ack_timeout=[1]"],
        "platform.timeouts.ack_timeout",
        "got [1]",
    ),
    ("unknown-key", ["devices.colour=3"], "devices.colour", "unknown key"),
    ("unknown-top-level-key", ["turbo=true"], "turbo", "unknown key"),
    (
        "unknown-phase-in-threshold",
        ['thresholds=["p99(nonsense) < 1s"]'],
        "thresholds[0]",
        "nonsense",
    ),
    ("unknown-metric-in-threshold", ['thresholds=["speed > 3"]'], "thresholds[0]", "speed"),
    (
        "bad-duration",
        ['platform.arrival.stages=[{duration="fast", rate=5}]'],
        "platform.arrival.stages[0].duration",
        "duration",
    ),
    ("negative-duration", ['platform.timeouts.timeout="-3s"'], "platform.timeouts.timeout", "-3s"),
    ("bad-interval", ['campaign.interval="1 parsec"'], "campaign.interval", "duration"),
    ("bad-sides", ['campaign.sides="all"'], "campaign.sides", "all"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "expectation"),
    [pytest.param(o, k, e, id=i) for i, o, k, e in BROKEN],
)
def test_a_broken_scenario_fails_before_any_load(
    overrides: list[str],
    key: str,
    expectation: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = tmp_path / "results"

    code, out, err = run_cli(
        ["run", str(SMOKE), *sets(*overrides), "--results", str(results)], capsys
    )

    assert code == 2
    assert out == ""
    assert err.startswith(f"loadgen run: {SMOKE}: ")
    assert key in err
    assert expectation in err
    assert not results.exists()


def test_a_broken_file_names_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        SMOKE.read_text(encoding="utf-8").replace("count = 50", 'count = "fifty"'),
        encoding="utf-8",
    )
    results = tmp_path / "results"

    code, _, err = run_cli(["run", str(path), "--results", str(results)], capsys)

    assert code == 2
    assert f"{path}: devices.count:" in err
    assert not results.exists()


def test_every_problem_is_listed_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        [
            "run",
            str(SMOKE),
            *sets("devices.colour=3", 'campaign.interval="soon"'),
            "--results",
            str(tmp_path / "r"),
        ],
        capsys,
    )

    assert code == 2
    assert "2 problems" in err
    assert "devices.colour: unknown key" in err
    assert "campaign.interval:" in err


def test_run_refuses_a_missing_environment_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEVICE_API_KEY", raising=False)
    monkeypatch.delenv("OPENGATE_API_KEY", raising=False)
    example = SCENARIOS / "real-platform.example.toml"
    results = tmp_path / "results"

    code, _, err = run_cli(["run", str(example), "--results", str(results)], capsys)

    assert code == 2
    assert err.startswith(f"loadgen run: {example}: devices.")
    assert "environment variable" in err
    assert "is not set" in err
    assert "devices.api_key" in err or "devices.responder.api_key" in err
    assert not results.exists()


def test_run_refuses_a_missing_variable_in_an_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOADGEN_TEST_UNSET_NAME", raising=False)
    results = tmp_path / "results"

    code, _, err = run_cli(
        [
            "run",
            str(SMOKE),
            *sets('campaign.description="${LOADGEN_TEST_UNSET_NAME}"'),
            "--results",
            str(results),
        ],
        capsys,
    )

    assert code == 2
    assert f"{SMOKE}: campaign.description: environment variable LOADGEN_TEST_UNSET_NAME" in err
    assert not results.exists()


def test_validate_reports_the_missing_variable_it_stood_in_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOADGEN_TEST_UNSET_NAME", raising=False)

    code, out, _ = run_cli(
        ["validate", str(SMOKE), *sets('campaign.description="${LOADGEN_TEST_UNSET_NAME}"')],
        capsys,
    )

    assert code == 0
    assert "needs the environment variables LOADGEN_TEST_UNSET_NAME" in out


def test_validate_fails_a_broken_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(SMOKE), *sets("devices.colour=3")], capsys)

    assert code == 2
    assert f"INVALID {SMOKE}: devices.colour: unknown key" in out


def test_a_listener_is_turned_off_by_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TOML has no null: ``"off"`` turns a listener off, in the file as with ``--http-port off``;
    both off is one line naming the key."""
    from loadgen.campaign.scenario import load_scenario

    loaded = load_scenario(SMOKE, overrides=['devices.http_port="off"', "devices.https_port=0"])
    devices = loaded.scenario.devices
    assert devices is not None
    assert (devices.http_port, devices.https_port) == (None, 0)

    code, _, err = run_cli(
        ["run", str(SMOKE), *sets('devices.http_port="OFF"'), "--results", str(tmp_path / "r")],
        capsys,
    )
    assert code == 2
    assert "devices.http_port: both listeners are off" in err
    assert not (tmp_path / "r").exists()
