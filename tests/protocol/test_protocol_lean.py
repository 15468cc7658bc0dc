"""The lean decoders of the hot paths against the full codec: the same result on every input of
a table (h11's SIMPLE_CASES style), and garbage never raising anything but ProtocolError (the
request decoder) or nothing at all (the sync-answer decoder, which says None)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.errors import ProtocolError
from loadgen.protocol import decode_request, decode_response
from loadgen.protocol.lean import (
    LeanRequest,
    LeanResponse,
    decode_request_lean,
    decode_response_lean,
)

# --- requests (what a virtual device receives) ------------------------------------------------

REQUEST_CASES: list[Any] = [
    {"operation": {"request": {"id": "a", "timestamp": 1, "name": "N"}}},
    {"operation": {"request": {"id": "a", "timestamp": 1, "name": "N", "parameters": {"x": 1}}}},
    {"operation": {"request": {"id": "a", "timestamp": 1, "name": "N", "deviceId": "sub"}}},
    {"operation": {"request": {"id": "a", "timestamp": 1, "name": "N", "path": ["gw"]}}},
    {
        "operation": {
            "request": {
                "id": "a",
                "timestamp": 1,
                "name": "N",
                "parameters": [{"name": "p", "value": {"string": "v"}}],
            }
        }
    },
    {"operation": {"request": {"id": "a", "timestamp": True, "name": "N"}}},
    {"operation": {"request": {"id": "", "timestamp": 1, "name": "N"}}},
    {"operation": {"request": {"id": "a", "timestamp": 1.5, "name": "N"}}},
    {"operation": {"request": {"id": "a", "timestamp": 1, "name": "N", "deviceId": 3}}},
    {"operation": {"request": {"id": "a", "timestamp": 1, "name": "N", "parameters": 3}}},
    {"operation": {"request": []}},
    {"operation": 1},
    [],
    "text",
]


@pytest.mark.parametrize("obj", REQUEST_CASES)
def test_lean_request_decoder_agrees_with_the_codec(obj: Any) -> None:
    body = orjson.dumps(obj)
    try:
        expected = decode_request(body)
    except ProtocolError as exc:
        message = str(exc)
        with pytest.raises(ProtocolError) as caught:
            decode_request_lean(body)
        assert str(caught.value) == message
        return
    got = decode_request_lean(body)
    for name in ("id", "name", "parameters", "device_id", "path"):
        assert getattr(got, name) == getattr(expected, name), name


def test_the_common_request_shape_takes_the_lean_record() -> None:
    got = decode_request_lean(orjson.dumps(REQUEST_CASES[1]))
    assert type(got) is LeanRequest
    assert (got.id, got.timestamp, got.name, got.parameters) == ("a", 1, "N", {"x": 1})


def test_a_request_that_is_not_json_names_the_body() -> None:
    with pytest.raises(ProtocolError, match="body: expected a JSON document"):
        decode_request_lean(b"{")


# --- sync answers (what the platform reads in a device's HTTP answer) -------------------------


def _answer(**fields: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"id": "op", "timestamp": 1, "deviceId": "d", "name": "N"}
    response.update(fields)
    return {"version": "1.0", "operation": {"response": response}}


STEP = {"name": "S", "timestamp": 1, "result": "SUCCESSFUL"}

# (case id, answer, expected (result_code, steps, id, name, device_id) or None = not a response)
ANSWER_CASES: list[tuple[str, Any, tuple[Any, ...] | None]] = [
    ("final", _answer(resultCode="SUCCESSFUL", steps=[STEP]), ("SUCCESSFUL", [STEP], "op", "N", "d")),
    ("partial", _answer(steps=[STEP]), (None, [STEP], "op", "N", "d")),
    ("no steps", _answer(resultCode="NOT_SUPPORTED"), ("NOT_SUPPORTED", [], "op", "N", "d")),
    ("null steps", _answer(resultCode="SUCCESSFUL", steps=None), ("SUCCESSFUL", [], "op", "N", "d")),
    ("platform code", _answer(resultCode="ERROR_TIMEOUT"), ("ERROR_TIMEOUT", [], "op", "N", "d")),
    ("no id", {"operation": {"response": {"resultCode": "SUCCESSFUL"}}},
     ("SUCCESSFUL", [], None, None, None)),
    ("id not a string", _answer(id=5, resultCode="SUCCESSFUL"), ("SUCCESSFUL", [], 5, "N", "d")),
    ("unknown code", _answer(resultCode="GREAT"), None),
    ("code not a string", _answer(resultCode=["SUCCESSFUL"]), None),
    ("code an object", _answer(resultCode={"a": 1}), None),
    ("steps not an array", _answer(resultCode="SUCCESSFUL", steps={"a": 1}), None),
    ("no response", {"operation": {}}, None),
    ("response not an object", {"operation": {"response": [1]}}, None),
    ("operation a string", {"operation": "x"}, None),
    ("an array", [1, 2], None),
    ("a number", 5, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "answer", "expected"), ANSWER_CASES, ids=[case[0] for case in ANSWER_CASES]
)
def test_sync_answers(what: str, answer: Any, expected: tuple[Any, ...] | None) -> None:
    got = decode_response_lean(orjson.dumps(answer))
    if expected is None:
        assert got is None
        return
    assert isinstance(got, LeanResponse)
    assert (got.result_code, got.steps, got.id, got.name, got.device_id) == expected


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"null", b'"operation"'])
def test_sync_answers_that_are_not_json_or_not_objects(body: bytes) -> None:
    assert decode_response_lean(body) is None


@pytest.mark.parametrize(
    "answer",
    [case[1] for case in ANSWER_CASES if case[2] is not None and case[1].get("version")],
)
def test_lean_answer_agrees_with_the_codec_where_both_accept(answer: Any) -> None:
    body = orjson.dumps(answer)
    try:
        full = decode_response(body)
    except ProtocolError:
        return  # the lean reader is more liberal (it does not check what it only carries)
    lean = decode_response_lean(body)
    assert lean is not None
    assert lean.result_code == (None if full.result_code is None else full.result_code.value)
    assert (lean.id, lean.name, lean.device_id) == (full.id, full.name, full.device_id)
    assert len(lean.steps) == len(full.steps)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["operation", "response", "resultCode", "steps", "id"])
                      | st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(deadline=None, max_examples=300)
@given(json_values)
def test_any_json_answer_gives_a_response_or_none(value: Any) -> None:
    got = decode_response_lean(orjson.dumps(value))
    assert got is None or isinstance(got, LeanResponse)


@settings(deadline=None, max_examples=300)
@given(
    st.sampled_from(["SUCCESSFUL", None]) | json_values.filter(lambda v: not isinstance(v, str)),
)
def test_any_result_code_value_is_handled(code: Any) -> None:
    got = decode_response_lean(orjson.dumps(_answer(resultCode=code)))
    assert (got is not None) == (code in ("SUCCESSFUL", None))
