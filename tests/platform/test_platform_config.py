"""Configuration: validation with key paths (through the scenario loader, as files and flags
are), the targets file (CSV and JSON lines) and its error messages naming the file and line, and
the command line's translation into a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadgen.campaign.scenario import validate_document
from loadgen.cli import build_parser
from loadgen.commands.run import one_sided_scenario
from loadgen.commands.tables import PLATFORM_FLAGS, RUN_FLAGS
from loadgen.errors import ConfigError
from loadgen.platform.config import (
    Arrival,
    MixEntry,
    PlatformConfig,
    Stage,
    Targets,
    Timeouts,
    load_targets_file,
)


def test_targets_from_a_pattern() -> None:
    targets = Targets(
        base_url="https://10.0.0.1:11235", id_pattern="gw-{index}", count=3, first_index=7
    )
    assert targets.resolve() == [
        ("gw-7", "https://10.0.0.1:11235"),
        ("gw-8", "https://10.0.0.1:11235"),
        ("gw-9", "https://10.0.0.1:11235"),
    ]
    assert len(targets) == 3


def test_csv_targets_file(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "device_id,url\n# a comment\n\ndev-a,http://10.0.0.1:1123\n"
        'dev-b, https://10.0.0.2:11235/agent\n"dev,c",http://10.0.0.3:1123\n'
    )
    targets = load_targets_file(path)
    assert targets.resolve() == [
        ("dev-a", "http://10.0.0.1:1123"),
        ("dev-b", "https://10.0.0.2:11235/agent"),
        ("dev,c", "http://10.0.0.3:1123"),
    ]


def test_jsonl_targets_file(tmp_path: Path) -> None:
    path = tmp_path / "devices.jsonl"
    path.write_text(
        '{"device_id": "a", "url": "http://h:1"}\n\n{"deviceId": "b", "url": "http://h:2"}\n'
    )
    assert load_targets_file(path).resolve() == [("a", "http://h:1"), ("b", "http://h:2")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.csv", "dev-a,http://h:1\ndev-b\n", "t.csv:2: expected 2 columns (device id, URL), got 1"),
        ("t.csv", "dev-a,http://h:1\ndev-b,ftp://h\n", "t.csv:2: url: expected an http:// or https:// URL"),
        ("t.csv", "dev-a,http://h:1\n\ndev-a,http://h:2\n", "t.csv:3: device id 'dev-a' already listed on line 1"),
        ("t.csv", "dev-a,http://h:99999\n", "t.csv:1: url: bad port in URL"),
        ("t.csv", ",http://h:1\n", "t.csv:1: expected a device id"),
        ("t.jsonl", '{"device_id": "a", "url": "http://h:1"}\n{"device_id": "b"\n', "t.jsonl:2: expected a JSON object per line"),
        ("t.jsonl", '{"device_id": "a"}\n', "t.jsonl:1: expected a URL after the device id"),
        ("t.jsonl", '["a", "http://h:1"]\n', "t.jsonl:1: expected a JSON object like"),
        ("t.csv", "# only a comment\n", "t.csv: no targets in the file"),
    ],
)  # fmt: skip
def test_targets_file_errors_name_the_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_targets_file(path)
    assert str(caught.value).startswith(
        str(tmp_path / message.split(":")[0]) + message[len(name) :]
    )


def test_missing_targets_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the targets file"):
        load_targets_file(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("data", "key", "text"),
    [
        ({"arrival": {"stages": [{"duration": 1, "rate": 1}, {"duration": 2, "rate": -5}]}},
         "arrival.stages[1].rate", "expected a finite number >= 0, got -5"),
        ({"arrival": {"stages": [{"duration": 0, "rate": 1}]}},
         "arrival.stages[0].duration", "> 0"),
        ({"arrival": {"model": "bursty"}}, "arrival.model", "'open', 'poisson' or 'closed', got 'bursty'"),
        ({"arrival": {"stages": []}}, "arrival.stages", "at least one stage"),
        ({"mix": [{"name": "UPDATE", "timeouts": {"retries": -1}}]}, "mix[0].timeouts.retries", ">= 0"),
        ({"mix": [{"name": "UPDATE", "weight": 0}]}, "mix", "weight > 0"),
        ({"timeouts": {"retry_result_list": ["NOPE"]}}, "timeouts.retry_result_list[0]",
         "expected one of SUCCESSFUL"),
        ({"targets": {"id_pattern": "dev"}}, "targets.id_pattern", "its own id"),
        ({"targets": {"id_pattern": "{nope}"}}, "targets.id_pattern", "one field, positional"),
        ({"targets": {"base_url": "localhost:1123"}}, "targets.base_url", "http:// or https://"),
        ({"targets": {"bogus": 1}}, "targets.bogus", "unknown key"),
        ({"south": {"port": 70000}}, "south.port", "0..65535"),
        ({"device_choice": "random"}, "device_choice", "'uniform', 'round-robin' or 'zipf', got 'random'"),
        ({"base_path": "south/"}, "base_path", "must start with '/'"),
        ({"sleepy_share": 2}, "sleepy_share", "[0, 1]"),
        ({"max_queued": 0}, "max_queued", "expected >= 1, got 0"),
        ({"max_queued": "many"}, "max_queued", "valid integer"),
        ({"mix": [{"name": "REBOT_EQUIPMENT"}]}, "mix[0].name",
         "unknown operation 'REBOT_EQUIPMENT'; did you mean REBOOT_EQUIPMENT?"),
        ({"mix": [{"name": "MY_OWN"}]}, "mix[0].name", "a custom operation needs custom = true"),
    ],
)  # fmt: skip
def test_config_errors_carry_the_key_path(data: dict[str, object], key: str, text: str) -> None:
    document = {"campaign": {"name": "x", "sides": "platform"}, "platform": data}
    with pytest.raises(ConfigError) as caught:
        validate_document(document, "scenario.toml")
    assert caught.value.key == f"platform.{key}"
    assert text in str(caught.value)
    assert str(caught.value).startswith(f"scenario.toml: platform.{key}: ")


def test_a_custom_operation_is_declared() -> None:
    document = {
        "campaign": {"name": "x", "sides": "platform"},
        "platform": {"mix": [{"name": "MY_OWN", "custom": True}]},
    }
    scenario = validate_document(document, "scenario.toml")
    assert scenario.platform is not None
    assert scenario.platform.mix[0].name == "MY_OWN"


def test_defaults_and_grace() -> None:
    config = PlatformConfig()
    assert config.grace == 30.0
    assert PlatformConfig(timeouts=Timeouts(timeout=5)).grace == 5
    assert PlatformConfig(drain_grace=0).grace == 0
    slow = MixEntry(name="UPDATE", timeouts=Timeouts(timeout=20))
    assert PlatformConfig(mix=(slow,), timeouts=Timeouts(timeout=5)).grace == 20
    assert Arrival(stages=(Stage(duration=1, rate=1), Stage(duration=2.5, rate=3))).duration == 3.5


def _config(argv: list[str]) -> Any:
    args = build_parser().parse_args(argv)
    return one_sided_scenario(
        args, "platform", (*PLATFORM_FLAGS, *RUN_FLAGS), "test"
    ).scenario.platform


def test_command_line_to_config(tmp_path: Path) -> None:
    config = _config(
        [
            "platform", "--url", "https://dev:11235", "--devices", "50", "--stage", "10:100",
            "--stage", "20:500:ramp", "--op", "REBOOT_EQUIPMENT:3", "--op", "UPDATE:1",
            "--params", 'UPDATE={"bundleName": "b"}', "--retry-on", "ERROR_PROCESSING",
            "--retries", "2", "--insecure", "--new-connection", "--api-key", "k",
            "--device-choice", "zipf", "--model", "poisson", "--seed", "9",
        ]
    )  # fmt: skip
    assert config.targets.count == 50
    assert config.targets.base_url == "https://dev:11235"
    assert config.arrival.stages == (
        Stage(duration=10, rate=100),
        Stage(duration=20, rate=500, ramp=True),
    )
    assert config.arrival.model == "poisson"
    assert [(e.name, e.weight, e.parameters) for e in config.mix] == [
        ("REBOOT_EQUIPMENT", 3.0, None),
        ("UPDATE", 1.0, {"bundleName": "b"}),
    ]
    assert config.timeouts.retry_result_list == ("ERROR_PROCESSING",)
    assert not config.verify
    assert not config.keep_alive
    assert config.api_key == "k"
    with pytest.raises(ConfigError, match="--stage"):
        _config(["platform", "--stage", "10:fast"])
    with pytest.raises(ConfigError, match="not in the mix"):
        _config(["platform", "--params", "UPDATE={}"])
    with pytest.raises(
        ConfigError, match=r"^test: --timeout \(platform.timeouts.timeout\): expected"
    ):
        _config(["platform", "--timeout", "-1"])
    assert _config(["platform", "--timeout", "3s"]).timeouts.timeout == 3.0
    assert (
        _config(["platform", "--timeout", "250ms", "--ack-timeout", "2"]).timeouts.ack_timeout
        == 2.0
    )
