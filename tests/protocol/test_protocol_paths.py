"""Request targets: building, parsing (both request spellings, queries, quoting), API key."""

from __future__ import annotations

import pytest

from loadgen.protocol import Endpoint, PathTemplate, query_api_key

T = PathTemplate()
BASE = "/south/v80/devices"


def test_building() -> None:
    assert T.request_path("dev-1") == f"{BASE}/dev-1/operation/request"
    assert T.request_path("dev-1", plural=True) == f"{BASE}/dev-1/operation/requests"
    assert T.response_path("dev-1") == f"{BASE}/dev-1/operation/response"
    assert T.pending_path("dev-1") == f"{BASE}/dev-1/operation/pending"
    assert T.iot_path("dev-1") == f"{BASE}/dev-1/collect/iot"
    assert T.response_path("a/b c%?") == f"{BASE}/a%2Fb%20c%25%3F/operation/response"
    assert T.path(Endpoint.COLLECT_IOT, "d") == T.iot_path("d")


PARSES: list[tuple[str | bytes, tuple[str, Endpoint] | None]] = [
    (f"{BASE}/dev-1/operation/request", ("dev-1", Endpoint.OPERATION_REQUEST)),
    (f"{BASE}/dev-1/operation/requests", ("dev-1", Endpoint.OPERATION_REQUEST)),
    (f"{BASE}/dev-1/operation/response", ("dev-1", Endpoint.OPERATION_RESPONSE)),
    (f"{BASE}/dev-1/operation/pending", ("dev-1", Endpoint.OPERATION_PENDING)),
    (f"{BASE}/dev-1/collect/iot", ("dev-1", Endpoint.COLLECT_IOT)),
    (f"{BASE}/dev-1/operation/response?X-ApiKey=k&x=1", ("dev-1", Endpoint.OPERATION_RESPONSE)),
    (f"{BASE}/dev-1/operation/request?", ("dev-1", Endpoint.OPERATION_REQUEST)),
    (f"{BASE}/a%2Fb%20c%25/operation/request", ("a/b c%", Endpoint.OPERATION_REQUEST)),
    (f"{BASE}/d%C3%A9v/collect/iot", ("dév", Endpoint.COLLECT_IOT)),
    (f"{BASE}/dev-1/operation/pending".encode(), ("dev-1", Endpoint.OPERATION_PENDING)),
    (b"/south/v80/devices/x/collect/iot?a=\xff", ("x", Endpoint.COLLECT_IOT)),
    # unknown targets
    ("/", None),
    ("", None),
    (BASE, None),
    (f"{BASE}/", None),
    (f"{BASE}/dev-1", None),
    (f"{BASE}/dev-1/", None),
    (f"{BASE}//operation/request", None),
    (f"{BASE}/dev-1/operation", None),
    (f"{BASE}/dev-1/operation/request/", None),
    (f"{BASE}/dev-1/operation/requestx", None),
    (f"{BASE}/dev-1/operation/other", None),
    (f"{BASE}/dev-1/collect/iot/extra", None),
    (f"{BASE}/a/b/operation/request", None),
    (f"{BASE}x/dev-1/operation/request", None),
    ("/south/v81/devices/dev-1/operation/request", None),
    ("/prefix/south/v80/devices/dev-1/operation/request", None),
    (f"?{BASE}/dev-1/operation/request", None),
]


@pytest.mark.parametrize(("target", "expected"), PARSES)
def test_parse(target: str | bytes, expected: tuple[str, Endpoint] | None) -> None:
    assert T.parse(target) == expected


@pytest.mark.parametrize("device_id", ["dev-1", "a/b", "é ü", "%41", "?#&=", "x" * 100])
def test_build_then_parse(device_id: str) -> None:
    assert T.parse(T.request_path(device_id, plural=True)) == (
        device_id,
        Endpoint.OPERATION_REQUEST,
    )
    assert T.parse(T.response_path(device_id)) == (device_id, Endpoint.OPERATION_RESPONSE)
    assert T.parse(T.pending_path(device_id) + "?X-ApiKey=k") == (
        device_id,
        Endpoint.OPERATION_PENDING,
    )
    assert T.parse(T.iot_path(device_id).encode()) == (device_id, Endpoint.COLLECT_IOT)


def test_custom_base_path() -> None:
    custom = PathTemplate("/api/devs")
    assert custom.request_path("d") == "/api/devs/d/operation/request"
    assert custom.parse("/api/devs/d/operation/requests") == ("d", Endpoint.OPERATION_REQUEST)
    assert custom.parse(f"{BASE}/d/operation/request") is None
    assert PathTemplate(base_path="/x").parse("/x/d/collect/iot") == ("d", Endpoint.COLLECT_IOT)
    assert custom == PathTemplate("/api/devs")
    assert repr(custom) == "PathTemplate(base_path='/api/devs')"


@pytest.mark.parametrize("base", ["", "/", "south/v80", "/south/v80/", "/a?b", "/a#b"])
def test_bad_base_path(base: str) -> None:
    with pytest.raises(ValueError, match="base_path"):
        PathTemplate(base)


API_KEYS: list[tuple[str | bytes, str | None]] = [
    ("/p?X-ApiKey=abc", "abc"),
    ("/p?a=1&X-ApiKey=abc&b=2", "abc"),
    ("/p?x-apikey=abc", "abc"),
    ("/p?X-ApiKey=a%2Bb+c", "a+b c"),
    ("/p?X%2DApiKey=abc", "abc"),
    ("/p?X-ApiKey=first&X-ApiKey=second", "first"),
    ("/p?X-ApiKey=", ""),
    ("/p?X-ApiKey", ""),
    (b"/p?X-ApiKey=abc", "abc"),
    ("/p", None),
    ("/p?", None),
    ("/p?ApiKey=abc", None),
    ("/p?X-ApiKeys=abc", None),
]


@pytest.mark.parametrize(("target", "expected"), API_KEYS)
def test_query_api_key(target: str | bytes, expected: str | None) -> None:
    assert query_api_key(target) == expected
