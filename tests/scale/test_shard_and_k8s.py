import re

import pytest
import yaml

from loadgen.errors import ConfigError
from loadgen.scale.k8s import render_manifest
from loadgen.scale.shard import Shard


@pytest.mark.parametrize(("devices", "count"), [(1000, 1), (1000, 3), (100_000, 7), (5, 8)])
def test_device_ranges_tile_the_fleet_exactly(devices, count):
    ranges = [Shard(i, count).devices(devices) for i in range(count)]
    covered = [d for r in ranges for d in r]
    assert covered == list(range(devices))
    assert max(len(r) for r in ranges) - min(len(r) for r in ranges) <= 1


def test_rate_and_ports():
    shard = Shard(2, 4)
    assert shard.rate(1000.0) == 250.0
    assert shard.port(1123) == 1125
    assert shard.port(0) == 0
    assert shard.port(None) is None


@pytest.mark.parametrize("text", ["3/3", "-1/2", "a/b", "1", "0/0", "1/2/3"])
def test_bad_shard_text(text):
    with pytest.raises(ConfigError, match=r"--shard"):
        Shard.parse(text)


def _expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion in container args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def test_manifest_gives_every_pod_its_shard(tmp_path):
    scenario = tmp_path / "big.toml"
    scenario.write_text('[campaign]\nname = "big"\n')
    text = render_manifest(scenario, shards=5, image="registry.example/loadgen:1")
    config_map, _, job = list(yaml.safe_load_all(text))
    assert config_map["data"]["scenario.toml"] == scenario.read_text()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 5
    container = spec["template"]["spec"]["containers"][0]
    env_names = {e["name"]: e for e in container["env"]}
    assert env_names["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    seen = set()
    for index in range(spec["completions"]):  # what the Job controller gives each pod
        args = [_expand(a, {"SHARD_INDEX": str(index)}) for a in container["args"]]
        shard = Shard.parse(args[args.index("--shard") + 1])
        assert (shard.index, shard.count) == (index, 5)
        assert args[args.index("--directory") + 1].endswith(f"/shard-{index}-of-5")
        seen.add(shard.index)
    assert seen == set(range(5))


def test_manifest_rejects_zero_shards(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text("")
    with pytest.raises(ConfigError, match="--shards"):
        render_manifest(scenario, shards=0, image="x")
