"""The south API's lenient reading of a response (``decode_response_lenient``): a table of what
it accepts and names (the oddities real agents send) and of what it refuses, with the cause
``refusal_cause`` gives; then differential properties against the strict decoder."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.errors import ProtocolError
from loadgen.protocol import (
    ODDITIES,
    REFUSAL_CAUSES,
    OperationResponse,
    ResultCode,
    Step,
    StepResult,
    decode_response,
    decode_response_lenient,
    encode_response,
    refusal_cause,
)

DROP: Any = object()
STEP: dict[str, Any] = {"name": "S", "timestamp": 1, "result": "SUCCESSFUL"}


def envelope(envelope_keys: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A final response; ``fields`` replace (or with DROP remove) its keys, ``envelope_keys``
    are added beside ``version`` and ``operation``."""
    response: dict[str, Any] = {
        "id": "op",
        "timestamp": 5,
        "deviceId": "d",
        "name": "N",
        "resultCode": "SUCCESSFUL",
        "steps": [STEP],
    }
    response.update(fields)
    out: dict[str, Any] = {
        "version": "1.0",
        "operation": {"response": {k: v for k, v in response.items() if v is not DROP}},
    }
    out.update(envelope_keys or {})
    return out


# (case, message, the oddities named, the response timestamp, the steps' timestamps)
ACCEPTED: list[tuple[str, Any, tuple[str, ...], int | None, list[int | None]]] = [
    ("clean", envelope(), (), 5, [1]),
    ("no timestamp", envelope(timestamp=DROP), ("no_timestamp",), None, [1]),
    ("null timestamp", envelope(timestamp=None), ("no_timestamp",), None, [1]),
    ("step null timestamp", envelope(steps=[{**STEP, "timestamp": None}]),
     ("step_no_timestamp",), 5, [None]),
    ("step without timestamp", envelope(steps=[{"name": "S", "result": "ERROR"}]),
     ("step_no_timestamp",), 5, [None]),
    ("named once per message", envelope(steps=[{**STEP, "timestamp": None}] * 3),
     ("step_no_timestamp",), 5, [None, None, None]),
    ("unknown response key", envelope(agentVersion="2.1"), ("unknown_field",), 5, [1]),
    ("unknown envelope key", envelope({"source": "gw"}), ("unknown_field",), 5, [1]),
    ("unknown step key", envelope(steps=[{**STEP, "progress": 50}]), ("unknown_field",), 5, [1]),
    ("unknown variable key", envelope(steps=[{**STEP, "response": [
        {"variableName": "v", "resultCode": "SUCCESS", "unit": "C"}]}]),
     ("unknown_field",), 5, [1]),
    ("all three", envelope(timestamp=DROP, agentVersion=1, steps=[{**STEP, "timestamp": None}]),
     ("unknown_field", "no_timestamp", "step_no_timestamp"), None, [None]),
    ("partial without timestamp", envelope(timestamp=DROP, resultCode=DROP),
     ("no_timestamp",), None, [1]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "message", "oddities", "timestamp", "step_timestamps"),
    ACCEPTED,
    ids=[case[0] for case in ACCEPTED],
)
def test_accepted_and_named(
    what: str,
    message: Any,
    oddities: tuple[str, ...],
    timestamp: int | None,
    step_timestamps: list[int | None],
) -> None:
    response, odd = decode_response_lenient(orjson.dumps(message))
    assert sorted(odd) == sorted(oddities)
    assert set(odd) <= set(ODDITIES)
    assert (response.id, response.name, response.device_id) == ("op", "N", "d")
    assert response.timestamp == timestamp
    assert [step.timestamp for step in response.steps] == step_timestamps


