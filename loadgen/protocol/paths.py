"""Request targets of the South API (PROTOCOL.md §1): building them and recognising them.

Both simulated sides route by path: the virtual device serves ``.../operation/request`` (and
the plural spelling a real device agent uses), the platform serves ``.../operation/response``,
``.../operation/pending`` and ``.../collect/iot``. The base path (``/south/v80/devices`` by
default) is configurable on both sides, so it lives in one small ``PathTemplate``.

``PathTemplate.parse`` runs once per incoming request, so it is a prefix check, two
``partition`` calls and a dict lookup; ``unquote`` runs only when the device id has a ``%``.
Device ids are quoted with ``quote(safe="")`` when building, so an id never holds a raw ``/``
and the first ``/`` after the base path ends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final
from urllib.parse import quote, unquote, unquote_plus

#: The base path of the South API devices resource.
DEFAULT_BASE_PATH: Final = "/south/v80/devices"

#: The query parameter that may carry the API key instead of the ``X-ApiKey`` header.
API_KEY_PARAMETER: Final = "X-ApiKey"
_API_KEY_LOWER = API_KEY_PARAMETER.lower()


class Endpoint(Enum):
    """The four resources of PROTOCOL.md §1."""

    OPERATION_REQUEST = "operation/request"
    OPERATION_RESPONSE = "operation/response"
    OPERATION_PENDING = "operation/pending"
    COLLECT_IOT = "collect/iot"


# The part after "{base}/{deviceId}/" -> endpoint; both spellings of the request resource.
_TAILS: Final[dict[str, Endpoint]] = {
    "operation/request": Endpoint.OPERATION_REQUEST,
    "operation/requests": Endpoint.OPERATION_REQUEST,
    "operation/response": Endpoint.OPERATION_RESPONSE,
    "operation/pending": Endpoint.OPERATION_PENDING,
    "collect/iot": Endpoint.COLLECT_IOT,
}


def _text(target: str | bytes) -> str:
    # A request target is ASCII on the wire; latin-1 never fails, so odd bytes just don't match.
    return target.decode("latin-1") if isinstance(target, bytes) else target


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """Builds and parses ``{base_path}/{deviceId}/...`` request targets.

    ``base_path`` must start with ``/`` and must not end with one (``ValueError`` otherwise).
    """

    base_path: str = DEFAULT_BASE_PATH
    _prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = self.base_path
        if not isinstance(base, str) or not base.startswith("/") or base.endswith("/"):
            raise ValueError(
                f"base_path must start with '/' and not end with '/', got {base!r} "
                f"(for example {DEFAULT_BASE_PATH!r})"
            )
        if "?" in base or "#" in base:
            raise ValueError(f"base_path must be a plain path without '?' or '#', got {base!r}")
        object.__setattr__(self, "_prefix", base + "/")

    # --- building ----------------------------------------------------------------------------

    def device_path(self, device_id: str) -> str:
        """``{base}/{quoted deviceId}``, the root of one device's resources."""
        return self._prefix + quote(device_id, safe="")

    def request_path(self, device_id: str, *, plural: bool = False) -> str:
        """Direction 1 (served by the device); ``plural`` gives ``.../operation/requests``."""
        tail = "/operation/requests" if plural else "/operation/request"
        return self.device_path(device_id) + tail

    def response_path(self, device_id: str) -> str:
        """Direction 2 (served by the platform)."""
        return self.device_path(device_id) + "/operation/response"

    def pending_path(self, device_id: str) -> str:
        """Direction 3 (served by the platform)."""
        return self.device_path(device_id) + "/operation/pending"

    def iot_path(self, device_id: str) -> str:
        """Direction 4 (served by the platform)."""
        return self.device_path(device_id) + "/collect/iot"

    def path(self, endpoint: Endpoint, device_id: str) -> str:
        """The path of ``endpoint`` for ``device_id`` (the singular request spelling)."""
        return self.device_path(device_id) + "/" + endpoint.value

    # --- recognising -------------------------------------------------------------------------

    def parse(self, target: str | bytes) -> tuple[str, Endpoint] | None:
        """``(deviceId, endpoint)`` for a known request target, else ``None``.

        ``target`` is the request target as received (``bytes`` are read as latin-1), possibly
        with a ``?query``; the device id comes back unquoted.
        """
        text = _text(target)
        if "?" in text:
            text = text.partition("?")[0]
        prefix = self._prefix
        if not text.startswith(prefix):
            return None
        device_id, slash, tail = text[len(prefix) :].partition("/")
        if not slash or not device_id:
            return None
        endpoint = _TAILS.get(tail)
        if endpoint is None:
            return None
        if "%" in device_id:
            device_id = unquote(device_id)
        return device_id, endpoint


def query_api_key(target: str | bytes) -> str | None:
    """The value of the ``X-ApiKey`` query parameter of ``target``, or ``None``.

    The parameter name is matched case-insensitively (header names are, and clients mix the
    two); the first occurrence wins; ``%xx`` and ``+`` in the value are decoded.
    """
    text = _text(target)
    query = text.partition("?")[2]
    if not query:
        return None
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if "%" in name:
            name = unquote_plus(name)
        if name.lower() == _API_KEY_LOWER:
            if "%" in value or "+" in value:
                value = unquote_plus(value)
            return value
    return None
