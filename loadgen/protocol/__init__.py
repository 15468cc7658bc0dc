"""The pure OpenGate operations protocol: records, JSON codec, request paths, catalogue.

No networking code at all (no trio, no sockets, no httpx): it takes bytes and returns records,
takes records and returns bytes, so it is tested without a network and shared by both
simulated sides. Decoding raises only ``loadgen.errors.ProtocolError``; ``lean`` holds the
cheaper decoders of the two hot paths (a device's request, a sync answer).
"""

from __future__ import annotations

from loadgen.protocol.catalogue import (
    DEFAULT_VARIABLES,
    EXCLUSIVE_OPERATIONS,
    OPERATION_NAMES,
    UNKNOWN_OPERATION_RESULT,
    default_parameters,
    default_steps,
    is_known,
    update_parameters,
    variable_results,
)
from loadgen.protocol.codec import (
    DEFAULT_VERSION,
    MISSING,
    ODDITIES,
    REFUSAL_CAUSES,
    decode_iot,
    decode_iot_obj,
    decode_pending,
    decode_pending_obj,
    decode_request,
    decode_request_obj,
    decode_response,
    decode_response_lenient,
    decode_response_obj,
    encode_pending,
    encode_request,
    encode_response,
    refusal_cause,
    request_envelope,
    response_envelope,
)
from loadgen.protocol.enums import (
    DEVICE_RESULT_CODES,
    PLATFORM_RESULT_CODES,
    ResultCode,
    StepResult,
    VariableResultCode,
)
from loadgen.protocol.lean import (
    LeanRequest,
    LeanResponse,
    decode_request_lean,
    decode_response_lean,
)
from loadgen.protocol.paths import DEFAULT_BASE_PATH, Endpoint, PathTemplate, query_api_key
from loadgen.protocol.records import (
    OperationRequest,
    OperationResponse,
    ParametersForm,
    Step,
    VariableResult,
)

__all__ = [
    "DEFAULT_BASE_PATH",
    "DEFAULT_VARIABLES",
    "DEFAULT_VERSION",
    "DEVICE_RESULT_CODES",
    "EXCLUSIVE_OPERATIONS",
    "MISSING",
    "ODDITIES",
    "OPERATION_NAMES",
    "PLATFORM_RESULT_CODES",
    "REFUSAL_CAUSES",
    "UNKNOWN_OPERATION_RESULT",
    "Endpoint",
    "LeanRequest",
    "LeanResponse",
    "OperationRequest",
    "OperationResponse",
    "ParametersForm",
    "PathTemplate",
    "ResultCode",
    "Step",
    "StepResult",
    "VariableResult",
    "VariableResultCode",
    "decode_iot",
    "decode_iot_obj",
    "decode_pending",
    "decode_pending_obj",
    "decode_request",
    "decode_request_lean",
    "decode_request_obj",
    "decode_response",
    "decode_response_lean",
    "decode_response_lenient",
    "decode_response_obj",
    "default_parameters",
    "default_steps",
    "encode_pending",
    "encode_request",
    "encode_response",
    "is_known",
    "query_api_key",
    "refusal_cause",
    "request_envelope",
    "response_envelope",
    "update_parameters",
    "variable_results",
]