# (case, body, cause, the field path the message names)
REFUSED: list[tuple[str, bytes, str, str]] = [
    ("not JSON", b"{not json", "not_json", "body: expected a JSON document"),
    ("empty body", b"", "not_json", "body: expected a JSON document"),
    ("an array", b"[]", "no_response", "body: expected an object"),
    ("no operation", orjson.dumps({"version": "1.0"}), "no_response", "operation:"),
    ("no response", orjson.dumps({"operation": {}}), "no_response", "operation.response:"),
    ("a request", orjson.dumps({"operation": {"request": {"id": "x"}}}), "no_response",
     "operation.response:"),
    ("response not an object", orjson.dumps({"operation": {"response": [1]}}), "no_response",
     "operation.response:"),
    ("no id", orjson.dumps(envelope(id=DROP)), "no_id", "operation.response.id:"),
    ("empty id", orjson.dumps(envelope(id="")), "no_id", "operation.response.id:"),
    ("numeric id", orjson.dumps(envelope(id=7)), "no_id", "operation.response.id:"),
    ("unknown resultCode", orjson.dumps(envelope(resultCode="GREAT")), "result_code",
     "operation.response.resultCode: expected one of SUCCESSFUL"),
    ("numeric resultCode", orjson.dumps(envelope(resultCode=0)), "result_code",
     "operation.response.resultCode:"),
    ("step result unknown", orjson.dumps(envelope(steps=[{**STEP, "result": "OK"}])), "invalid",
     "operation.response.steps[0].result:"),
    ("timestamp a string", orjson.dumps(envelope(timestamp="5")), "invalid",
     "operation.response.timestamp:"),
    ("step timestamp a float", orjson.dumps(envelope(steps=[STEP, {**STEP, "timestamp": 1.5}])),
     "invalid", "operation.response.steps[1].timestamp:"),
    ("steps not an array", orjson.dumps(envelope(steps={"a": 1})), "invalid",
     "operation.response.steps:"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "body", "cause", "text"), REFUSED, ids=[case[0] for case in REFUSED]
)
def test_refused_with_a_cause(what: str, body: bytes, cause: str, text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_response_lenient(body)
    assert refusal_cause(caught.value) == cause
    assert text in str(caught.value)


def test_the_strict_decoder_still_refuses_the_oddities() -> None:
    for _, message, oddities, _, _ in ACCEPTED:
        if "unknown_field" in oddities or not oddities:
            continue  # unknown keys were always ignored by the strict decoder
        with pytest.raises(ProtocolError):
            decode_response(orjson.dumps(message))


def test_a_record_without_timestamps_encodes_without_them() -> None:
    resp = OperationResponse(
        id="op",
        timestamp=None,
        name="N",
        result_code=ResultCode.SUCCESSFUL,
        steps=(Step(name="S", timestamp=None, result=StepResult.SUCCESSFUL),),
    )
    response = orjson.loads(encode_response(resp))["operation"]["response"]
    assert "timestamp" not in response
    assert "timestamp" not in response["steps"][0]
    again, odd = decode_response_lenient(encode_response(resp))
    assert again == resp
    assert odd == ("no_timestamp", "step_no_timestamp")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(
        st.sampled_from(["operation", "response", "id", "timestamp", "name", "resultCode",
                         "steps", "result", "version"]) | st.text(max_size=4),
        children,
        max_size=5,
    ),
    max_leaves=16,
)  # fmt: skip


@settings(deadline=None, max_examples=400)
@given(json_values)
def test_garbage_is_accepted_or_refused_with_a_known_cause(value: Any) -> None:
    body = orjson.dumps(value)
    try:
        response, odd = decode_response_lenient(body)
    except ProtocolError as exc:
        cause = refusal_cause(exc)
        assert cause in REFUSAL_CAUSES
        return
    assert set(odd) <= set(ODDITIES)
    try:
        strict = decode_response(body)
    except ProtocolError:
        assert odd, "the strict decoder refused what the lenient one accepted without oddity"
        return
    assert strict == response  # where both accept, the same record


RESPONSE_KEYS = {"id", "timestamp", "deviceId", "name", "resultCode", "resultDescription",
                 "steps", "path"}  # fmt: skip


@settings(deadline=None, max_examples=200)
@given(
    st.dictionaries(
        st.text(max_size=6).filter(lambda key: key not in RESPONSE_KEYS),
        st.integers(0, 3),
        max_size=3,
    )
)
def test_any_unknown_key_is_named_once(extra: dict[str, int]) -> None:
    _, odd = decode_response_lenient(orjson.dumps(envelope(None, **extra)))
    assert odd == (("unknown_field",) if extra else ())
