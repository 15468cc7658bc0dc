"""Operation mix, device choice, request bodies and ids: seeded proportions and exact bytes."""

from __future__ import annotations

import collections
import re

import orjson
import pytest

from loadgen.platform.config import MixEntry
from loadgen.platform.mix import BodyTemplate, DeviceChooser, OperationIds, OperationMix
from loadgen.protocol import (
    OPERATION_NAMES,
    OperationRequest,
    decode_request,
    default_parameters,
    request_envelope,
)

N = 100_000


def test_mix_proportions_follow_the_weights_and_the_seed() -> None:
    entries = [
        MixEntry(name="REBOOT_EQUIPMENT", weight=6),
        MixEntry(name="REFRESH_INFO", weight=3),
        MixEntry(name="UPDATE", weight=1),
        MixEntry(name="NEVER", weight=0, custom=True),
    ]
    mix = OperationMix(entries, seed=42, timestamp_ms=0)
    counts = collections.Counter(mix.choose() for _ in range(N))
    assert counts[3] == 0
    for index, share in ((0, 0.6), (1, 0.3), (2, 0.1)):
        assert counts[index] / N == pytest.approx(share, abs=0.01)
    first = OperationMix(entries, seed=1, timestamp_ms=0)
    second = OperationMix(entries, seed=1, timestamp_ms=0)
    assert [first.choose() for _ in range(500)] == [second.choose() for _ in range(500)]


def test_a_single_entry_is_always_chosen() -> None:
    mix = OperationMix([MixEntry(name="REFRESH_INFO")], seed=0, timestamp_ms=0)
    assert {mix.choose() for _ in range(100)} == {0}


def test_uniform_device_choice() -> None:
    chooser = DeviceChooser(10, "uniform", seed=3)
    counts = collections.Counter(chooser.choose() for _ in range(N))
    assert set(counts) == set(range(10))
    assert all(c / N == pytest.approx(0.1, abs=0.01) for c in counts.values())
    a, b = DeviceChooser(10, "uniform", seed=9), DeviceChooser(10, "uniform", seed=9)
    assert [a.choose() for _ in range(200)] == [b.choose() for _ in range(200)]


def test_round_robin_device_choice() -> None:
    chooser = DeviceChooser(3, "round-robin", seed=0)
    assert [chooser.choose() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("s", [1.0, 1.5])
def test_zipf_device_choice(s: float) -> None:
    devices = 50
    chooser = DeviceChooser(devices, "zipf", seed=5, zipf_s=s)
    counts = collections.Counter(chooser.choose() for _ in range(N))
    norm = sum((k + 1) ** -s for k in range(devices))
    for k in (0, 1, 9):
        assert counts[k] / N == pytest.approx((k + 1) ** -s / norm, abs=0.01)
    assert max(counts) < devices


@pytest.mark.parametrize("name", [*OPERATION_NAMES, "CUSTOM_THING"])
def test_body_template_matches_the_codec(name: str) -> None:
    parameters = default_parameters(name, timestamp=1_700_000_000_000)
    template = BodyTemplate(name, parameters)
    body = template.render(b"0b4c6f1e-0000-4000-8000-000000000001", 1_700_000_000_123)
    expected = OperationRequest(
        id="0b4c6f1e-0000-4000-8000-000000000001",
        timestamp=1_700_000_000_123,
        name=name,
        parameters=parameters,
    )
    assert orjson.loads(body) == orjson.loads(orjson.dumps(request_envelope(expected)))
    assert decode_request(body) == expected


def test_body_template_escapes_percent_signs() -> None:
    template = BodyTemplate("CUSTOM", {"text": "100% sure %s %d"})
    body = template.render(b"x-1", 5)
    assert orjson.loads(body)["operation"]["request"]["parameters"] == {"text": "100% sure %s %d"}


def test_catalogue_defaults_are_used_when_no_parameters_are_given() -> None:
    mix = OperationMix(
        [MixEntry(name="REBOOT_EQUIPMENT"), MixEntry(name="X", parameters={"a": 1}, custom=True)],
        seed=0,
        timestamp_ms=0,
    )
    assert mix.templates[0].parameters == {"type": "HARDWARE"}
    assert mix.templates[1].parameters == {"a": 1}


def test_operation_ids_are_uuid_shaped_and_unique() -> None:
    ids = OperationIds()
    made = [ids.next() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    shape = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(shape.fullmatch(i) for i in made)
    assert OperationIds().next()[:24] != ids.next()[:24]  # a fresh prefix per run
