"""Hypothesis properties: garbage in raises only ProtocolError; records survive a round trip."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.errors import ProtocolError
from loadgen.protocol import (
    OperationRequest,
    OperationResponse,
    ParametersForm,
    PathTemplate,
    ResultCode,
    Step,
    StepResult,
    VariableResult,
    VariableResultCode,
    decode_iot,
    decode_iot_obj,
    decode_pending,
    decode_pending_obj,
    decode_request,
    decode_request_obj,
    decode_response,
    decode_response_obj,
    encode_pending,
    encode_request,
    encode_response,
    query_api_key,
    request_envelope,
    response_envelope,
)

PROFILE = settings(deadline=None, max_examples=200)

DECODERS: list[Callable[[Any], Any]] = [decode_request, decode_response, decode_pending, decode_iot]
OBJ_DECODERS: list[Callable[[Any], Any]] = [
    decode_request_obj,
    decode_response_obj,
    decode_pending_obj,
    decode_iot_obj,
]

# --- strategies -------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Values the older typed-array parameter form can carry (it has no type for null).
typed_values = json_values.filter(lambda v: v is not None)

names = st.text(min_size=1, max_size=12)
timestamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)
optional_text = st.none() | st.text(max_size=12)
paths = st.none() | st.lists(st.text(max_size=6), max_size=3).map(tuple)


@st.composite
def requests(draw: st.DrawFn) -> OperationRequest:
    form: ParametersForm = "array" if draw(st.booleans()) else "object"
    values = json_values if form == "object" else typed_values
    return OperationRequest(
        id=draw(names),
        timestamp=draw(timestamps),
        name=draw(names),
        parameters=draw(
            st.dictionaries(st.text(max_size=8, min_size=form == "array"), values, max_size=5)
        ),
        parameters_form=form,
        device_id=draw(optional_text),
        path=draw(paths),
    )


variables = st.builds(
    VariableResult,
    variable_name=names,
    variable_value=json_values,
    result_code=st.sampled_from(VariableResultCode),
    result_description=optional_text,
)

steps = st.builds(
    Step,
    name=names,
    timestamp=timestamps,
    result=st.sampled_from(StepResult),
    description=optional_text,
    response=st.none() | st.lists(variables, max_size=3).map(tuple),
)


@st.composite
def responses(draw: st.DrawFn) -> OperationResponse:
    code = draw(st.none() | st.sampled_from(ResultCode))
    return OperationResponse(
        id=draw(names),
        timestamp=draw(timestamps),
        device_id=draw(optional_text),
        name=draw(names),
        result_code=code,
        result_description=None if code is None else draw(optional_text),
        steps=tuple(draw(st.lists(steps, max_size=4))),
        path=draw(paths),
        version=draw(st.text(max_size=6)),
    )


def iot_payloads() -> st.SearchStrategy[dict[str, Any]]:
    point = st.fixed_dictionaries({"at": timestamps, "value": json_values})
    stream = st.fixed_dictionaries(
        {"id": names, "datapoints": st.lists(point, max_size=3)},
        optional={"feed": st.text(max_size=6)},
    )
    return st.fixed_dictionaries(
        {"datastreams": st.lists(stream, max_size=3)},
        optional={"version": st.text(max_size=6), "device": st.text(max_size=6)},
    )


valid_documents = st.one_of(
    requests().map(request_envelope),
    responses().map(response_envelope),
    st.lists(requests().map(request_envelope), max_size=3),
    iot_payloads(),
)


def _decode_all(data: Any, decoders: list[Callable[[Any], Any]]) -> None:
    for decode in decoders:
        with contextlib.suppress(ProtocolError):
            decode(data)


# --- garbage raises only ProtocolError --------------------------------------------------------


@PROFILE
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_all(data, DECODERS)


@PROFILE
@given(st.text(max_size=200))
def test_arbitrary_text(data: str) -> None:
    _decode_all(data, DECODERS)


@PROFILE
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    _decode_all(value, OBJ_DECODERS)
    _decode_all(orjson.dumps(value), DECODERS)


def _locations(obj: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _locations(value, (*at, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _locations(value, (*at, index))


def _mutate(obj: Any, at: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not at:
        return new
    out = copy.deepcopy(obj)
    parent = out
    for key in at[:-1]:
        parent = parent[key]
    if delete:
        del parent[at[-1]]
    else:
        parent[at[-1]] = new
    return out


@PROFILE
@given(valid_documents, st.data())
def test_mutated_envelopes(document: Any, data: st.DataObject) -> None:
    at = data.draw(st.sampled_from(list(_locations(document))), label="location")
    delete = bool(at) and data.draw(st.booleans(), label="delete")
    new = None if delete else data.draw(json_values, label="new value")
    mutated = _mutate(document, at, new, delete)
    _decode_all(mutated, OBJ_DECODERS)
    _decode_all(orjson.dumps(mutated), DECODERS)


# --- round trips ------------------------------------------------------------------------------


@PROFILE
@given(requests())
def test_request_round_trip(req: OperationRequest) -> None:
    assert decode_request(encode_request(req)) == req


@PROFILE
@given(responses())
def test_response_round_trip(resp: OperationResponse) -> None:
    decoded = decode_response(encode_response(resp))
    assert decoded == resp
    assert decoded.is_final == resp.is_final


@PROFILE
@given(st.lists(requests(), max_size=4))
def test_pending_round_trip(reqs: list[OperationRequest]) -> None:
    assert decode_pending(encode_pending(reqs)) == reqs


@PROFILE
@given(iot_payloads())
def test_iot_payloads_are_accepted(payload: dict[str, Any]) -> None:
    assert decode_iot(orjson.dumps(payload)) == payload


# --- paths ------------------------------------------------------------------------------------

TEMPLATE = PathTemplate()


@PROFILE
@given(st.text(min_size=1, max_size=30), st.booleans())
def test_any_device_id_survives_build_then_parse(device_id: str, plural: bool) -> None:
    parsed = TEMPLATE.parse(TEMPLATE.request_path(device_id, plural=plural))
    assert parsed is not None
    assert parsed[0] == device_id


@PROFILE
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_parse_and_api_key_never_raise(target: str | bytes) -> None:
    TEMPLATE.parse(target)
    query_api_key(target)
